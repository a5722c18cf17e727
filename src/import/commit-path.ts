/**
 * The one verify-then-commit path of the offline side, shared by `import` (bytes from a bundle) and
 * `pull` (bytes from an OCI registry): a staging directory next to the target, the StagingSink (and the
 * weight checks) that `feed` pours verified entries into, then — only once `feed` resolved, i.e. every
 * byte matched the signed SHA256SUMS — fsync and the atomic, locked commit into the hf / modelscope /
 * dir target. On every failure the staging directory is removed and the target is left as it was.
 */
import { join } from 'node:path';
import type { Manifest } from '../bundle/manifest.js';
import type { PayloadSink } from '../bundle/reader.js';
import { commitToHfCache } from '../cache/hf-hub.js';
import { commitToModelScopeCache } from '../cache/modelscope.js';
import { commitToPlainDir } from '../cache/plain-dir.js';
import { createStaging } from '../fs/staging.js';
import { WeightCheckingSink } from '../integrity/weights.js';
import { StagingSink, type ImportLayout } from './staging-sink.js';
import { summarizeRepos, type RepoSummary } from './summary.js';

export interface StageThenCommitOptions {
  cacheDir: string;
  layout: ImportLayout;
  weightCheck?: boolean | undefined;
  spaceCheck?: boolean | undefined;
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

/**
 * Runs `feed` against a fresh staging sink; `feed` must call `sink.begin(manifest)` once it has verified
 * the manifest, open one target per entry and finish it only after its hashes matched, and resolve with
 * the verified manifest. Then commits. `staged` is the bare staging sink under the weight checks (pull
 * asks it whether the target already holds a file, intact, before downloading it).
 */
export async function stageThenCommit<V extends { manifest: Manifest }>(
  options: StageThenCommitOptions,
  feed: (sink: PayloadSink, staged: StagingSink) => Promise<V>,
): Promise<{ verified: V; repos: CommittedRepo[]; warnings: string[] }> {
  const { layout, signal } = options;
  // dir: stage under DIR/.cache/huggingface (huggingface_hub's own folder there), never DIR/.locks
  const staging = await createStaging(layout === 'dir' ? join(options.cacheDir, '.cache', 'huggingface') : options.cacheDir);
  let committed: { verified: V; repos: CommittedRepo[]; warnings: string[] } | undefined;
  try {
    const staged = new StagingSink(staging, {
      layout,
      target: options.cacheDir,
      ...(options.spaceCheck === undefined ? {} : { spaceCheck: options.spaceCheck }),
      repos: options.repos,
      ...(options.freeBytes === undefined ? {} : { freeBytes: options.freeBytes }),
    });
    const sink = options.weightCheck === false ? staged : new WeightCheckingSink(staged);
    const verified = await feed(sink, staged);
    // every byte verified and every staged file is durable: only now does anything reach the target
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
      verified,
      repos: summaries.map((summary, i) => {
        const outcome = outcomes[i]!;
        return { ...summary, folder: outcome.folder, filesWritten: outcome.filesWritten, filesReused: outcome.filesReused, refWritten: outcome.refWritten ?? false };
      }),
      warnings: [],
    };
  } finally {
    const leftovers = await staging.cleanup();
    committed?.warnings.push(...leftovers.map((failure) => `could not remove staging leftovers: ${failure}`));
  }
  return committed;
}
