/**
 * One repo snapshot into the work dir: resolve the revision ONCE (every file then comes from that
 * commit, even if the branch moves meanwhile), list, filter, download each file verified.
 *
 * Work layout: `<workDir>/<type>s--<id with / → -->/<commit>/files/<path>` holds verified files only.
 * A download streams into `…/<commit>/partial/<path>` (and, split over several connections, the later
 * parts into `…/<commit>/parts/<path>/<start>-<end>`) and is renamed into `files/` once its size and
 * hash match the listing. (The partials live in their own tree rather than next to the file as
 * `<path>.partial`, which a repo may legitimately contain as a file of its own.) `refs/<revision>` pins
 * the commit of the first run and `verified/<commit>.json` records completed files (work-state.ts).
 *
 * A re-run (same arguments, after Ctrl-C, a kill, a crash or a network failure) stays on the pinned
 * commit, trusts completed files by their record (or re-hashes them), and continues partial files
 * with `Range` requests.
 */
import { formatBytes } from '../format.js';
import { lstat, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { compareBytes } from '../bundle/format.js';
import { AirlockError, fsError } from '../errors.js';
import { makeFileFilter } from '../hub/filter.js';
import { formatRepoRef } from '../hub/repo-ref.js';
import { etagOf, type HubClient, type RemoteFile, type RepoRef } from '../hub/types.js';
import { Digester, type Digests } from '../integrity/digest.js';
import { downloadFile, type DownloadTarget, type Throttle } from '../hub/download.js';
import { describeStatus, type RetryPolicy } from '../hub/retry.js';
import { readPinnedCommit, removePinnedCommit, VerifiedFiles, writePinnedCommit } from './work-state.js';

export type FetchEvent =
  | { kind: 'resolved'; repo: RepoRef; commit: string; pinned?: boolean }
  | { kind: 'selected'; repo: RepoRef; listed: number; files: number; bytes: number; remaining?: number }
  | { kind: 'skipped'; repo: RepoRef; path: string; size: number }
  | { kind: 'downloading'; repo: RepoRef; path: string; size: number; index: number; total: number }
  | { kind: 'resumed'; repo: RepoRef; path: string; size: number; kept: number }
  | { kind: 'restarted'; repo: RepoRef; path: string; reason: string }
  | { kind: 'retry'; repo: RepoRef; path: string; attempt: number; attempts: number; status: number; delayMs: number; reason: string }
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
  /** Bytes as they arrive (a delta per chunk; negative when a restart throws bytes away), for progress bars. */
  onBytes?: ((bytes: number, path: string) => void) | undefined;
  /** Files downloaded at once. Default 4. */
  concurrency?: number | undefined;
  /** Parallel Range requests per large file. Default 1 (see docs/export.md for what more buys). */
  connectionsPerFile?: number | undefined;
  /** Default: one attempt per request (the CLI passes the bounded backoff policy). */
  retry?: RetryPolicy | undefined;
  /** A bandwidth cap shared by every download. */
  throttle?: Throttle | undefined;
  /** Smallest part when splitting a file over several connections (default 8 MiB). */
  minPartBytes?: number | undefined;
  /**
   * Where downloads land instead of the work dir's `files/` (export writes straight into the bundle).
   * Only for clients with a `rangeSource`.
   */
  placement?: Placement | undefined;
}

/** Where a snapshot's downloads land, and what an earlier run already completed there. */
export interface Placement {
  /** Files complete from an earlier run, with their digests (skipped). */
  done: Map<string, Digests>;
  target(file: RemoteFile): DownloadTarget;
  /** The file arrived and matched the listing. */
  completed(file: RemoteFile, digests: Digests): Promise<void>;
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

/** What a snapshot needs, before any download: the input to the free-space check. */
export interface SnapshotPlan {
  repo: RepoRef;
  commit: string;
  /** Whether the commit came from an earlier, interrupted run (the revision was not resolved again). */
  pinned: boolean;
  /** Selected files, sorted by path (byte order). */
  selected: RemoteFile[];
  /** Files already complete in the work dir, with their digests. */
  done: Map<string, Digests>;
  totalBytes: number;
  /** Bytes still to download (kept partial bytes already subtracted). */
  remainingBytes: number;
  verified: VerifiedFiles;
}


export function describeFetchEvent(event: FetchEvent): string {
  switch (event.kind) {
    case 'resolved':
      return event.pinned === true
        ? `${formatRepoRef(event.repo)} stays pinned to commit ${event.commit}, resolved by an earlier run (delete the work dir to pick up a newer commit)`
        : `${formatRepoRef(event.repo)} is commit ${event.commit}`;
    case 'selected':
      return `${formatRepoRef(event.repo, false)}: ${event.files} of ${event.listed} files selected (${formatBytes(event.bytes)})${
        event.remaining !== undefined && event.remaining < event.bytes ? `, ${formatBytes(event.remaining)} left to download` : ''
      }`;
    case 'resumed':
      // every byte arrived but the run ended before marking the file verified: hashed here, not fetched
      if (event.kept === event.size) return `${event.path}: all ${formatBytes(event.size)} already here, checking them locally`;
      return `${event.path}: resuming, ${formatBytes(event.kept)} of ${formatBytes(event.size)} already here`;
    case 'restarted':
      return `${event.path}: starting over: ${event.reason}`;
    case 'retry':
      return `${event.path === '' ? formatRepoRef(event.repo, false) : event.path}: attempt ${event.attempt} of ${event.attempts} failed (${describeStatus(event.status)}); retrying in ${(event.delayMs / 1000).toFixed(1)} s`;
    case 'skipped':
      return `${event.path}: already downloaded and verified (${formatBytes(event.size)})`;
    case 'downloading':
      return `[${event.index}/${event.total}] ${event.path} (${formatBytes(event.size)})`;
    case 'downloaded':
      return `${event.path}: verified (${formatBytes(event.size)} in ${(event.ms / 1000).toFixed(1)} s)`;
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

/**
 * A completed file from an earlier run: vouched for by its record (size, mtime, inode, hash: no read),
 * else re-hashed in full; undefined (and removed) unless it is a regular file matching the listing.
 */
async function verifiedExisting(path: string, file: RemoteFile, verified: VerifiedFiles): Promise<Digests | undefined> {
  const recorded = await verified.check(path, file);
  if (recorded !== undefined) return recorded;
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
  if (ok) {
    await verified.add(path, file, digests);
    return digests;
  }
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

/** `<workDir>/<type>s--<id>/verified/<commit>.json`. */
export function verifiedRecordPath(workDir: string, repo: RepoRef, commit: string): string {
  return join(repoWorkDir(workDir, repo), 'verified', `${commit}.json`);
}

/** `<workDir>/<type>s--<id>`: the snapshots of one repo, its pinned refs and verified-file records. */
export function repoWorkDir(workDir: string, repo: RepoRef): string {
  return join(workDir, repoFolderName(repo));
}

async function containsFile(dir: string): Promise<boolean> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return false;
  }
  for (const e of entries) {
    if (!e.isDirectory() || (await containsFile(join(dir, e.name)))) return true;
  }
  return false;
}

async function sizeIfFile(path: string): Promise<number> {
  try {
    const info = await stat(path);
    return info.isFile() ? info.size : 0;
  } catch {
    return 0;
  }
}

/** Resolve (or take the pinned commit), list, filter, and find what earlier runs already completed. */
export async function planSnapshot(client: HubClient, repo: RepoRef, options: FetchOptions): Promise<SnapshotPlan> {
  const emit = emitter(options);
  const repoDir = repoWorkDir(options.workDir, repo);
  const pinnedCommit = await readPinnedCommit(repoDir, repo.revision);
  const commit = pinnedCommit ?? (await client.resolveCommit(repo));
  emit({ kind: 'resolved', repo, commit, pinned: pinnedCommit !== undefined && pinnedCommit !== repo.revision });
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

  const base = snapshotWorkDir(options.workDir, repo, commit);
  const verified = await VerifiedFiles.load(verifiedRecordPath(options.workDir, repo, commit));
  const done = new Map<string, Digests>();
  const totalBytes = selected.reduce((n, f) => n + f.size, 0);
  let remainingBytes = 0;
  for (const file of selected) {
    const localPath = insidePath(join(base, 'files'), file.path);
    const digests = (await verifiedExisting(localPath, file, verified)) ?? undefined;
    if (digests !== undefined) {
      done.set(file.path, digests);
      continue;
    }
    const kept = Math.min(file.size, await sizeIfFile(insidePath(join(base, 'partial'), file.path)));
    remainingBytes += file.size - kept;
  }
  emit({ kind: 'selected', repo, listed: listed.length, files: selected.length, bytes: totalBytes, remaining: remainingBytes });
  return { repo, commit, pinned: pinnedCommit !== undefined, selected, done, totalBytes, remainingBytes, verified };
}

function emitter(options: FetchOptions): (event: FetchEvent) => void {
  return (event: FetchEvent): void => {
    if (options.onProgress === undefined) return;
    Object.defineProperty(event, 'toString', { value: () => describeFetchEvent(event), enumerable: false });
    options.onProgress(event);
  };
}

/**
 * Downloads what the plan still needs, `concurrency` files at a time, each resumable (partial files are
 * kept on failure and continued by the next run) and retried by the policy.
 */
export async function downloadSnapshot(client: HubClient, plan: SnapshotPlan, options: FetchOptions): Promise<FetchedSnapshot> {
  const emit = emitter(options);
  const { repo, commit, selected } = plan;
  const base = snapshotWorkDir(options.workDir, repo, commit);
  const filesDir = join(base, 'files');
  const partialDir = join(base, 'partial');
  const partsDir = join(base, 'parts');
  const done = options.placement?.done ?? plan.done;
  const results = new Map<string, Digests>(done);
  for (const file of selected) if (done.has(file.path)) emit({ kind: 'skipped', repo, path: file.path, size: file.size });
  const queue = selected.filter((f) => !done.has(f.path));

  // Pin before the first byte: whatever happens next, a re-run continues this very commit. (Undone
  // below if a failure leaves nothing behind to continue.)
  const repoDir = repoWorkDir(options.workDir, repo);
  const pinnedHere = !plan.pinned && queue.length > 0;
  if (pinnedHere) await writePinnedCommit(repoDir, repo.revision, commit);

  let next = 0;
  let failed: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failed === undefined && next < queue.length) {
      const file = queue[next++] as RemoteFile;
      try {
        results.set(file.path, await downloadOne(file, selected.indexOf(file) + 1));
      } catch (error) {
        failed ??= { error };
      }
    }
  };

  async function downloadOne(file: RemoteFile, index: number): Promise<Digests> {
    const localPath = insidePath(filesDir, file.path);
    const partial = insidePath(partialDir, file.path);
    emit({ kind: 'downloading', repo, path: file.path, size: file.size, index, total: selected.length });
    const started = Date.now();
    try {
      if (options.placement === undefined) {
        await mkdir(dirname(partial), { recursive: true });
        await mkdir(dirname(localPath), { recursive: true });
        // a directory (or link) where the partial file belongs is nothing we wrote: clear it
        const info = await lstat(partial).catch(() => undefined);
        if (info !== undefined && !info.isFile()) await rm(partial, { recursive: true, force: true });
      }
    } catch (error) {
      throw fsError(error, 'prepare', partial);
    }
    const onBytes = options.onBytes;
    let digests: Digests;
    const source = client.rangeSource?.(repo, commit, file);
    if (source === undefined && options.placement !== undefined) {
      throw new AirlockError('E_INTERNAL', `${client.kind} downloads cannot be placed outside the work dir`);
    }
    if (source === undefined) {
      digests = await client.download(repo, commit, file, partial, onBytes === undefined ? undefined : (bytes) => onBytes(bytes, file.path));
    } else {
      let counted = 0;
      digests = await downloadFile(source, `${formatRepoRef(repo, false)}/${file.path}`, file, options.placement?.target(file) ?? partial, {
        resume: true,
        keepPartial: true,
        retry: options.retry,
        connections: options.connectionsPerFile ?? 1,
        minPartBytes: options.minPartBytes,
        partsDir: insidePath(partsDir, file.path),
        throttle: options.throttle,
        hashAttempts: client.hashAttempts,
        onBytes: (bytes) => {
          counted += bytes;
          onBytes?.(bytes, file.path);
        },
        onResume: (kept) => {
          counted += kept;
          onBytes?.(kept, file.path);
          emit({ kind: 'resumed', repo, path: file.path, size: file.size, kept });
        },
        onRestart: (reason) => {
          onBytes?.(-counted, file.path);
          counted = 0;
          emit({ kind: 'restarted', repo, path: file.path, reason });
        },
        onRetry: (event) =>
          emit({ kind: 'retry', repo, path: file.path, attempt: event.attempt, attempts: event.attempts, status: event.status, delayMs: event.delayMs, reason: event.reason }),
      });
    }
    if (options.placement !== undefined) {
      await options.placement.completed(file, digests);
    } else {
      try {
        await rename(partial, localPath);
      } catch (error) {
        throw fsError(error, 'move into place', localPath);
      }
      await plan.verified.add(localPath, file, digests);
    }
    emit({ kind: 'downloaded', repo, path: file.path, size: digests.size, ms: Date.now() - started });
    return digests;
  }

  const workers = Math.max(1, Math.min(options.concurrency ?? 4, queue.length));
  await Promise.all(Array.from({ length: workers }, () => worker()));
  if (failed !== undefined) {
    if (pinnedHere && results.size === 0 && !(await containsFile(partialDir)) && !(await containsFile(partsDir))) {
      await removePinnedCommit(repoDir, repo.revision).catch(() => undefined);
    }
    throw failed.error;
  }

  const files: FetchedFile[] = selected.map((file) => {
    const digests = results.get(file.path) as Digests;
    return {
      remote: file,
      localPath: insidePath(filesDir, file.path),
      size: digests.size,
      sha256: digests.sha256,
      etag: etagOf(file),
      lfs: file.lfsSha256 !== undefined,
    };
  });
  await rm(partialDir, { recursive: true, force: true }).catch(() => undefined);
  await rm(partsDir, { recursive: true, force: true }).catch(() => undefined);
  return { repo, commit, files };
}

/** Plan and download one snapshot. */
export async function fetchSnapshot(client: HubClient, repo: RepoRef, options: FetchOptions): Promise<FetchedSnapshot> {
  return downloadSnapshot(client, await planSnapshot(client, repo, options), options);
}
