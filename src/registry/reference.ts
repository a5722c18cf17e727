/**
 * `oci://HOST[:PORT]/PATH[:TAG|@sha256:…]` references, and the registry-safe names publish derives from
 * a bundle's repos. Pure: no I/O.
 */
import { AirlockError } from '../errors.js';
import type { ManifestRepo } from '../bundle/manifest.js';

export interface OciReference {
  /** `host[:port]`, as the user wrote it (lower-cased). */
  registry: string;
  /** Repository path inside the registry (`prefix/org/name`). */
  repository: string;
  /** Tag or `sha256:…` digest; undefined when the reference names only a repository (publish target). */
  reference: string | undefined;
}

/** distribution-spec: path components `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by `/`. */
const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;

function usage(text: string, message: string): AirlockError {
  return new AirlockError('E_USAGE', `${message}: ${JSON.stringify(text)}`, {
    subject: text,
    hint: 'write it as oci://HOST[:PORT]/PREFIX/ORG/NAME[:TAG] (lower-case path; e.g. oci://registry.example:5000/models/acme/llama:main)',
  });
}

export function parseOciReference(text: string, options: { needReference: boolean }): OciReference {
  if (!text.startsWith('oci://')) throw usage(text, 'not an oci:// reference');
  const rest = text.slice('oci://'.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) throw usage(text, 'the reference names no repository');
  const registry = rest.slice(0, slash).toLowerCase();
  if (!/^[a-z0-9.-]+(?::\d{1,5})?$|^\[[0-9a-f:]+\](?::\d{1,5})?$/.test(registry)) throw usage(text, 'not a registry host[:port]');
  let path = rest.slice(slash + 1);
  let reference: string | undefined;
  const at = path.indexOf('@');
  if (at !== -1) {
    reference = path.slice(at + 1);
    path = path.slice(0, at);
    if (!DIGEST.test(reference)) throw usage(text, 'the digest is not sha256:<64 hex>');
  } else {
    const colon = path.lastIndexOf(':');
    if (colon !== -1 && !path.slice(colon).includes('/')) {
      reference = path.slice(colon + 1);
      path = path.slice(0, colon);
      if (!TAG.test(reference)) throw usage(text, 'not a valid tag');
    }
  }
  path = path.replace(/\/+$/, '');
  if (path === '' || !path.split('/').every((c) => COMPONENT.test(c))) throw usage(text, 'not a valid repository path');
  if (options.needReference && reference === undefined) {
    throw new AirlockError('E_USAGE', `${text} names no tag or digest`, { subject: text, hint: 'add :TAG (the revision, e.g. :main, or the full commit id) or @sha256:…' });
  }
  if (!options.needReference && reference !== undefined) {
    throw new AirlockError('E_USAGE', `--to ${text} must name a prefix, not a tag`, { subject: text, hint: 'publish tags each repo itself with its revision and its commit id' });
  }
  return { registry, repository: path, reference };
}

export function formatOciReference(ref: OciReference): string {
  const tail = ref.reference === undefined ? '' : ref.reference.startsWith('sha256:') ? `@${ref.reference}` : `:${ref.reference}`;
  return `oci://${ref.registry}/${ref.repository}${tail}`;
}

/** The repository path of one bundle repo under a prefix: `PREFIX/org/name`, datasets `PREFIX/datasets/org/name`. */
export function repositoryFor(prefix: string, repo: Pick<ManifestRepo, 'type' | 'id'>): string {
  const tail = registryRepoPath(repo);
  const path = prefix === '' ? tail : `${prefix}/${tail}`;
  if (!path.split('/').every((c) => COMPONENT.test(c))) {
    throw new AirlockError('E_USAGE', `${repo.id} does not map to a valid registry repository name (${path})`, {
      subject: repo.id,
      hint: 'registry paths allow lower-case letters, digits and single . _ - separators',
    });
  }
  return path;
}

/** `org/name` (lower-cased: registries allow no capitals), `datasets/org/name` for datasets. */
export function registryRepoPath(repo: Pick<ManifestRepo, 'type' | 'id'>): string {
  return `${repo.type === 'dataset' ? 'datasets/' : ''}${repo.id.toLowerCase()}`;
}

/** The tags of one published repo: a registry-safe form of the revision, and the full commit id. */
export function tagsFor(repo: Pick<ManifestRepo, 'revision' | 'commit'>): string[] {
  let safe = repo.revision.replace(/[^a-zA-Z0-9._-]/g, '-').replace(/^[.-]+/, '');
  if (safe === '') safe = repo.commit;
  safe = safe.slice(0, 128);
  return safe === repo.commit ? [repo.commit] : [safe, repo.commit];
}
