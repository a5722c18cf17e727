/** `airlock verify`: every check `import` makes, in the same single pass, writing nothing anywhere. */
import { discardSink, readBundle } from '../bundle/reader.js';
import type { TrustedKey, TrustPolicy, VerifiedSigner } from '../signing/verify.js';
import { openBundle } from './open-bundle.js';
import { BUNDLE_POOL, ReadPool } from '../bundle/read-pool.js';
import { explainReadFailure, hashWhole } from '../bundle/parts.js';
import { unindexedReadOf, type UnindexedRead } from '../bundle/parts-unindexed.js';
import { summarizeRepos, type ContentOutcome, type RepoSummary } from './summary.js';
import { DEFAULT_CONTENT_POLICY, refusal, type ContentPolicy } from '../content/index.js';
import { ContentCheckingSink } from './content-sink.js';
import { observeSink, type ReadProgress } from './progress-sink.js';

export interface VerifyOptions {
  bundlePath: string;
  /** Shorthand for `trust: { keys: trustedKeys }`. */
  trustedKeys?: readonly TrustedKey[];
  /** Keys, pins and signature count (see signing/verify.ts); takes precedence over `trustedKeys`. */
  trust?: TrustPolicy;
  allowUnsigned?: boolean;
  signal?: AbortSignal;
  /** Also compute the whole bundle's SHA-256 (one more hash pass); see ReadBundleOptions. */
  bundleSha256?: boolean;
  /** As for import: unsafe or unscannable files fail the verification unless `allowUnsafe`. */
  contentPolicy?: ContentPolicy;
  /** Default true. */
  contentCheck?: boolean;
  /** Told about every payload byte as it is verified (the CLI's progress display). */
  progress?: ReadProgress;
}

export interface VerifyResult {
  bundlePath: string;
  /** Only when asked for (`bundleSha256: true`). */
  bundleSha256: string | undefined;
  bundleBytes: number;
  signed: boolean;
  /** Empty when an unsigned bundle was accepted with allowUnsigned. */
  signers: VerifiedSigner[];
  repos: RepoSummary[];
  /** Payload files verified. */
  files: number;
  /** Payload bytes verified. */
  bytes: number;
  /** Split volumes read without their parts index (missing or unsigned): verified as one stream. */
  splitWithoutIndex?: UnindexedRead;
  /** Every file's content verdict (undefined when the check was off). */
  content: ContentOutcome | undefined;
}

export async function verifyBundle(options: VerifyOptions): Promise<VerifyResult> {
  // reused read buffers: the reader releases each one once the sink is done with its bytes
  const pool = new ReadPool(BUNDLE_POOL);
  const source = await openBundle(options.bundlePath, { trust: options.trust ?? { keys: options.trustedKeys ?? [] }, allowUnsigned: options.allowUnsigned, pool, signal: options.signal });
  const policy = options.contentPolicy ?? DEFAULT_CONTENT_POLICY;
  const checked = options.contentCheck === false ? undefined : new ContentCheckingSink(discardSink, policy.allowGlobals);
  const verified = await readBundle(source, {
    trust: options.trust ?? { keys: options.trustedKeys ?? [] },
    allowUnsigned: options.allowUnsigned ?? false,
    subject: options.bundlePath,
    sink: observeSink(checked ?? discardSink, options.progress),
    bundleSha256: options.bundleSha256 === true,
    pool,
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  }).catch(async (error: unknown) => {
    throw await explainReadFailure(source, error);
  });
  const unindexed = unindexedReadOf(source);
  const refused = checked === undefined ? undefined : refusal(checked.files, policy);
  if (refused !== undefined) throw refused;
  return {
    bundlePath: options.bundlePath,
    bundleSha256: verified.bundleSha256,
    bundleBytes: verified.bundleBytes,
    signed: verified.signed,
    signers: verified.signers,
    repos: summarizeRepos(verified.manifest),
    files: verified.files,
    bytes: verified.bytes,
    ...(unindexed === undefined ? {} : { splitWithoutIndex: unindexed }),
    content: checked === undefined ? undefined : { allowUnsafe: policy.allowUnsafe, allowGlobals: policy.allowGlobals, files: checked.files },
  };
}

/** SHA-256 and size of a file (for the evidence record of a refused bundle); undefined if unreadable. */
export async function hashFile(path: string): Promise<{ sha256: string; bytes: number } | undefined> {
  return hashWhole(path).then(({ sha256, size }) => ({ sha256, bytes: size }), () => undefined);
}
