/** Per-repo summaries shared by the verify and import results. */
import type { Manifest, RepoType } from '../bundle/manifest.js';

export interface RepoSummary {
  type: RepoType;
  id: string;
  revision: string;
  commit: string;
  /** Number of files. */
  files: number;
  bytes: number;
}

export function summarizeRepos(manifest: Manifest): RepoSummary[] {
  return manifest.repos.map((repo) => ({
    type: repo.type,
    id: repo.id,
    revision: repo.revision,
    commit: repo.commit,
    files: repo.files.length,
    bytes: repo.files.reduce((sum, file) => sum + file.size, 0),
  }));
}
