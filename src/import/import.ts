/**
 * `airlock import`: read the bundle ONCE, verifying every byte while staging it next to the cache,
 * and commit into the hub cache only after the whole stream verified. A failure at any point (bad
 * bundle, full disk, conflict in the cache, Ctrl-C) leaves the cache exactly as it was, and the
 * staging directory is removed on every exit path.
 */
import type { Readable } from 'node:stream';
import { readBundle } from '../bundle/reader.js';
import { AirlockError } from '../errors.js';
import type { ContentPolicy } from '../content/index.js';
import type { ContentOutcome } from './summary.js';
import type { TrustedKey, TrustPolicy, VerifiedSigner } from '../signing/verify.js';
import { watchInterrupts } from './interrupt.js';
import { openBundle } from './open-bundle.js';
import { BUNDLE_POOL, ReadPool } from '../bundle/read-pool.js';
import { explainReadFailure } from '../bundle/parts.js';
import { unindexedReadOf, type UnindexedRead } from '../bundle/parts-unindexed.js';
import type { ImportLayout } from './staging-sink.js';
import type { RepoSummary } from './summary.js';
import { observeSink, type ReadProgress } from './progress-sink.js';
import type { Manifest } from '../bundle/manifest.js';
import { stageThenCommit } from './commit-path.js';
import { recordImportEvidence } from './evidence.js';

/** Where a bundle goes, once its verified manifest is known (for a default that depends on the bundle). */
export type ChooseTarget = (manifest: Manifest) => { layout: ImportLayout; cacheDir: string };

export interface ImportOptions {
  /** A file, split parts, or `-` (standard input); pipes and FIFOs are read once, as a stream. */
  bundlePath: string;
  /** Shorthand for `trust: { keys: trustedKeys }`. */
  trustedKeys?: readonly TrustedKey[];
  /** Keys, pins and signature count (see signing/verify.ts); takes precedence over `trustedKeys`. */
  trust?: TrustPolicy;
  allowUnsigned?: boolean;
  /**
   * The target root, created when missing (and removed again on failure): the hub cache (layout hf, see
   * resolveHfCacheDir), the modelscope cache root (layout modelscope, resolveModelScopeCacheDir) or the
   * local dir (layout dir).
   */
  cacheDir?: string;
  /** Default hf. */
  layout?: ImportLayout;
  /**
   * Decides layout and target from the verified manifest instead (`cacheDir`/`layout` are then ignored):
   * the bundle is read once, so a default that depends on it can be picked without a second read — which
   * a pipe would not allow.
   */
  chooseTarget?: ChooseTarget;
  /** Default true: check safetensors headers and shard indexes while the payload streams. */
  weightCheck?: boolean;
  /** Default true: refuse before the payload when it does not fit on the target's file system. */
  spaceCheck?: boolean;
  /**
   * What loading the files would execute (pickle globals), analysed while they stream: unsafe or
   * unscannable files are refused unless `allowUnsafe`. Default: the built-in allow-list, refuse.
   */
  contentPolicy?: ContentPolicy;
  /** Default true. Off only for measurements (bench): no verdicts at all. */
  contentCheck?: boolean;
  /** Free bytes at a directory (tests). */
  freeBytes?: (dir: string) => Promise<number>;
  signal?: AbortSignal;
  /** Turn SIGINT/SIGTERM into a clean abort while the import runs (default true). */
  handleSignals?: boolean;
  /** Only these repos are written (`org/name`, `datasets/org/name`, `@revision`); all are verified. */
  repos?: readonly string[] | undefined;
  /** Also compute the whole bundle's SHA-256 (one more hash pass); see ReadBundleOptions. */
  bundleSha256?: boolean;
  /** Told about every payload byte as it is verified and staged (the CLI's progress display). */
  progress?: ReadProgress;
}

export interface ImportedRepo extends RepoSummary {
  /** Absolute path of the repo folder in the cache. */
  folder: string;
  /** Files whose blob this import wrote. */
  filesWritten: number;
  /** Files whose blob was already in the cache, complete and correct (left untouched). */
  filesReused: number;
  /** Whether refs/<revision> was written (false if it already named the commit, or the revision is a commit). */
  refWritten: boolean;
}

export interface ImportResult {
  bundlePath: string;
  /** The layout and target root written (as chosen by `chooseTarget`, or as given). */
  layout: ImportLayout;
  cacheDir: string;
  /** Only when asked for (`bundleSha256: true`). */
  bundleSha256: string | undefined;
  bundleBytes: number;
  signed: boolean;
  signers: VerifiedSigner[];
  repos: ImportedRepo[];
  files: number;
  bytes: number;
  /** Non-fatal problems after a successful commit (e.g. staging could not be fully removed). */
  warnings: string[];
  /** Split volumes read without their parts index (missing or unsigned): verified as one stream. */
  splitWithoutIndex?: UnindexedRead;
  /** Every file's content verdict (undefined when the check was off). */
  content: ContentOutcome | undefined;
}

export async function importBundle(options: ImportOptions): Promise<ImportResult> {
  const interrupts = watchInterrupts(options.signal, options.handleSignals ?? true);
  const { signal } = interrupts;
  try {
    signal.throwIfAborted();
    // reused read buffers: the reader releases each one once the sink is done with its bytes
    const pool = new ReadPool(BUNDLE_POOL);
    const source = await openBundle(options.bundlePath, { trust: options.trust ?? { keys: options.trustedKeys ?? [] }, allowUnsigned: options.allowUnsigned, pool, signal });
    if (options.chooseTarget === undefined && options.cacheDir === undefined) throw new AirlockError('E_INTERNAL', 'importBundle needs cacheDir or chooseTarget');
    let committed: ImportResult;
    try {
      const done = await stageThenCommit(
        {
          target: options.chooseTarget ?? { layout: options.layout ?? 'hf', cacheDir: options.cacheDir! },
          weightCheck: options.weightCheck,
          spaceCheck: options.spaceCheck,
          contentPolicy: options.contentPolicy,
          contentCheck: options.contentCheck,
          repos: options.repos,
          freeBytes: options.freeBytes,
          signal,
        },
        (sink) =>
          readBundle(source, {
            trust: options.trust ?? { keys: options.trustedKeys ?? [] },
            allowUnsigned: options.allowUnsigned ?? false,
            subject: options.bundlePath,
            sink: observeSink(sink, options.progress),
            signal,
            bundleSha256: options.bundleSha256 === true,
            pool,
          }).catch(async (error: unknown) => {
            throw await explainReadFailure(source, error);
          }),
      );
      const verified = done.verified;
      committed = {
        bundlePath: options.bundlePath,
        layout: done.target.layout,
        cacheDir: done.target.cacheDir,
        bundleSha256: verified.bundleSha256,
        bundleBytes: verified.bundleBytes,
        signed: verified.signed,
        signers: verified.signers,
        repos: done.repos,
        files: verified.files,
        bytes: verified.bytes,
        warnings: done.warnings,
        ...withoutIndex(source),
        content: done.content,
      };
      // after the commit, outside the cache: what `airlock serve` shows and trusts as "complete"
      if (done.target.layout !== 'dir') {
        committed.warnings.push(
          ...(await recordImportEvidence({
            cacheDir: done.target.cacheDir,
            layout: done.target.layout,
            repos: done.selected,
            bundlePath: options.bundlePath,
            bundleSha256: verified.bundleSha256,
            bundleBytes: verified.bundleBytes,
            signers: verified.signers,
            content: done.content,
          })),
        );
      }
    } finally {
      source.destroy();
    }
    return committed;
  } finally {
    interrupts.dispose();
  }
}

function withoutIndex(source: Readable): { splitWithoutIndex?: UnindexedRead } {
  const unindexed = unindexedReadOf(source);
  return unindexed === undefined ? {} : { splitWithoutIndex: unindexed };
}
