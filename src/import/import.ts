/**
 * `airlock import`: read the bundle ONCE, verifying every byte while staging it next to the cache,
 * and commit into the hub cache only after the whole stream verified. A failure at any point (bad
 * bundle, full disk, conflict in the cache, Ctrl-C) leaves the cache exactly as it was, and the
 * staging directory is removed on every exit path.
 */
import type { Readable } from 'node:stream';
import { readBundle } from '../bundle/reader.js';
import { AirlockError } from '../errors.js';
import { join } from 'node:path';
import { commitToHfCache } from '../cache/hf-hub.js';
import { commitToModelScopeCache } from '../cache/modelscope.js';
import { commitToPlainDir } from '../cache/plain-dir.js';
import { WeightCheckingSink } from '../integrity/weights.js';
import { DEFAULT_CONTENT_POLICY, refusal, type ContentPolicy } from '../content/index.js';
import { ContentCheckingSink } from './content-sink.js';
import type { ContentOutcome } from './summary.js';
import { createStaging } from '../fs/staging.js';
import type { TrustedKey, TrustPolicy, VerifiedSigner } from '../signing/verify.js';
import { watchInterrupts } from './interrupt.js';
import { openBundle } from './open-bundle.js';
import { BUNDLE_POOL, ReadPool } from '../bundle/read-pool.js';
import { explainReadFailure } from '../bundle/parts.js';
import { unindexedReadOf, type UnindexedRead } from '../bundle/parts-unindexed.js';
import { StagingSink, type ImportLayout } from './staging-sink.js';
import { summarizeRepos, type RepoSummary } from './summary.js';
import { observeSink, type ReadProgress } from './progress-sink.js';
import type { Manifest } from '../bundle/manifest.js';
import type { PayloadEntry, PayloadSink, PayloadTarget } from '../bundle/reader.js';
import type { Staging } from '../fs/staging.js';

/**
 * The staging directory is made only once the verified manifest says where the bundle goes (its
 * layout's default target); the payload then streams into it as before.
 */
class DeferredStagingSink implements PayloadSink {
  staging: Staging | undefined;
  staged: StagingSink | undefined;
  target: { layout: ImportLayout; cacheDir: string } | undefined;
  /** Every file judged on this side while it streams (undefined when the content check is off). */
  checked: ContentCheckingSink | undefined;
  readonly policy: ContentPolicy;
  #sink: PayloadSink | undefined;

  constructor(private readonly options: ImportOptions) {
    this.policy = options.contentPolicy ?? DEFAULT_CONTENT_POLICY;
  }

  async begin(manifest: Manifest): Promise<void> {
    const options = this.options;
    if (options.chooseTarget === undefined && options.cacheDir === undefined) throw new AirlockError('E_INTERNAL', 'importBundle needs cacheDir or chooseTarget');
    this.target = options.chooseTarget !== undefined ? options.chooseTarget(manifest) : { layout: options.layout ?? 'hf', cacheDir: options.cacheDir! };
    const { layout, cacheDir } = this.target;
    // dir: stage under DIR/.cache/huggingface (huggingface_hub's own folder there), never DIR/.locks
    this.staging = await createStaging(layout === 'dir' ? join(cacheDir, '.cache', 'huggingface') : cacheDir);
    this.staged = new StagingSink(this.staging, {
      layout,
      target: cacheDir,
      ...(options.spaceCheck === undefined ? {} : { spaceCheck: options.spaceCheck }),
      repos: options.repos,
      ...(options.freeBytes === undefined ? {} : { freeBytes: options.freeBytes }),
    });
    const weighed = options.weightCheck === false ? this.staged : new WeightCheckingSink(this.staged);
    // what loading each file would execute, judged on this side while it streams (never the export's word)
    this.checked = options.contentCheck === false ? undefined : new ContentCheckingSink(weighed, this.policy.allowGlobals);
    this.#sink = this.checked ?? weighed;
    if (this.#sink.begin !== undefined) await this.#sink.begin(manifest);
  }

  open(entry: PayloadEntry): Promise<PayloadTarget> {
    if (this.#sink === undefined) throw new Error('payload before the manifest');
    return this.#sink.open(entry);
  }
}

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
    const sink = new DeferredStagingSink(options);
    let committed: ImportResult | undefined;
    try {
      const verified = await readBundle(source, {
        trust: options.trust ?? { keys: options.trustedKeys ?? [] },
        allowUnsigned: options.allowUnsigned ?? false,
        subject: options.bundlePath,
        sink: observeSink(sink, options.progress),
        signal,
        bundleSha256: options.bundleSha256 === true,
        pool,
      }).catch(async (error: unknown) => {
        throw await explainReadFailure(source, error);
      });
      const staging = sink.staging!;
      const staged = sink.staged!;
      const { layout, cacheDir } = sink.target!;
      // every file judged on this side: an unsafe or unscannable one stops the import before the cache is touched
      const refused = sink.checked === undefined ? undefined : refusal(sink.checked.files, sink.policy);
      if (refused !== undefined) throw refused;
      // the whole stream verified and every staged file is durable: only now does anything reach the cache
      await staged.flush();
      const repos = staged.plan(verified.manifest);
      const common = { tempPath: (label: string) => staging.path(label), asideDir: staging.dir, signal };
      const outcomes: Array<{ folder: string; filesWritten: number; filesReused: number; refWritten?: boolean }> =
        layout === 'modelscope'
          ? await commitToModelScopeCache({ cacheDir, repos, ...common })
          : layout === 'dir'
            ? await commitToPlainDir({ localDir: cacheDir, repos, ...common })
            : await commitToHfCache({ cacheDir: staging.cacheDir, repos, ...common });
      const summaries = summarizeRepos({ ...verified.manifest, repos: staged.selected(verified.manifest) });
      committed = {
        bundlePath: options.bundlePath,
        layout,
        cacheDir,
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
        ...withoutIndex(source),
        content: sink.checked === undefined ? undefined : { allowUnsafe: sink.policy.allowUnsafe, allowGlobals: sink.policy.allowGlobals, files: sink.checked.files },
      };
    } finally {
      source.destroy();
      const leftovers = (await sink.staging?.cleanup()) ?? [];
      committed?.warnings.push(...leftovers.map((failure) => `could not remove staging leftovers: ${failure}`));
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
