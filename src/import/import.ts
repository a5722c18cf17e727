/**
 * `airlock import`: read the bundle ONCE, verifying every byte while staging it next to the cache,
 * and commit into the hub cache only after the whole stream verified. A failure at any point (bad
 * bundle, full disk, conflict in the cache, Ctrl-C) leaves the cache exactly as it was, and the
 * staging directory is removed on every exit path.
 */
import { readBundle } from '../bundle/reader.js';
import { commitToHfCache } from '../cache/hf-hub.js';
import { createStaging } from '../fs/staging.js';
import type { TrustedKey, TrustPolicy, VerifiedSigner } from '../signing/verify.js';
import { watchInterrupts } from './interrupt.js';
import { openBundle } from './open-bundle.js';
import { explainReadFailure } from '../bundle/parts.js';
import { StagingSink } from './staging-sink.js';
import { summarizeRepos, type RepoSummary } from './summary.js';

export interface ImportOptions {
  bundlePath: string;
  /** Shorthand for `trust: { keys: trustedKeys }`. */
  trustedKeys?: readonly TrustedKey[];
  /** Keys, pins and signature count (see signing/verify.ts); takes precedence over `trustedKeys`. */
  trust?: TrustPolicy;
  allowUnsigned?: boolean;
  /** The hub cache root (see resolveHfCacheDir). Created when missing (and removed again on failure). */
  cacheDir: string;
  signal?: AbortSignal;
  /** Turn SIGINT/SIGTERM into a clean abort while the import runs (default true). */
  handleSignals?: boolean;
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
  bundleSha256: string;
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
    const source = await openBundle(options.bundlePath, { trust: options.trust ?? { keys: options.trustedKeys ?? [] }, allowUnsigned: options.allowUnsigned });
    let staging;
    try {
      staging = await createStaging(options.cacheDir);
    } catch (error) {
      source.destroy();
      throw error;
    }
    let committed: ImportResult | undefined;
    try {
      const sink = new StagingSink(staging);
      const verified = await readBundle(source, {
        trust: options.trust ?? { keys: options.trustedKeys ?? [] },
        allowUnsigned: options.allowUnsigned ?? false,
        subject: options.bundlePath,
        sink,
        signal,
      }).catch(async (error: unknown) => {
        throw await explainReadFailure(source, error);
      });
      // the whole stream verified: only now does anything reach the cache
      const outcomes = await commitToHfCache({
        cacheDir: staging.cacheDir,
        repos: sink.plan(verified.manifest),
        tempPath: (label) => staging.path(label),
        asideDir: staging.dir,
        signal,
      });
      const summaries = summarizeRepos(verified.manifest);
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
            refWritten: outcome.refWritten,
          };
        }),
        files: verified.files,
        bytes: verified.bytes,
        warnings: [],
      };
    } finally {
      const leftovers = await staging.cleanup();
      committed?.warnings.push(...leftovers.map((failure) => `could not remove staging leftovers: ${failure}`));
    }
    return committed;
  } finally {
    interrupts.dispose();
  }
}
