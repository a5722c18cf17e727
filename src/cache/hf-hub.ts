/**
 * The Hugging Face hub cache (shared/specs/hf-hub.md §3): where it is, and committing verified, staged
 * files into it so that `from_pretrained(..., local_files_only=True)` finds them.
 *
 * Commits into one cache are serialised by a lock in `.locks` (src/fs/lock.ts). A new repo folder appears
 * with its `snapshots/`, and a new snapshot folder appears complete (both built in staging, one rename).
 * Commit order is blobs → snapshot links → refs (refs last), so an interrupted commit never leaves a
 * link to a missing blob nor a ref to a snapshot that is not complete. Every change goes through an
 * undo journal: when anything fails mid-way, the journal puts the cache back exactly as it was.
 *
 * Trust boundary: this module only ever receives files the bundle reader has already verified
 * (size, sha256, git blob id). Names come from a manifest that passed the safe-path checks; on top of
 * that every directory we traverse or create is checked to be a real directory (never a symlink), so
 * nothing is written outside `<cache>/<repo folder>/`, whatever the cache already holds.
 */
import { sha256File, type ChunkObserver } from '../integrity/file-hash.js';
import { mkdir, open, readlink, rename, stat, symlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { AirlockError, fsError } from '../errors.js';
import type { ManifestFile, ManifestRepo, RepoType } from '../bundle/manifest.js';
import { COMMIT_RE } from '../fs/safe-path.js';
import { fsyncDir, symlinkAtomic, UndoJournal, writeNewFile, rollBackAndThrow } from '../fs/atomic.js';
import { checkRealDirs, ensureRealDirs, lstatIfExists } from '../fs/tree.js';
import { acquireLock } from '../fs/lock.js';
import { LOCKS_DIR } from '../fs/staging.js';

type Env = Readonly<Record<string, string | undefined>>;

/** Python's `os.path.expanduser` then `os.path.expandvars` (unknown variables stay as written). */
function expandPath(value: string, env: Env, home: string): string {
  let out = value;
  if (out === '~' || out.startsWith('~/')) out = home + out.slice(1);
  out = out.replace(/\$(\w+)|\$\{([^}]*)\}/g, (whole, plain: string | undefined, braced: string | undefined) => {
    const name = plain ?? braced ?? '';
    return env[name] ?? whole;
  });
  return resolve(out);
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

/**
 * The hub cache root, as huggingface_hub computes it: the flag, else HF_HUB_CACHE, else
 * HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
 * ~/.cache/huggingface/hub. `~` and `$VAR` are expanded; the result is absolute. (An empty variable
 * counts as unset.)
 */
export function resolveHfCacheDir(flag: string | undefined, env: Env, home: string = homedir()): string {
  const explicit = nonEmpty(flag) ?? nonEmpty(env['HF_HUB_CACHE']) ?? nonEmpty(env['HUGGINGFACE_HUB_CACHE']);
  if (explicit !== undefined) return expandPath(explicit, env, home);
  const hfHome = nonEmpty(env['HF_HOME']) ?? join(nonEmpty(env['XDG_CACHE_HOME']) ?? join('~', '.cache'), 'huggingface');
  return join(expandPath(hfHome, env, home), 'hub');
}

/** `models--acme--tiny`: `{type}s--{id with "/" → "--"}` (§3.1). */
export function repoFolderName(type: RepoType, id: string): string {
  return `${type}s--${id.split('/').join('--')}`;
}

/** Relative link from `snapshots/<commit>/<path>` to `blobs/<etag>`: `../` × (2 + slashes in path) (§3.3). */
export function snapshotLinkTarget(path: string, etag: string): string {
  const slashes = path.split('/').length - 1;
  return `${'../'.repeat(2 + slashes)}blobs/${etag}`;
}

/** What identifies a file on disk well enough to notice it was changed or replaced. */
export interface BlobIdentity {
  dev: number;
  ino: number;
  size: number;
  mtimeMs: number;
}

/**
 * Where a file's blob comes from: a verified copy in staging (moved into `blobs/` when needed), or the
 * blob already in the cache, which was hashed while the bundle was read and must still be that file.
 */
export type BlobSource = { kind: 'staged'; path: string } | { kind: 'existing'; identity: BlobIdentity };

export interface HfCommitFile {
  file: ManifestFile;
  source: BlobSource;
}

export interface HfCommitRepo {
  repo: ManifestRepo;
  files: HfCommitFile[];
}

export interface HfCommitOutcome {
  /** Absolute path of the repo folder. */
  folder: string;
  /** Files whose blob this commit put into the cache. */
  filesWritten: number;
  /** Files whose blob was already in the cache, complete and with the right sha256 (left untouched). */
  filesReused: number;
  /** Snapshot links created or corrected; 0 on a re-import. */
  linksWritten: number;
  /** Whether `refs/<revision>` was written (false when it already named the commit, or the revision is a commit). */
  refWritten: boolean;
}

export interface HfCommitOptions {
  cacheDir: string;
  repos: readonly HfCommitRepo[];
  /** Fresh temp paths on the cache's file system (the staging directory). */
  tempPath: (label: string) => string;
  /** Where replaced entries are kept until the commit ends (same file system); removed with staging. */
  asideDir: string;
  signal?: AbortSignal;
}

/** A directory sits where the commit must put a file or link. */
function directoryInTheWay(path: string, root: string): AirlockError {
  return new AirlockError('E_CACHE_CONFLICT', `${path} is a directory where airlock needs to put a file`, {
    subject: path,
    hint: `inspect ${path} and move it away if it is not needed, then run the import again (the cache at ${root} was left unchanged)`,
  });
}

/**
 * Whether an existing `blobs/<etag>` (a file, or a symlink into the shared blob store, which we follow
 * for this check only) holds exactly the file's content; its identity when it does. Python never
 * re-validates blobs; we do, since a truncated or corrupted blob would otherwise be linked as if it
 * were the verified file.
 */
async function matchingBlob(path: string, file: ManifestFile, observe?: ChunkObserver): Promise<BlobIdentity | undefined> {
  const identity = await blobIdentity(path);
  if (identity === undefined || identity.size !== file.size) return undefined;
  if ((await sha256File(path, observe)) !== file.sha256) return undefined;
  // hashed a file that was replaced meanwhile? then we know nothing about the one there now
  const after = await blobIdentity(path);
  return after !== undefined && sameIdentity(after, identity) ? identity : undefined;
}

/** stat (following a symlinked blob) → identity of a regular file; undefined if missing, dangling or not a file. */
async function blobIdentity(path: string): Promise<BlobIdentity | undefined> {
  let stats;
  try {
    stats = await stat(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR') return undefined; // dangling link
    throw fsError(error, 'inspect', path);
  }
  if (!stats.isFile()) return undefined;
  return { dev: stats.dev, ino: stats.ino, size: stats.size, mtimeMs: stats.mtimeMs };
}

function sameIdentity(a: BlobIdentity, b: BlobIdentity): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs;
}

/**
 * Before a payload entry is read: is its blob already in the cache, complete and correct? Then the
 * importer need not stage the bytes (it still verifies them). Reads only; the directories on the way
 * must be real directories (never follows a symlinked repo folder or `blobs`).
 */
export async function findExistingBlob(cacheDir: string, repo: ManifestRepo, file: ManifestFile, observe?: ChunkObserver): Promise<BlobIdentity | undefined> {
  const root = resolve(cacheDir);
  const folder = repoFolderName(repo.type, repo.id);
  await checkRealDirs(root, [folder, 'blobs'], root);
  const blobs = join(root, folder, 'blobs');
  if ((await lstatIfExists(blobs)) === undefined) return undefined;
  return matchingBlob(join(blobs, file.etag), file, observe);
}

async function readSmallFile(path: string, max: number): Promise<Buffer> {
  let handle;
  try {
    handle = await open(path, 'r');
    const buffer = Buffer.alloc(max);
    const { bytesRead } = await handle.read(buffer, 0, max, 0);
    return buffer.subarray(0, bytesRead);
  } catch (error) {
    throw fsError(error, 'read', path);
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

function refSegments(revision: string): string[] {
  return revision.split('/');
}

/**
 * Fails early (before a long bundle is streamed) on what would make the commit fail anyway: a repo
 * folder, `blobs`, `snapshots/<commit>` or `refs/…` directory that exists but is not a real directory,
 * two repos of one bundle that claim the same ref for different commits, and files that share a blob
 * name (etag) in one repo folder but not their content. Writes nothing.
 */
export async function precheckHfCache(cacheDir: string, repos: readonly ManifestRepo[]): Promise<void> {
  const root = resolve(cacheDir);
  const refs = new Map<string, string>();
  const blobs = new Map<string, ManifestFile>();
  for (const repo of repos) {
    const folder = repoFolderName(repo.type, repo.id);
    // one blob per etag and repo folder: files sharing an etag must be the same content
    for (const file of repo.files) {
      const key = `${folder}/blobs/${file.etag}`;
      const twin = blobs.get(key);
      if (twin !== undefined && (twin.sha256 !== file.sha256 || twin.size !== file.size)) {
        throw new AirlockError('E_MANIFEST_INVALID', `manifest.json gives ${file.path} and ${twin.path} of ${repo.id} the same etag ${file.etag} but different content`, {
          subject: key,
          hint: 'the bundle was not made by airlock or was altered; ask for a fresh export',
        });
      }
      blobs.set(key, file);
    }
    if (!COMMIT_RE.test(repo.revision)) {
      const key = `${folder}/refs/${repo.revision}`;
      const other = refs.get(key);
      if (other !== undefined && other !== repo.commit) {
        throw new AirlockError('E_MANIFEST_INVALID', `manifest.json pins ${repo.type} ${repo.id}@${repo.revision} to two commits (${other} and ${repo.commit})`, {
          subject: key,
          hint: 'the bundle cannot be imported as is; ask for a bundle with one commit per revision',
        });
      }
      refs.set(key, repo.commit);
    }
    await checkRealDirs(root, [folder, 'blobs'], root);
    await checkRealDirs(root, [folder, 'snapshots', repo.commit], root);
    if (!COMMIT_RE.test(repo.revision)) await checkRealDirs(root, [folder, 'refs', ...refSegments(repo.revision).slice(0, -1)], root);
  }
}

/**
 * Commits verified, staged files into the hub cache (§3.10), all or nothing. Returns one outcome per
 * repo, in the order given. On any failure (including an abort through `signal`), every change made so
 * far is rolled back, newest first, and the error is rethrown.
 */
export async function commitToHfCache(options: HfCommitOptions): Promise<HfCommitOutcome[]> {
  const root = resolve(options.cacheDir);
  // one commit at a time per cache: our rollback must never take away what another import relies on
  await ensureRealDirs(root, [LOCKS_DIR], undefined, root);
  const release = await acquireLock(join(root, LOCKS_DIR, COMMIT_LOCK), options.signal === undefined ? {} : { signal: options.signal });
  try {
    return await commitLocked(root, options);
  } finally {
    await release();
  }
}

/** The name of the commit lock in `<cache>/.locks` (the scanner skips `.locks`). */
export const COMMIT_LOCK = 'airlock-commit.lock';

async function commitLocked(root: string, options: HfCommitOptions): Promise<HfCommitOutcome[]> {
  const journal = new UndoJournal(options.asideDir);
  const checkpoint = (): void => options.signal?.throwIfAborted();
  const touched = new Set<string>();
  const syncTouched = async (): Promise<void> => {
    for (const dir of touched) await fsyncDir(dir);
    touched.clear();
  };

  try {
    const outcomes: HfCommitOutcome[] = [];
    // 1. blobs: reuse a complete, correct blob; else move the staged file in (replacing a bad one)
    const blobStates = new Map<string, 'written' | 'reused'>();
    for (const { repo, files } of options.repos) {
      checkpoint();
      const folder = await ensureRepoFolder(root, repoFolderName(repo.type, repo.id), journal, options);
      const blobs = await ensureRealDirs(folder, ['blobs'], journal, root);
      const outcome: HfCommitOutcome = { folder, filesWritten: 0, filesReused: 0, linksWritten: 0, refWritten: false };
      for (const { file, source } of files) {
        checkpoint();
        const blobPath = join(blobs, file.etag);
        let state = blobStates.get(blobPath);
        if (state === undefined) {
          state = await placeBlob(blobPath, file, source, journal, root);
          blobStates.set(blobPath, state);
          if (state === 'written') touched.add(blobs);
        }
        if (state === 'reused') outcome.filesReused += 1;
        else outcome.filesWritten += 1;
      }
      outcomes.push(outcome);
    }
    await syncTouched();

    // 2. snapshot links (the snapshot folder exists even for a repo with no files: snapshot_download needs it).
    // A NEW snapshot folder is built complete in staging and renamed into place in one step: a reader
    // pinning the commit (or a kill -9 mid-commit) never finds a half-linked snapshot folder.
    for (const [index, { repo, files }] of options.repos.entries()) {
      checkpoint();
      const outcome = outcomes[index]!;
      const snapshots = await ensureRealDirs(outcome.folder, ['snapshots'], journal, root);
      const whole = await placeNewSnapshot(join(snapshots, repo.commit), files, journal, options);
      if (whole) {
        outcome.linksWritten += files.length;
        touched.add(snapshots);
        continue;
      }
      const snapshot = await ensureRealDirs(outcome.folder, ['snapshots', repo.commit], journal, root);
      touched.add(snapshot);
      for (const { file } of files) {
        checkpoint();
        const segments = file.path.split('/');
        const dir = await ensureRealDirs(snapshot, segments.slice(0, -1), journal, root);
        const linkPath = join(dir, segments[segments.length - 1]!);
        if (await placeLink(linkPath, snapshotLinkTarget(file.path, file.etag), journal, options, root)) {
          outcome.linksWritten += 1;
          touched.add(dir);
        }
      }
    }
    await syncTouched();

    // 3. refs, last: a ref only ever names a complete snapshot
    for (const [index, { repo }] of options.repos.entries()) {
      if (COMMIT_RE.test(repo.revision)) continue; // a commit needs no ref (§3.4)
      checkpoint();
      const outcome = outcomes[index]!;
      const segments = refSegments(repo.revision);
      const dir = await ensureRealDirs(outcome.folder, ['refs', ...segments.slice(0, -1)], journal, root);
      const refPath = join(dir, segments[segments.length - 1]!);
      outcome.refWritten = await placeRef(refPath, repo.commit, journal, options, root);
      if (outcome.refWritten) touched.add(dir);
    }
    await syncTouched();
    journal.clear();
    return outcomes;
  } catch (error) {
    return rollBackAndThrow(journal, error, root, 'commit into', `the cache at ${root} may be inconsistent at the paths listed; remove those repo folders and import again`);
  }
}

async function placeBlob(blobPath: string, file: ManifestFile, source: BlobSource, journal: UndoJournal, root: string): Promise<'written' | 'reused'> {
  if (source.kind === 'existing') {
    // hashed while the bundle was read: it must still be that very file
    const now = await blobIdentity(blobPath);
    if (now !== undefined && sameIdentity(now, source.identity)) return 'reused';
    throw new AirlockError('E_CACHE_CONFLICT', `${blobPath} changed while the bundle was being read`, {
      subject: blobPath,
      hint: 'another process is writing to this cache; wait for it to finish and run the import again',
    });
  }
  const existing = await lstatIfExists(blobPath);
  if (existing === undefined) {
    try {
      await rename(source.path, blobPath);
    } catch (error) {
      throw fsError(error, 'move into place', blobPath);
    }
    journal.createdFile(blobPath);
    return 'written';
  }
  if (existing.isDirectory()) throw directoryInTheWay(blobPath, root);
  if ((await matchingBlob(blobPath, file)) !== undefined) return 'reused';
  // corrupted, truncated or dangling: replace the entry itself (never write through a symlinked blob)
  await journal.replace(source.path, blobPath);
  return 'written';
}

/**
 * The repo folder, a real directory. A NEW one appears with its `snapshots/` already inside (built in
 * staging, one rename): huggingface_hub's scanner reports a repo folder without `snapshots/` as corrupted,
 * so neither a concurrent scan nor a kill -9 right after creating the folder may ever see one.
 */
async function ensureRepoFolder(root: string, name: string, journal: UndoJournal, options: HfCommitOptions): Promise<string> {
  const folder = join(root, name);
  if ((await lstatIfExists(folder)) === undefined) {
    const temp = options.tempPath('repo');
    try {
      await mkdir(temp, { mode: 0o777 });
      await mkdir(join(temp, 'snapshots'), { mode: 0o777 });
    } catch (error) {
      throw fsError(error, 'create directory', temp);
    }
    try {
      await renameNoReplace(temp, folder);
      // undone as two rmdirs, never as a tree: a concurrent import may have put its files in by then
      journal.createdDir(folder);
      journal.createdDir(join(folder, 'snapshots'));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      // another import created it meanwhile: use theirs (checked below)
      if (code !== 'EEXIST' && code !== 'ENOTEMPTY') throw fsError(error, 'move into place', folder);
    }
  }
  return ensureRealDirs(root, [name], journal, root);
}

/**
 * When `snapshot` does not exist yet: builds the whole folder (links and sub-folders) in staging and
 * renames it into place (one atomic step). Returns false when the folder already exists (or appeared
 * meanwhile: another import of the same commit won the race), so the caller adds links one by one.
 */
async function placeNewSnapshot(snapshot: string, files: readonly HfCommitFile[], journal: UndoJournal, options: HfCommitOptions): Promise<boolean> {
  if ((await lstatIfExists(snapshot)) !== undefined) return false;
  const temp = options.tempPath('snapshot');
  try {
    await mkdir(temp, { mode: 0o777 });
    const made = new Set<string>([temp]);
    for (const { file } of files) {
      const segments = file.path.split('/');
      let dir = temp;
      for (const segment of segments.slice(0, -1)) {
        dir = join(dir, segment);
        if (!made.has(dir)) {
          await mkdir(dir, { mode: 0o777 });
          made.add(dir);
        }
      }
      await symlink(snapshotLinkTarget(file.path, file.etag), join(dir, segments[segments.length - 1]!));
    }
    for (const dir of made) await fsyncDir(dir);
  } catch (error) {
    throw fsError(error, 'build snapshot folder', temp);
  }
  try {
    await renameNoReplace(temp, snapshot);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' || code === 'ENOTEMPTY') return false; // staging cleanup removes temp
    throw fsError(error, 'move into place', snapshot);
  }
  journal.createdTree(snapshot);
  return true;
}

/**
 * rename(2) of a directory silently replaces an EMPTY directory at the target: another import may have
 * just created that (empty) snapshot folder and be about to fill it. Refuse to replace anything.
 */
async function renameNoReplace(from: string, to: string): Promise<void> {
  if ((await lstatIfExists(to)) !== undefined) throw Object.assign(new Error(`${to} exists`), { code: 'EEXIST' });
  await rename(from, to);
}

/** Returns true when it created or corrected the link, false when it already pointed at `target`. */
async function placeLink(linkPath: string, target: string, journal: UndoJournal, options: HfCommitOptions, root: string): Promise<boolean> {
  const existing = await lstatIfExists(linkPath);
  if (existing === undefined) {
    await symlinkAtomic(target, linkPath, options.asideDir);
    journal.createdFile(linkPath);
    return true;
  }
  if (existing.isDirectory()) throw directoryInTheWay(linkPath, root);
  if (existing.isSymbolicLink()) {
    const current = await readlink(linkPath).catch((error: unknown) => {
      throw fsError(error, 'read link', linkPath);
    });
    if (current === target) return false;
  }
  // a stale link, or a plain file (a no-symlink cache): replace it with the link
  const temp = options.tempPath('link');
  try {
    await symlink(target, temp);
  } catch (error) {
    throw fsError(error, 'create symlink', temp);
  }
  await journal.replace(temp, linkPath);
  return true;
}

/** `refs/<revision>` = the 40-hex commit, no newline, via temp + rename, only when it differs. */
async function placeRef(refPath: string, commit: string, journal: UndoJournal, options: HfCommitOptions, root: string): Promise<boolean> {
  const existing = await lstatIfExists(refPath);
  if (existing?.isDirectory()) throw directoryInTheWay(refPath, root);
  if (existing?.isFile() && existing.size === commit.length) {
    const current = await readSmallFile(refPath, commit.length);
    if (current.toString('latin1') === commit) return false;
  }
  const temp = options.tempPath('ref');
  await writeNewFile(temp, commit);
  await journal.place(temp, refPath, existing !== undefined);
  return true;
}
