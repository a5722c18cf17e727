/**
 * Repo arguments as the CLI takes them: `acme/tiny`, `gpt2`, `datasets/acme/ds`, `models/acme/tiny`,
 * `acme/tiny@v1.0`. A `datasets/`/`models/` prefix sets the type (like huggingface_hub's
 * `repo_type_and_id_from_hf_id`) and wins over `--repo-type`; `@revision` wins over `--revision`.
 * Ids and revisions are validated here, before they reach a URL or a path.
 */
import type { RepoType } from '../bundle/manifest.js';
import { AirlockError } from '../errors.js';
import { unsafeRepoIdReason, unsafeRevisionReason } from '../fs/safe-path.js';
import type { RepoRef } from './types.js';

export interface RepoArgDefaults {
  type: RepoType;
  revision: string;
}

const TYPE_PREFIXES: ReadonlyMap<string, RepoType> = new Map([
  ['models', 'model'],
  ['datasets', 'dataset'],
]);
const UNSUPPORTED_PREFIXES = ['spaces', 'kernels'];

export function parseRepoArg(arg: string, defaults: RepoArgDefaults): RepoRef {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(arg)) {
    throw new AirlockError('E_REPO_ID_INVALID', `${JSON.stringify(arg)} is a URL, not a repo id`, {
      subject: arg,
      hint: 'pass the repo id (e.g. acme/tiny or datasets/acme/ds) and the hub with --endpoint',
    });
  }

  // Repo ids cannot contain "@", so the first one starts the revision (which may itself contain "@").
  const at = arg.indexOf('@');
  const idPart = at < 0 ? arg : arg.slice(0, at);
  const revision = at < 0 ? defaults.revision : arg.slice(at + 1);

  let type = defaults.type;
  let id = idPart;
  const slash = idPart.indexOf('/');
  if (slash > 0) {
    const prefix = idPart.slice(0, slash);
    const prefixed = TYPE_PREFIXES.get(prefix);
    if (prefixed !== undefined) {
      type = prefixed;
      id = idPart.slice(slash + 1);
    } else if (UNSUPPORTED_PREFIXES.includes(prefix)) {
      throw new AirlockError('E_REPO_ID_INVALID', `${JSON.stringify(arg)}: ${prefix} cannot be exported`, {
        subject: arg,
        hint: 'airlock exports models and datasets (datasets/<namespace>/<name>)',
      });
    }
  }

  const idReason = unsafeRepoIdReason(id);
  if (idReason !== undefined) {
    throw new AirlockError('E_REPO_ID_INVALID', `invalid repo id ${JSON.stringify(id)} in ${JSON.stringify(arg)}: ${idReason}`, {
      subject: arg,
      hint: 'write it as namespace/name (e.g. acme/tiny), datasets/namespace/name for a dataset, and name@revision to pick a revision',
    });
  }
  const revisionReason = unsafeRevisionReason(revision);
  if (revisionReason !== undefined) {
    throw new AirlockError('E_REVISION_INVALID', `invalid revision ${JSON.stringify(revision)} for ${id}: ${revisionReason}`, {
      subject: arg,
      hint: 'use a branch (main), a tag (v1.0), refs/pr/<n>, or a full 40-character commit hash',
    });
  }
  return { type, id, revision };
}

/** How people write the repo back: `datasets/acme/ds@main`. */
export function formatRepoRef(repo: RepoRef, withRevision = true): string {
  const prefix = repo.type === 'dataset' ? 'datasets/' : '';
  return `${prefix}${repo.id}${withRevision ? `@${repo.revision}` : ''}`;
}
