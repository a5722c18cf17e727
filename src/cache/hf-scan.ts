/**
 * Reads a Hugging Face hub cache the way huggingface_hub's `scan_cache_dir()` does (spec §3.9), for
 * `airlock cache list`, `cache verify` and `cache inventory`. Never writes. Never follows a link out of
 * a repo's `blobs/` except where the shared blob store puts it (a symlinked blob is followed for
 * reading, as huggingface_hub 1.33+ creates them).
 */
import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile, readlink, realpath, stat } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { fsError } from '../errors.js';
import { Digester } from '../integrity/digest.js';
import { COMMIT_RE } from '../fs/safe-path.js';
import { allowList, ContentScanner, verdictOf, type ContentVerdict } from '../content/index.js';

export type CacheRepoType = 'model' | 'dataset' | 'space' | 'kernel';

export interface CachedFile {
  path: string;
  /** The blob's file name (its etag), when the snapshot entry resolves into `blobs/`. */
  blob: string | undefined;
  size: number;
}

export interface CachedRevision {
  commit: string;
  refs: string[];
  files: CachedFile[];
  /** Sum of the sizes of the blobs this revision uses (each once). */
  size: number;
}

export interface CachedBlob {
  etag: string;
  size: number;
  /** Path of the blob entry (it may be a link into the shared store). */
  path: string;
}

export interface CachedRepo {
  type: CacheRepoType;
  id: string;
  folder: string;
  revisions: CachedRevision[];
  blobs: CachedBlob[];
  /** Sum of blob sizes in blobs/ (what the repo takes on disk). */
  sizeOnDisk: number;
  incompleteFiles: string[];
}

export type CacheProblemKind = 'not-a-repo' | 'dangling-link' | 'bad-ref' | 'file-in-snapshots' | 'corrupted-blob' | 'unreadable';

export interface CacheProblem {
  kind: CacheProblemKind;
  /** Path relative to the cache root. */
  path: string;
  message: string;
}

export interface CacheScan {
  cacheDir: string;
  /** False when there is no cache at cacheDir yet (nothing imported): the scan is then empty. */
  exists: boolean;
  repos: CachedRepo[];
  problems: CacheProblem[];
  sizeOnDisk: number;
}

const IGNORED_ROOT = new Set(['.locks', 'CACHEDIR.TAG', '.DS_Store', 'Thumbs.db', 'desktop.ini', 'blobs']);
const IGNORED_IN_SNAPSHOTS = new Set(['.DS_Store', 'Thumbs.db', 'desktop.ini']);
const TYPE_OF: Record<string, CacheRepoType> = { models: 'model', datasets: 'dataset', spaces: 'space', kernels: 'kernel' };

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(path)));
    else out.push(path);
  }
  return out;
}

async function isDirectory(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => undefined))?.isDirectory() ?? false;
}

async function scanRepo(cacheDir: string, folder: string, problems: CacheProblem[]): Promise<CachedRepo | undefined> {
  const repoDir = join(cacheDir, folder);
  const rel = (p: string) => relative(cacheDir, p);
  const split = folder.indexOf('--');
  const type = TYPE_OF[folder.slice(0, split)];
  if (split < 0 || type === undefined) {
    problems.push({ kind: 'not-a-repo', path: folder, message: `${folder} is not a hub cache repo folder ({type}s--{org}--{name})` });
    return undefined;
  }
  const snapshotsDir = join(repoDir, 'snapshots');
  if (!(await isDirectory(snapshotsDir))) {
    problems.push({ kind: 'not-a-repo', path: rel(snapshotsDir), message: `${folder} has no snapshots/ folder` });
    return undefined;
  }
  const repo: CachedRepo = { type, id: folder.slice(split + 2).replaceAll('--', '/'), folder, revisions: [], blobs: [], sizeOnDisk: 0, incompleteFiles: [] };

  const blobsDir = join(repoDir, 'blobs');
  const blobsReal = await realpath(blobsDir).catch(() => undefined);
  if (blobsReal !== undefined) {
    for (const name of await readdir(blobsDir)) {
      const path = join(blobsDir, name);
      if (name.endsWith('.incomplete')) {
        repo.incompleteFiles.push(rel(path));
        continue;
      }
      const info = await stat(path).catch(() => undefined);
      if (info === undefined) {
        problems.push({ kind: 'dangling-link', path: rel(path), message: `blob ${name} is a link to nothing` });
        continue;
      }
      repo.blobs.push({ etag: name, size: info.size, path });
      repo.sizeOnDisk += info.size;
    }
  }

  const refsByCommit = new Map<string, string[]>();
  const refsDir = join(repoDir, 'refs');
  if (await isDirectory(refsDir)) {
    for (const refPath of await walk(refsDir)) {
      const name = relative(refsDir, refPath).split(sep).join('/');
      const raw = await readFile(refPath, 'utf8');
      if (!COMMIT_RE.test(raw) || !(await isDirectory(join(snapshotsDir, raw)))) {
        problems.push({ kind: 'bad-ref', path: rel(refPath), message: `ref ${name} holds ${JSON.stringify(raw.slice(0, 60))}, which is not a snapshot here` });
        continue;
      }
      refsByCommit.set(raw, [...(refsByCommit.get(raw) ?? []), name]);
    }
  }

  for (const entry of await readdir(snapshotsDir, { withFileTypes: true })) {
    const commitDir = join(snapshotsDir, entry.name);
    if (!entry.isDirectory()) {
      if (!IGNORED_IN_SNAPSHOTS.has(entry.name)) {
        problems.push({ kind: 'file-in-snapshots', path: rel(commitDir), message: `${entry.name} is a file directly in snapshots/` });
      }
      continue;
    }
    const revision: CachedRevision = { commit: entry.name, refs: (refsByCommit.get(entry.name) ?? []).sort(), files: [], size: 0 };
    const seenBlobs = new Set<string>();
    for (const filePath of await walk(commitDir)) {
      const path = relative(commitDir, filePath).split(sep).join('/');
      const info = await stat(filePath).catch(() => undefined);
      if (info === undefined) {
        problems.push({ kind: 'dangling-link', path: rel(filePath), message: `${path} in snapshot ${entry.name} points to a missing blob` });
        continue;
      }
      let blob: string | undefined;
      const link = await readlink(filePath).catch(() => undefined);
      if (link !== undefined && blobsReal !== undefined && resolve(dirname(filePath), link).startsWith(blobsDir + sep)) {
        blob = basename(link);
      }
      revision.files.push({ path, blob, size: info.size });
      const key = blob ?? `file:${path}`;
      if (!seenBlobs.has(key)) {
        seenBlobs.add(key);
        revision.size += info.size;
      }
    }
    revision.files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    repo.revisions.push(revision);
  }
  repo.revisions.sort((a, b) => (a.commit < b.commit ? -1 : 1));
  repo.blobs.sort((a, b) => (a.etag < b.etag ? -1 : 1));
  return repo;
}

/**
 * One repo folder (`models--acme--tiny`), read the same way as by scanHfCache: undefined when it is
 * missing or not a hub repo folder. `airlock serve` calls it per request, so the cache can change under it.
 */
export async function scanHfRepo(cacheDir: string, folder: string): Promise<{ repo: CachedRepo | undefined; problems: CacheProblem[] }> {
  const problems: CacheProblem[] = [];
  if (!(await isDirectory(join(cacheDir, folder)))) return { repo: undefined, problems };
  return { repo: await scanRepo(cacheDir, folder, problems), problems };
}

/** Lists every repo, revision, ref and blob, and what scan_cache_dir() would warn about. */
export async function scanHfCache(cacheDir: string): Promise<CacheScan> {
  let names: string[];
  try {
    names = await readdir(cacheDir);
  } catch (error) {
    // no cache yet (a fresh offline machine): an empty cache, not an error — the first delta cycle starts here
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { cacheDir, exists: false, repos: [], problems: [], sizeOnDisk: 0 };
    throw fsError(error, 'read the hub cache', cacheDir);
  }
  const problems: CacheProblem[] = [];
  const repos: CachedRepo[] = [];
  for (const name of names.sort()) {
    if (IGNORED_ROOT.has(name)) continue;
    if (!(await isDirectory(join(cacheDir, name)))) {
      problems.push({ kind: 'not-a-repo', path: name, message: `${name} is a file at the cache root` });
      continue;
    }
    const repo = await scanRepo(cacheDir, name, problems);
    if (repo) repos.push(repo);
  }
  return { cacheDir, exists: true, repos, problems, sizeOnDisk: repos.reduce((n, r) => n + r.sizeOnDisk, 0) };
}

const READ_CHUNK = 1024 * 1024;

/** Hashes a blob the way its name says: 40 hex → git blob SHA-1, 64 hex → SHA-256. */
export async function blobMatchesName(path: string, etag: string, size: number, scanner?: ContentScanner): Promise<{ ok: boolean; actual: string } | undefined> {
  const git = /^[0-9a-f]{40}$/.test(etag);
  if (!git && !/^[0-9a-f]{64}$/.test(etag)) return undefined;
  const digester = new Digester(git ? size : undefined);
  for await (const chunk of createReadStream(path, { highWaterMark: READ_CHUNK })) {
    digester.update(chunk as Buffer);
    // what loading the file would run, judged in the same read
    if (scanner !== undefined && !scanner.done) scanner.update(chunk as Buffer);
  }
  const digests = digester.digest();
  const actual = git ? digests.gitSha1! : digests.sha256;
  return { ok: actual === etag && digests.size === size, actual };
}

export interface CacheVerifyReport extends CacheScan {
  blobsChecked: number;
  bytesChecked: number;
  /** Content verdicts of the blobs that hold pickles or could not be analysed (built-in allow-list); named by a snapshot path. */
  content: Array<{ repo: string; path: string; blob: string } & Pick<ContentVerdict, 'verdict' | 'format' | 'globals' | 'unsafeGlobals' | 'problems' | 'notes'>>;
}

/** Re-hashes every blob against its name, offline; adds corrupted blobs to the scan's problems. */
export async function verifyHfCache(cacheDir: string, onBlob?: (blob: CachedBlob) => void): Promise<CacheVerifyReport> {
  const scan = await scanHfCache(cacheDir);
  let blobsChecked = 0;
  let bytesChecked = 0;
  const content: CacheVerifyReport['content'] = [];
  const allowed = allowList();
  for (const repo of scan.repos) {
    const pathOf = new Map<string, string>();
    for (const revision of repo.revisions) for (const f of revision.files) if (f.blob !== undefined && !pathOf.has(f.blob)) pathOf.set(f.blob, f.path);
    for (const blob of repo.blobs) {
      onBlob?.(blob);
      let result: Awaited<ReturnType<typeof blobMatchesName>>;
      const path = pathOf.get(blob.etag) ?? blob.etag;
      const scanner = new ContentScanner(path, blob.size);
      try {
        result = await blobMatchesName(blob.path, blob.etag, blob.size, scanner);
        const { verdict, format, globals, unsafeGlobals, problems, notes } = verdictOf(scanner.result(), allowed);
        if (verdict !== 'no-code' || notes.length > 0) content.push({ repo: `${repo.type === 'dataset' ? 'datasets/' : ''}${repo.id}`, path, blob: blob.etag, verdict, format, globals, unsafeGlobals, problems, notes });
      } catch (error) {
        scan.problems.push({ kind: 'unreadable', path: relative(cacheDir, blob.path), message: `cannot read blob: ${(error as Error).message}` });
        continue;
      }
      if (result === undefined) continue; // not an etag-named blob: nothing to compare with
      blobsChecked++;
      bytesChecked += blob.size;
      if (!result.ok) {
        scan.problems.push({
          kind: 'corrupted-blob',
          path: relative(cacheDir, blob.path),
          message: `${repo.type} ${repo.id}: blob ${blob.etag} hashes to ${result.actual}`,
        });
      }
    }
  }
  return { ...scan, blobsChecked, bytesChecked, content };
}
