/**
 * `airlock inspect`: what a bundle says it holds, without keys. Reads only the leading entries and
 * checks that SHA256SUMS and manifest.json agree with each other, but does NOT check the signature:
 * everything it shows is a claim until `verify` (or `import`) checked it against a trusted key. The
 * result says so (`signatureChecked: false`).
 */
import * as openpgp from 'openpgp';
import { AirlockError } from '../errors.js';
import type { Manifest } from '../bundle/manifest.js';
import { SIGNATURE_NAME } from '../bundle/format.js';
import { readBundleHead } from '../bundle/reader.js';
import type { SumsEntry } from '../integrity/sha256sums.js';
import { openBundle } from './open-bundle.js';

export interface InspectResult {
  bundlePath: string;
  manifest: Manifest;
  sums: SumsEntry[];
  signed: boolean;
  /** Always false: inspect never checks the signature. */
  signatureChecked: false;
  /** Key ids (16 uppercase hex) the signature claims to be made by: unverified. */
  signatureKeyIds: string[];
}

async function claimedKeyIds(armoredSignature: string): Promise<string[]> {
  try {
    const signature = await openpgp.readSignature({ armoredSignature });
    // a plain array (openpgp hands out an Array subclass)
    return Array.from(signature.getSigningKeyIDs(), (id) => id.toHex().toUpperCase());
  } catch (cause) {
    throw new AirlockError('E_SIGNATURE_INVALID', `${SIGNATURE_NAME} is not an OpenPGP signature: ${(cause as Error).message}`, {
      subject: SIGNATURE_NAME,
      hint: 'the bundle was damaged or tampered with; ask for a fresh copy',
      cause,
    });
  }
}

export async function inspectBundle(bundlePath: string): Promise<InspectResult> {
  const head = await readBundleHead(await openBundle(bundlePath), bundlePath);
  return {
    bundlePath,
    manifest: head.manifest,
    sums: head.sums,
    signed: head.signature !== undefined,
    signatureChecked: false,
    signatureKeyIds: head.signature === undefined ? [] : await claimedKeyIds(head.signature),
  };
}
