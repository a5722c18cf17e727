/**
 * `airlock import`: read the bundle ONCE, verifying every byte while staging it next to the cache,
 * and commit into the hub cache only after the whole stream verified. A failure at any point (bad
 * bundle, full disk, conflict in the cache, Ctrl-C) leaves the cache exactly as it was, and the
 * staging directory is removed on every exit path.
 */
import { readBundle } from '../bundle/reader.js';
import { join } from 'node:path';
import { commitToHfCache } from '../cache/hf-hub.js';
import { commitToModelScopeCache } from '../cache/modelscope.js';
import { commitToPlainDir } from '../cache/plain-dir.js';
import { WeightCheckingSink } from '../integrity/weights.js';
import { createStaging } from '../fs/staging.js';
import type { TrustedKey, TrustPolicy, VerifiedSigner } from '../signing/verify.js';
import { watchInterrupts } from './interrupt.js';
import { openBundle } from './open-bundle.js';
import { BUNDLE_POOL, ReadPool } from '../bundle/read-pool.js';
import { explainReadFailure } from '../bundle/parts.js';
import { StagingSink, type ImportLayout } from './staging-sink.js';
import { summarizeRepos, type RepoSummary } from './summary.js';
import { recordImportEvidence } from './evidence.js';

export interface ImportOptions {
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
  cacheDir: string;
  /** Default hf. */
  layout?: ImportLayout;
  /** Default true: check safetensors headers and shard indexes while the payload streams. */
  weightCheck?: boolean;
  /** Default true: refuse before the payload when it does not fit on the target's file system. */
  spaceCheck?: boolean;
  /** Free bytes at a directory (tests). */
  freeBytes?: (dir: string) => Promise<number>;
  signal?: AbortSignal;
  /** Turn SIGINT/SIGTERM into a clean abort while the import runs (default true). */
  handleSignals?: boolean;
  /** Only these repos are written (`org/name`, `datasets/org/name`, `@revision`); all are verified. */
  repos?: readonly string[] | undefined;
  /** Also compute the whole bundle's SHA-256 (one more hash pass); see ReadBundleOptions. */
  bundleSha256?: boolean;
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
}

export async function importBundle(options: ImportOptions): Promise<ImportResult> {
  const interrupts = watchInterrupts(options.signal, options.handleSignals ?? true);
  const { signal } = interrupts;
  try {
    signal.throwIfAborted();
    const layout = options.layout ?? 'hf';
    // reused read buffers: the reader releases each one once the sink is done with its bytes
    const pool = new ReadPool(BUNDLE_POOL);
    const source = await openBundle(options.bundlePath, { trust: options.trust ?? { keys: options.trustedKeys ?? [] }, allowUnsigned: options.allowUnsigned, pool });
    let staging;
    try {
      // dir: stage under DIR/.cache/huggingface (huggingface_hub's own folder there), never DIR/.locks
      staging = await createStaging(layout === 'dir' ? join(options.cacheDir, '.cache', 'huggingface') : options.cacheDir);
    } catch (error) {
      source.destroy();
      throw error;
    }
    let committed: ImportResult | undefined;
    try {
      const staged = new StagingSink(staging, {
        layout,
        target: options.cacheDir,
        ...(options.spaceCheck === undefined ? {} : { spaceCheck: options.spaceCheck }),
        repos: options.repos,
        ...(options.freeBytes === undefined ? {} : { freeBytes: options.freeBytes }),
      });
      const sink = options.weightCheck === false ? staged : new WeightCheckingSink(staged);
      const verified = await readBundle(source, {
        trust: options.trust ?? { keys: options.trustedKeys ?? [] },
        allowUnsigned: options.allowUnsigned ?? false,
        subject: options.bundlePath,
        sink,
        signal,
        bundleSha256: options.bundleSha256 === true,
        pool,
      }).catch(async (error: unknown) => {
        throw await explainReadFailure(source, error);
      });
      // the whole stream verified and every staged file is durable: only now does anything reach the cache
      await staged.flush();
      const repos = staged.plan(verified.manifest);
      const common = { tempPath: (label: string) => staging.path(label), asideDir: staging.dir, signal };
      const outcomes: Array<{ folder: string; filesWritten: number; filesReused: number; refWritten?: boolean }> =
        layout === 'modelscope'
          ? await commitToModelScopeCache({ cacheDir: options.cacheDir, repos, ...common })
          : layout === 'dir'
            ? await commitToPlainDir({ localDir: options.cacheDir, repos, ...common })
            : await commitToHfCache({ cacheDir: staging.cacheDir, repos, ...common });
      const summaries = summarizeRepos({ ...verified.manifest, repos: staged.selected(verified.manifest) });
      committed = {
        bundlePath: options.bundlePath,
        bundleSha256: verified.bundleSha256,
        bundleBytes: verified.bundleBytes,
        signed: verified.signed,
        signers: verified.signers,
        repos: summaries.map((summary, i) => {
          const outcome = outcomes[i]!;
          return {
            ...summary,
            folder: outcome.folder,
            filesWritten: outcome.filesWritten,
            filesReused: outcome.filesReused,
            refWritten: outcome.refWritten ?? false,
          };
        }),
        files: verified.files,
        bytes: verified.bytes,
        warnings: [],
      };
      // after the commit, outside the cache: what `airlock serve` shows and trusts as "complete"
      if (layout !== 'dir') {
        committed.warnings.push(
          ...(await recordImportEvidence({
            cacheDir: options.cacheDir,
            layout,
            repos: staged.selected(verified.manifest),
            bundlePath: options.bundlePath,
            bundleSha256: verified.bundleSha256,
            bundleBytes: verified.bundleBytes,
            signers: verified.signers,
          })),
        );
      }
    } finally {
      const leftovers = await staging.cleanup();
      committed?.warnings.push(...leftovers.map((failure) => `could not remove staging leftovers: ${failure}`));
    }
    return committed;
  } finally {
    interrupts.dispose();
  }
}
