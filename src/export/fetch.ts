/**
 * One repo snapshot into the work dir: resolve the revision ONCE (every file then comes from that
 * commit, even if the branch moves meanwhile), list, filter, download each file verified.
 *
 * Work layout: `<workDir>/<type>s--<id with / → -->/<commit>/files/<path>` holds verified files only.
 * A download streams into `…/<commit>/partial/<path>` and is renamed into `files/` once its size and
 * hash match the listing. (The partials live in their own tree rather than next to the file as
 * `<path>.partial`, which a repo may legitimately contain as a file of its own.) A re-run finds the
 * completed files, re-hashes them against the listing and skips their download.
 */
import { lstat, mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { compareBytes } from '../bundle/format.js';
import { AirlockError, fsError } from '../errors.js';
import { makeFileFilter } from '../hub/filter.js';
import { formatRepoRef } from '../hub/repo-ref.js';
import { etagOf, type HubClient, type RemoteFile, type RepoRef } from '../hub/types.js';
import { Digester, type Digests } from '../integrity/digest.js';

export type FetchEvent =
  | { kind: 'resolved'; repo: RepoRef; commit: string }
  | { kind: 'selected'; repo: RepoRef; listed: number; files: number; bytes: number }
  | { kind: 'skipped'; repo: RepoRef; path: string; size: number }
  | { kind: 'downloading'; repo: RepoRef; path: string; size: number; index: number; total: number }
  | { kind: 'downloaded'; repo: RepoRef; path: string; size: number; ms: number };

/**
 * File-level progress. Each event also renders as one line of text (`${event}`), so a plain
 * line-per-event reporter needs nothing else; byte-level progress is `onBytes`.
 */
export type FetchProgress = (event: FetchEvent) => void;

export interface FetchOptions {
  include: string[];
  exclude: string[];
  workDir: string;
  onProgress?: FetchProgress | undefined;
  /** Bytes as they arrive (a delta per chunk), for progress bars. */
  onBytes?: ((bytes: number, path: string) => void) | undefined;
}

export interface FetchedFile {
  remote: RemoteFile;
  /** The verified file in the work dir. */
  localPath: string;
  size: number;
  sha256: string;
  /** The hub cache's name for it: lfs sha256, else the git blob id. */
  etag: string;
  lfs: boolean;
}

export interface FetchedSnapshot {
  repo: RepoRef;
  commit: string;
  /** Sorted by path (byte order). */
  files: FetchedFile[];
}

function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

export function describeFetchEvent(event: FetchEvent): string {
  switch (event.kind) {
    case 'resolved':
      return `${formatRepoRef(event.repo)} is commit ${event.commit}`;
    case 'selected':
      return `${formatRepoRef(event.repo, false)}: ${event.files} of ${event.listed} files selected (${formatSize(event.bytes)})`;
    case 'skipped':
      return `${event.path}: already downloaded and verified (${formatSize(event.size)})`;
    case 'downloading':
      return `[${event.index}/${event.total}] ${event.path} (${formatSize(event.size)})`;
    case 'downloaded':
      return `${event.path}: verified (${formatSize(event.size)} in ${(event.ms / 1000).toFixed(1)} s)`;
  }
}

/** `models--acme--tiny`, as the hub cache names a repo folder. */
export function repoFolderName(repo: RepoRef): string {
  return `${repo.type}s--${repo.id.replaceAll('/', '--')}`;
}

/** `<workDir>/<type>s--<id>/<commit>`. */
export function snapshotWorkDir(workDir: string, repo: RepoRef, commit: string): string {
  return join(workDir, repoFolderName(repo), commit);
}

function insidePath(root: string, repoPath: string): string {
  const full = join(root, ...repoPath.split('/'));
  const rel = relative(root, full);
  if (rel === '' || rel.startsWith(`..${sep}`) || rel === '..') {
    throw new AirlockError('E_UNSAFE_PATH', `${repoPath} would be written outside ${root}`, { subject: repoPath });
  }
  return full;
}

const READ_CHUNK_BYTES = 1024 * 1024;

/** Hashes a completed file from an earlier run; undefined unless it is a regular file matching the listing. */
async function verifiedExisting(path: string, file: RemoteFile): Promise<Digests | undefined> {
  let info;
  try {
    info = await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fsError(error, 'inspect', path);
  }
  if (!info.isFile() || info.size !== file.size) {
    await rm(path, { recursive: true, force: true }).catch((error: unknown) => {
      throw fsError(error, 'remove', path);
    });
    return undefined;
  }
  const digester = new Digester(file.lfsSha256 === undefined ? file.size : undefined);
  const buffer = Buffer.allocUnsafe(READ_CHUNK_BYTES);
  const handle = await open(path, 'r').catch((error: unknown) => {
    throw fsError(error, 'read', path);
  });
  try {
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      digester.update(buffer.subarray(0, bytesRead));
    }
  } catch (error) {
    throw fsError(error, 'read', path);
  } finally {
    await handle.close().catch(() => undefined);
  }
  const digests = digester.digest();
  const ok =
    digests.size === file.size && (file.lfsSha256 !== undefined ? digests.sha256 === file.lfsSha256 : digests.gitSha1 === file.blobId);
  if (ok) return digests;
  await rm(path, { force: true });
  return undefined;
}

function nothingToExport(repo: RepoRef, commit: string, listed: RemoteFile[], options: FetchOptions): AirlockError {
  const what = `${formatRepoRef(repo)} (commit ${commit})`;
  if (listed.length === 0) {
    return new AirlockError('E_NOTHING_TO_EXPORT', `${what} has no files`, {
      subject: formatRepoRef(repo),
      hint: 'check the revision: the repo is empty at that commit',
    });
  }
  const sample = [...listed].map((f) => f.path).sort(compareBytes);
  const shown = sample.slice(0, 8).join(', ') + (sample.length > 8 ? `, … (${sample.length} files)` : '');
  const patterns = [...options.include.map((p) => `--include ${p}`), ...options.exclude.map((p) => `--exclude ${p}`)].join(' ');
  return new AirlockError('E_NOTHING_TO_EXPORT', `no file of ${what} matches ${patterns}`, {
    subject: formatRepoRef(repo),
    hint: `patterns are fnmatch globs over the whole path ("*" also matches "/"); the repo has: ${shown}`,
  });
}

export async function fetchSnapshot(client: HubClient, repo: RepoRef, options: FetchOptions): Promise<FetchedSnapshot> {
  const emit = (event: FetchEvent): void => {
    if (options.onProgress === undefined) return;
    Object.defineProperty(event, 'toString', { value: () => describeFetchEvent(event), enumerable: false });
    options.onProgress(event);
  };

  const commit = await client.resolveCommit(repo);
  emit({ kind: 'resolved', repo, commit });
  const listed = await client.listFiles(repo, commit);
  const keep = makeFileFilter(options.include, options.exclude);
  const selected = listed.filter((f) => keep(f.path)).sort((a, b) => compareBytes(a.path, b.path));
  if (selected.length === 0) throw nothingToExport(repo, commit, listed, options);

  // Names that differ only in case would overwrite each other on macOS/Windows (and the manifest refuses them).
  const folded = new Map<string, string>();
  for (const f of selected) {
    const twin = folded.get(f.path.toLowerCase());
    if (twin !== undefined) {
      throw new AirlockError('E_UNSAFE_PATH', `${formatRepoRef(repo, false)} lists ${JSON.stringify(twin)} and ${JSON.stringify(f.path)}, which differ only in case`, {
        subject: f.path,
        hint: 'exclude one of them with --exclude',
      });
    }
    folded.set(f.path.toLowerCase(), f.path);
  }
  emit({ kind: 'selected', repo, listed: listed.length, files: selected.length, bytes: selected.reduce((n, f) => n + f.size, 0) });

  const base = snapshotWorkDir(options.workDir, repo, commit);
  const filesDir = join(base, 'files');
  const partialDir = join(base, 'partial');
  const files: FetchedFile[] = [];
  let index = 0;
  for (const file of selected) {
    index++;
    const localPath = insidePath(filesDir, file.path);
    let digests = await verifiedExisting(localPath, file);
    if (digests !== undefined) {
      emit({ kind: 'skipped', repo, path: file.path, size: file.size });
    } else {
      emit({ kind: 'downloading', repo, path: file.path, size: file.size, index, total: selected.length });
      const started = Date.now();
      const partial = insidePath(partialDir, file.path);
      try {
        await mkdir(dirname(partial), { recursive: true });
        await mkdir(dirname(localPath), { recursive: true });
        await rm(partial, { recursive: true, force: true });
      } catch (error) {
        throw fsError(error, 'prepare', partial);
      }
      const onBytes = options.onBytes;
      digests = await client.download(repo, commit, file, partial, onBytes === undefined ? undefined : (bytes) => onBytes(bytes, file.path));
      try {
        await rename(partial, localPath);
      } catch (error) {
        throw fsError(error, 'move into place', localPath);
      }
      emit({ kind: 'downloaded', repo, path: file.path, size: digests.size, ms: Date.now() - started });
    }
    files.push({
      remote: file,
      localPath,
      size: digests.size,
      sha256: digests.sha256,
      etag: etagOf(file),
      lfs: file.lfsSha256 !== undefined,
    });
  }
  await rm(partialDir, { recursive: true, force: true }).catch(() => undefined);
  return { repo, commit, files };
}
