/**
 * The one verify-then-commit path of the offline side, shared by `import` (bytes from a bundle) and
 * `pull` (bytes from an OCI registry): once the verified manifest says where the bundle goes, a staging
 * directory next to that target, the StagingSink under the weight checks and the content analysis that
 * `feed` pours verified entries into; then — only once `feed` resolved, i.e. every byte matched the
 * signed SHA256SUMS, and no file is refused by the content policy — fsync and the atomic, locked commit
 * into the hf / modelscope / dir target. On every failure the staging directory is removed and the
 * target is left as it was.
 */
import { join } from 'node:path';
import type { Manifest, ManifestRepo } from '../bundle/manifest.js';
import type { PayloadEntry, PayloadSink, PayloadTarget } from '../bundle/reader.js';
import { commitToHfCache } from '../cache/hf-hub.js';
import { commitToModelScopeCache } from '../cache/modelscope.js';
import { commitToPlainDir } from '../cache/plain-dir.js';
import { DEFAULT_CONTENT_POLICY, refusal, type ContentPolicy } from '../content/index.js';
import { AirlockError } from '../errors.js';
import { createStaging, type Staging } from '../fs/staging.js';
import { WeightCheckingSink } from '../integrity/weights.js';
import { ContentCheckingSink } from './content-sink.js';
import { StagingSink, type ImportLayout } from './staging-sink.js';
import { summarizeRepos, type ContentOutcome, type RepoSummary } from './summary.js';

/** Where the bundle goes. */
export interface CommitTarget {
  layout: ImportLayout;
  cacheDir: string;
}

export interface StageThenCommitOptions {
  /** The target, or how to choose it from the verified manifest (a default that depends on the bundle). */
  target: CommitTarget | ((manifest: Manifest) => CommitTarget);
  weightCheck?: boolean | undefined;
  spaceCheck?: boolean | undefined;
  /** What loading the files would execute: refused unless the policy allows it. Default: built-in allow-list. */
  contentPolicy?: ContentPolicy | undefined;
  /** Default true. Off only for measurements (bench): no verdicts at all. */
  contentCheck?: boolean | undefined;
  /** Only these repos are written (StagingSink selectors); all are still verified by `feed`. */
  repos?: readonly string[] | undefined;
  freeBytes?: ((dir: string) => Promise<number>) | undefined;
  signal: AbortSignal;
}

export interface CommittedRepo extends RepoSummary {
  folder: string;
  filesWritten: number;
  filesReused: number;
  refWritten: boolean;
}

export interface Committed<V> {
  verified: V;
  target: CommitTarget;
  /** The manifest repos written (all, or those `repos` selected). */
  selected: ManifestRepo[];
  repos: CommittedRepo[];
  warnings: string[];
  /** Every analysed file's verdict (undefined when the content check was off). */
  content: ContentOutcome | undefined;
}

/**
 * The sink `feed` writes into. The staging directory is made only at `begin(manifest)`, once the
 * verified manifest says where the bundle goes; the payload then streams through the content analysis
 * and the weight checks into the staging sink.
 */
export class CommitSink implements PayloadSink {
  staging: Staging | undefined;
  staged: StagingSink | undefined;
  target: CommitTarget | undefined;
  checked: ContentCheckingSink | undefined;
  readonly policy: ContentPolicy;
  #sink: PayloadSink | undefined;

  constructor(private readonly options: StageThenCommitOptions) {
    this.policy = options.contentPolicy ?? DEFAULT_CONTENT_POLICY;
  }

  async begin(manifest: Manifest): Promise<void> {
    const options = this.options;
    this.target = typeof options.target === 'function' ? options.target(manifest) : options.target;
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
    if (this.#sink === undefined) throw new AirlockError('E_INTERNAL', `payload entry ${entry.file.path} before the manifest`);
    return this.#sink.open(entry);
  }

  /**
   * pull's warm path: when the target already holds this entry's file intact, it is not fetched — but it
   * passes the same checks as a streamed entry (import streams every entry out of the bundle, present or
   * not, through this sink): its bytes are read from the target, once, hashed against the signed SHA-256
   * and poured through the content analysis and the weight checks; the verdict counts for the content
   * policy and the evidence record like any other. Resolves false when the file must be fetched (absent,
   * other bytes); rejects when the file is there but a check refuses it, as import would.
   */
  async openExisting(entry: PayloadEntry): Promise<boolean> {
    const staged = this.staged;
    if (staged === undefined) throw new AirlockError('E_INTERNAL', `payload entry ${entry.file.path} before the manifest`);
    const cancel = staged.beginAdopting(entry);
    let target: PayloadTarget;
    try {
      target = await this.open(entry);
    } catch (error) {
      cancel();
      throw error;
    }
    try {
      if (!(await staged.adoptExisting(entry, (chunk) => target.write(chunk)))) {
        await target.abort();
        return false;
      }
    } catch (error) {
      await target.abort();
      throw error;
    }
    // only now, with the hash matched: the checks judge what they saw (a refusal fails the pull)
    await target.finish();
    return true;
  }
}

/**
 * Runs `feed` against a CommitSink; `feed` must call `sink.begin(manifest)` once it has verified the
 * manifest (the bundle reader does), open one target per entry and finish it only after its hashes
 * matched, and resolve with the verified manifest. Then commits. `sink.staged` (after begin) is the bare
 * staging sink under the checks: pull asks it whether the target already holds a file, intact, before
 * downloading it.
 */
export async function stageThenCommit<V extends { manifest: Manifest }>(options: StageThenCommitOptions, feed: (sink: CommitSink) => Promise<V>): Promise<Committed<V>> {
  const { signal } = options;
  const sink = new CommitSink(options);
  let committed: Committed<V> | undefined;
  try {
    const verified = await feed(sink);
    const { staging, staged, target } = sink;
    if (staging === undefined || staged === undefined || target === undefined) throw new AirlockError('E_INTERNAL', 'the verified payload never began (no manifest)');
    // every file judged on this side: an unsafe or unscannable one stops here, before the target is touched
    const refused = sink.checked === undefined ? undefined : refusal(sink.checked.files, sink.policy);
    if (refused !== undefined) throw refused;
    // every byte verified and every staged file is durable: only now does anything reach the target
    await staged.flush();
    const repos = staged.plan(verified.manifest);
    const common = { tempPath: (label: string) => staging.path(label), asideDir: staging.dir, signal };
    const outcomes: Array<{ folder: string; filesWritten: number; filesReused: number; refWritten?: boolean }> =
      target.layout === 'modelscope'
        ? await commitToModelScopeCache({ cacheDir: target.cacheDir, repos, ...common })
        : target.layout === 'dir'
          ? await commitToPlainDir({ localDir: target.cacheDir, repos, ...common })
          : await commitToHfCache({ cacheDir: staging.cacheDir, repos, ...common });
    const selected = staged.selected(verified.manifest);
    const summaries = summarizeRepos({ ...verified.manifest, repos: selected });
    committed = {
      verified,
      target,
      selected,
      repos: summaries.map((summary, i) => {
        const outcome = outcomes[i]!;
        return { ...summary, folder: outcome.folder, filesWritten: outcome.filesWritten, filesReused: outcome.filesReused, refWritten: outcome.refWritten ?? false };
      }),
      warnings: [],
      content: sink.checked === undefined ? undefined : { allowUnsafe: sink.policy.allowUnsafe, allowGlobals: sink.policy.allowGlobals, files: sink.checked.files },
    };
  } finally {
    const leftovers = (await sink.staging?.cleanup()) ?? [];
    committed?.warnings.push(...leftovers.map((failure) => `could not remove staging leftovers: ${failure}`));
  }
  return committed;
}
