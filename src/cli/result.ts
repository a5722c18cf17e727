/**
 * One result vocabulary for every command's `--json` (schemas/cli-result.schema.json): the same names
 * for the same things everywhere —
 *   ok        always; true here, false in the error object renderError prints
 *   command   "verify", "keys generate", …
 *   bundle    { path, sha256, bytes, parts } — path is what to hand to verify/import (the first part of
 *             split volumes); parts lists the files actually written/read (null for a single tar)
 *   signers   [{ fingerprint, userIds, verified, … }] — full 40-hex fingerprints, the format
 *             --trusted-fingerprint takes; verified says whether airlock checked the signature
 *   repos     [{ type, id, … }] — always an array
 *   cache     { layout, path } — the cache a command read or wrote
 *   keys      [{ fingerprint, userIds, … }]
 * Fields from before this vocabulary (bundlePath, bundleSha256, bundleBytes, cacheDir, layout, signer,
 * signatureKeyIds, path) stay as deprecated aliases, documented in docs/json-output.md.
 */
import type { VerifiedSigner } from '../signing/verify.js';

export interface BundleJson {
  path: string;
  sha256: string | null;
  bytes: number | null;
  parts: Array<{ path: string; bytes: number }> | null;
}

export interface SignerJson {
  fingerprint: string;
  userIds: readonly string[];
  verified: boolean;
  [more: string]: unknown;
}

export function bundleJson(path: string, sha256: string | undefined | null, bytes: number | undefined | null, parts: BundleJson['parts'] = null): BundleJson {
  return { path, sha256: sha256 ?? null, bytes: bytes ?? null, parts };
}

export function verifiedSigners(signers: readonly VerifiedSigner[]): SignerJson[] {
  return signers.map((s) => ({ ...s, verified: true }));
}

export function uncheckedSigner(fingerprint: string, userIds: readonly string[] = []): SignerJson {
  return { fingerprint, userIds, verified: false };
}
