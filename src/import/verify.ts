/** `airlock verify`: every check `import` makes, in the same single pass, writing nothing anywhere. */
import { discardSink, readBundle } from '../bundle/reader.js';
import type { TrustedKey, VerifiedSigner } from '../signing/verify.js';
import { openBundle } from './open-bundle.js';
import { summarizeRepos, type RepoSummary } from './summary.js';

export interface VerifyOptions {
  bundlePath: string;
  trustedKeys: readonly TrustedKey[];
  allowUnsigned?: boolean;
  signal?: AbortSignal;
}

export interface VerifyResult {
  bundlePath: string;
  bundleSha256: string;
  bundleBytes: number;
  signed: boolean;
  /** Empty when an unsigned bundle was accepted with allowUnsigned. */
  signers: VerifiedSigner[];
  repos: RepoSummary[];
  /** Payload files verified. */
  files: number;
  /** Payload bytes verified. */
  bytes: number;
}

export async function verifyBundle(options: VerifyOptions): Promise<VerifyResult> {
  const source = await openBundle(options.bundlePath);
  const verified = await readBundle(source, {
    trustedKeys: options.trustedKeys,
    allowUnsigned: options.allowUnsigned ?? false,
    subject: options.bundlePath,
    sink: discardSink,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  });
  return {
    bundlePath: options.bundlePath,
    bundleSha256: verified.bundleSha256,
    bundleBytes: verified.bundleBytes,
    signed: verified.signed,
    signers: verified.signers,
    repos: summarizeRepos(verified.manifest),
    files: verified.files,
    bytes: verified.bytes,
  };
}
