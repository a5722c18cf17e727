/**
 * manifest.json: what a bundle claims to hold and where it came from (provenance). Pure: parse and
 * validate from bytes, format to bytes. Checked against schemas/manifest.schema.json on write and on
 * read, then against the rules a schema cannot say (unique repos and paths, etag forms, safe names).
 */
import { schemaProblems } from '../schema/validators.js';
import { AirlockError } from '../errors.js';
import { COMMIT_RE, unsafeRelativePathReason, unsafeRepoIdReason, unsafeRevisionReason } from '../fs/safe-path.js';
import { compareBytes, FORMAT_VERSION, payloadEntryName } from './format.js';

export type RepoType = 'model' | 'dataset';
/** Where a repo came from: a Hugging Face Hub (or mirror), ModelScope (or mirror), or the local HF cache (`export --from-cache`). */
export type SourceKind = 'huggingface' | 'modelscope' | 'hf-cache';

export interface ManifestFile {
  /** Path inside the repo, `/`-separated. */
  path: string;
  size: number;
  sha256: string;
  /** The name the hub cache stores the blob under: `lfs.oid` (sha256) for LFS/Xet files, else the git blob sha1. */
  etag: string;
  /** Git blob id from the listing (for LFS files: the pointer's sha1). */
  blobId: string;
  lfs: boolean;
  /** ModelScope only: the last commit that touched this file (the listing's `Revision`), for the `.msc` index. */
  lastCommit?: string;
  /** For `*.safetensors` files checked at export: tensor count and tensors per dtype (from the header). */
  safetensors?: { tensors: number; dtypes: Record<string, number> };
  /**
   * What loading the file would execute, as the exporting side judged it (issue 17). Informational: the
   * offline side analyses every file again and never relies on this.
   */
  content?: ManifestContent;
  /**
   * Delta bundles (`export --have`): the file is NOT in this bundle (nor in SHA256SUMS); the target
   * cache must already hold blob `etag` of this repo, which import re-hashes before committing.
   * Only LFS files (etag = sha256) are left out this way.
   */
  reference?: true;
}

export interface ManifestContent {
  verdict: 'safe' | 'unsafe' | 'unscannable' | 'no-code';
  /** What the file was recognised as (torch-zip, torch-legacy, pickle, npy, gguf, safetensors, json, data, …). */
  format: string;
  /** The globals a load would import, `module.name`, when there are any. */
  globals?: string[];
}

export interface ManifestSource {
  kind: SourceKind;
  /**
   * Where the files were fetched from (no credentials, no query): an http(s) origin with an optional path
   * prefix (mirrors), or for `hf-cache` the `file://` URL of the cache's repo folder.
   */
  endpoint: string;
  /** ModelScope only: the ref's `CreatedAt` (epoch seconds), for the `.mv` file. */
  createdAt?: number;
}

export interface ManifestRepo {
  type: RepoType;
  id: string;
  /** What the user asked for: branch, tag or commit. */
  revision: string;
  /** The commit that revision resolved to, pinned for every file. */
  commit: string;
  source: ManifestSource;
  files: ManifestFile[];
}

export interface Manifest {
  format: 'model-airlock-bundle';
  formatVersion: number;
  tool: { name: 'model-airlock'; version: string };
  createdAt: string;
  repos: ManifestRepo[];
}


/** Rules beyond the schema. Returns every problem found. */
function semanticProblems(manifest: Manifest): string[] {
  const problems: string[] = [];
  const repoKeys = new Set<string>();
  manifest.repos.forEach((repo, r) => {
    const at = `/repos/${r}`;
    const idReason = unsafeRepoIdReason(repo.id);
    if (idReason) problems.push(`${at}/id ${JSON.stringify(repo.id)}: ${idReason}`);
    const revReason = unsafeRevisionReason(repo.revision);
    if (revReason) problems.push(`${at}/revision ${JSON.stringify(repo.revision)}: ${revReason}`);
    if (COMMIT_RE.test(repo.revision) && repo.revision !== repo.commit) {
      problems.push(`${at}/revision is a commit (${repo.revision}) but the manifest pins ${repo.commit}`);
    }
    const key = `${repo.type}:${repo.id}:${repo.commit}`;
    if (repoKeys.has(key)) problems.push(`${at}: ${repo.type} ${repo.id}@${repo.commit} appears twice`);
    repoKeys.add(key);
    const paths = new Set<string>();
    const folded = new Map<string, string>();
    const dirsFolded = new Set<string>();
    repo.files.forEach((file, f) => {
      const fat = `${at}/files/${f}`;
      const reason = unsafeRelativePathReason(file.path);
      if (reason) problems.push(`${fat}/path ${JSON.stringify(file.path)}: ${reason}`);
      if (paths.has(file.path)) problems.push(`${fat}/path ${file.path} appears twice`);
      paths.add(file.path);
      // two names that differ only in case would collide on case-insensitive file systems
      const fold = file.path.toLowerCase();
      const twin = folded.get(fold);
      if (twin !== undefined && twin !== file.path) problems.push(`${fat}/path ${file.path} differs from ${twin} only in case`);
      folded.set(fold, file.path);
      // a file and a directory of the same name cannot both be in a snapshot (nor differ only in case:
      // they would collide on case-insensitive file systems); caught here, not half-way through a commit
      const segments = fold.split('/');
      for (let i = 1; i < segments.length; i++) dirsFolded.add(segments.slice(0, i).join('/'));
      if (f === repo.files.length - 1) {
        for (const [foldedPath, original] of folded) {
          if (dirsFolded.has(foldedPath)) problems.push(`${at}/files: ${original} is a file, but other paths use it as a directory`);
        }
      }
      if (file.lfs && file.etag !== file.sha256) problems.push(`${fat}: an LFS file's etag must be its sha256`);
      if (file.reference && !file.lfs) problems.push(`${fat}: only LFS files (named by their sha256) can be left out as references`);
      if (!file.lfs && file.etag !== file.blobId) problems.push(`${fat}: a git file's etag must be its git blob id`);
      if (!file.lfs && !/^[0-9a-f]{40}$/.test(file.etag)) problems.push(`${fat}/etag must be a 40-hex git blob id`);
    });
  });
  return problems;
}

function check(manifest: unknown, subject: string): Manifest {
  const problems = schemaProblems('manifest', manifest);
  if (problems.length === 0) problems.push(...semanticProblems(manifest as Manifest));
  if (problems.length > 0) {
    throw new AirlockError('E_MANIFEST_INVALID', `${subject} is not a valid airlock manifest:\n  ${problems.join('\n  ')}`, {
      subject,
      hint: 'the bundle was damaged or made by an incompatible tool; ask for a fresh export',
    });
  }
  return manifest as Manifest;
}

export function parseManifest(bytes: Uint8Array, subject = 'manifest.json'): Manifest {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (cause) {
    throw new AirlockError('E_MANIFEST_INVALID', `${subject} is not valid UTF-8 JSON: ${(cause as Error).message}`, {
      subject,
      hint: 'the bundle was damaged; ask for a fresh export',
      cause,
    });
  }
  const manifest = check(value, subject);
  if (manifest.formatVersion > FORMAT_VERSION) {
    throw new AirlockError('E_MANIFEST_INVALID', `${subject} has format version ${manifest.formatVersion}; this airlock reads up to ${FORMAT_VERSION}`, {
      subject,
      hint: 'upgrade model-airlock on this machine',
    });
  }
  return manifest;
}

/** Validates, then serialises with repos and files in canonical order. */
export function formatManifest(manifest: Manifest): Uint8Array {
  const canonical: Manifest = {
    ...manifest,
    repos: [...manifest.repos]
      .sort((a, b) => compareBytes(`${a.type}s/${a.id}/${a.commit}`, `${b.type}s/${b.id}/${b.commit}`))
      .map((repo) => ({ ...repo, files: [...repo.files].sort((a, b) => compareBytes(a.path, b.path)) })),
  };
  check(canonical, 'manifest.json');
  return Buffer.from(`${JSON.stringify(canonical, null, 2)}\n`, 'utf8');
}

export interface PayloadEntry {
  /** Name of the tar entry and of the SHA256SUMS line. */
  name: string;
  repo: ManifestRepo;
  file: ManifestFile;
}

/** Every payload entry the manifest promises, keyed by tar entry name. */
export function payloadEntries(manifest: Manifest): Map<string, PayloadEntry> {
  const entries = new Map<string, PayloadEntry>();
  for (const repo of manifest.repos) {
    for (const file of repo.files) {
      if (file.reference) continue; // not in this bundle: the target cache must hold it
      const name = payloadEntryName(repo.type, repo.id, repo.commit, file.path);
      if (entries.has(name)) {
        throw new AirlockError('E_MANIFEST_INVALID', `manifest.json names the payload entry ${name} twice`, { subject: name });
      }
      entries.set(name, { name, repo, file });
    }
  }
  return entries;
}
