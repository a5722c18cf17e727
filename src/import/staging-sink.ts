/**
 * The import's PayloadSink: writes each payload file, while the reader verifies it, into the staging
 * directory (on the target's file system). Bytes are verified but not stored when the content is already
 * in the target, complete and with the right sha256 (a re-import, or a new revision sharing files), or
 * when this bundle already staged the same blob (same repo folder and etag).
 *
 * The target layout decides what "already there" means: the hub cache's `blobs/<etag>` (hf), the file at
 * its place in the modelscope cache (modelscope) or in the local dir (dir).
 */
import { sha256File, type ChunkObserver } from '../integrity/file-hash.js';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { AirlockError, fsError } from '../errors.js';
import type { Manifest, ManifestFile, ManifestRepo } from '../bundle/manifest.js';
import { discardSink, type PayloadEntry, type PayloadSink, type PayloadTarget } from '../bundle/reader.js';
import { findExistingBlob, precheckHfCache, repoFolderName, type BlobIdentity, type BlobSource, type HfCommitRepo } from '../cache/hf-hub.js';
import { findExistingModelScopeFile, modelScopeRepoSegments } from '../cache/modelscope.js';
import type { Staging } from '../fs/staging.js';
import { FsyncBatch } from '../fs/atomic.js';
import { EarlyWriteback } from '../fs/writeback.js';
import { checkRealDirs, lstatIfExists } from '../fs/tree.js';
import { checkImportSpace } from './space.js';

export type ImportLayout = 'hf' | 'modelscope' | 'dir';

export interface StagingSinkOptions {
  layout?: ImportLayout;
  /** The target root: hub cache (hf), modelscope cache (modelscope), or the local dir (dir). Default: staging.cacheDir. */
  target?: string;
  /** Default true: refuse before the payload when the bytes to write do not fit. */
  spaceCheck?: boolean;
  /**
   * `import --repo`: only these repos are written (`org/name`, `datasets/org/name`, optionally
   * `@revision` or `@commit`). Every entry of the bundle is still verified; the others are discarded.
   */
  repos?: readonly string[] | undefined;
  /** Free bytes at a directory (injectable for tests). */
  freeBytes?: (dir: string) => Promise<number>;
  /** A staged file asks for write-back every this many bytes (default WRITEBACK_EVERY_BYTES; see EarlyWriteback). */
  writebackBytes?: number;
}

/** `DIR/<path>` already there as a regular file with the right content. */
async function findExistingPlainFile(localDir: string, file: ManifestFile, observe?: ChunkObserver): Promise<BlobIdentity | undefined> {
  const segments = file.path.split('/');
  await checkRealDirs(localDir, segments.slice(0, -1), localDir);
  const path = join(localDir, ...segments);
  const stats = await lstatIfExists(path);
  if (stats === undefined || !stats.isFile() || stats.size !== file.size) return undefined;
  if ((await sha256File(path, observe)) !== file.sha256) return undefined;
  const after = await lstatIfExists(path);
  if (after === undefined || after.dev !== stats.dev || after.ino !== stats.ino || after.size !== stats.size || after.mtimeMs !== stats.mtimeMs) return undefined;
  return { dev: stats.dev, ino: stats.ino, size: stats.size, mtimeMs: stats.mtimeMs };
}

export class StagingSink implements PayloadSink {
  readonly #staging: Staging;
  readonly #layout: ImportLayout;
  readonly #target: string;
  readonly #options: StagingSinkOptions;
  /** blob key → where the verified content is */
  readonly #sources = new Map<string, BlobSource>();
  /** Staged files are fsynced in the background, many at a time, instead of one blocking fsync each. */
  readonly #fsync = new FsyncBatch();
  /** Entries `adoptExisting` is reading from the target right now: opening them discards. */
  readonly #adopting = new Set<string>();

  /** Every staged file is on disk (or this throws, naming it). Call before committing. */
  async flush(): Promise<void> {
    await this.#fsync.settle();
  }

  constructor(staging: Staging, options: StagingSinkOptions = {}) {
    this.#staging = staging;
    this.#layout = options.layout ?? 'hf';
    this.#target = options.target ?? staging.cacheDir;
    this.#options = options;
  }

  /** hf: one blob per etag and repo folder; the other layouts place files by path. */
  #key(entry: Pick<PayloadEntry, 'repo' | 'file'>): string {
    const folder = repoFolderName(entry.repo.type, entry.repo.id);
    return this.#layout === 'hf' ? `${folder}/${entry.file.etag}` : `${folder}/${entry.file.path}`;
  }

  /** Cheap "already there" test for the space preflight: right name and size (content is checked later). */
  async #probablyPresent(repo: ManifestRepo, file: ManifestFile): Promise<boolean> {
    const path =
      this.#layout === 'hf'
        ? join(this.#target, repoFolderName(repo.type, repo.id), 'blobs', file.etag)
        : this.#layout === 'modelscope'
          ? join(this.#target, ...modelScopeRepoSegments(repo.type, repo.id), ...file.path.split('/'))
          : join(this.#target, ...file.path.split('/'));
    const stats = await lstatIfExists(path).catch(() => undefined);
    return stats !== undefined && stats.isFile() && stats.size === file.size;
  }

  #chosen: Set<ManifestRepo> | undefined;

  /** The repos this import writes (all of them unless `repos` narrowed it); throws for a selector matching none. */
  selected(manifest: Manifest): ManifestRepo[] {
    if (this.#chosen === undefined) {
      const selectors = this.#options.repos ?? [];
      if (selectors.length === 0) this.#chosen = new Set(manifest.repos);
      else {
        this.#chosen = new Set();
        for (const selector of selectors) {
          const m = /^(?:(models|datasets)\/)?([^@]+)(?:@(.+))?$/.exec(selector);
          const type = m?.[1] === 'datasets' ? 'dataset' : m?.[1] === 'models' ? 'model' : undefined;
          const hits = manifest.repos.filter(
            (r) => m !== null && r.id === m[2] && (type === undefined || r.type === type) && (m[3] === undefined || m[3] === r.revision || m[3] === r.commit),
          );
          if (hits.length === 0) {
            throw new AirlockError('E_USAGE', `--repo ${selector} matches nothing in this bundle`, {
              hint: `the bundle holds: ${manifest.repos.map((r) => `${r.type === 'dataset' ? 'datasets/' : ''}${r.id}@${r.revision}`).join(', ')}`,
            });
          }
          for (const hit of hits) this.#chosen.add(hit);
        }
      }
    }
    return manifest.repos.filter((r) => this.#chosen!.has(r));
  }

  /** Fail before streaming gigabytes when the target cannot take this bundle anyway. */
  async begin(whole: Manifest): Promise<void> {
    // only the chosen repos are checked against, and written to, the target
    const manifest: Manifest = { ...whole, repos: this.selected(whole) };
    if (this.#layout === 'hf') await precheckHfCache(this.#target, manifest.repos);
    else if (this.#layout === 'dir' && manifest.repos.length !== 1) {
      throw new AirlockError('E_USAGE', `--layout dir writes one repo into --local-dir, but the bundle holds ${manifest.repos.length}`, {
        hint: 'import this bundle with --layout hf (or modelscope), or export the repos as separate bundles',
      });
    } else if (this.#layout === 'modelscope') {
      const seen = new Map<string, string>();
      for (const repo of manifest.repos) {
        const key = modelScopeRepoSegments(repo.type, repo.id).join('/'); // refuses ids without an owner
        const other = seen.get(key);
        if (other !== undefined) {
          throw new AirlockError('E_CACHE_CONFLICT', `${repo.id}@${repo.revision} and @${other} would share the ModelScope folder ${key}`, {
            subject: key,
            hint: 'the modelscope layout holds one revision per repo: import with --layout hf instead',
          });
        }
        seen.set(key, repo.revision);
      }
    }
    await this.#checkReferences(manifest);
    if (this.#options.spaceCheck !== false) {
      const keys = new Set<string>();
      let bytes = 0;
      let files = 0;
      let presentBytes = 0;
      for (const repo of manifest.repos) {
        for (const file of repo.files) {
          const key = this.#key({ repo, file });
          if (keys.has(key) || file.reference) continue;
          keys.add(key);
          if (await this.#probablyPresent(repo, file)) presentBytes += file.size;
          else {
            bytes += file.size;
            files += 1;
          }
        }
      }
      await checkImportSpace(this.#staging.dir, this.#target, { bytes, files, presentBytes }, this.#options.freeBytes);
    }
  }

  /**
   * A delta bundle leaves out blobs the target already held when the inventory was made. Each one must
   * still be there and intact (re-hashed here, before any payload byte is read), or nothing is imported.
   */
  async #checkReferences(manifest: Manifest): Promise<void> {
    for (const repo of manifest.repos) {
      for (const file of repo.files) {
        if (!file.reference) continue;
        if (this.#layout !== 'hf') {
          throw new AirlockError('E_USAGE', `this is a delta bundle (${repo.id}/${file.path} is not in it); delta bundles import only into a Hugging Face cache`, {
            hint: 'import it with --layout hf into the cache the inventory (--have) was made from',
          });
        }
        const identity = await findExistingBlob(this.#target, repo, file);
        if (identity === undefined) {
          throw new AirlockError('E_DELTA_BASE_MISSING', `${repo.type} ${repo.id}: ${file.path} is not in this delta bundle, and ${this.#target} does not hold its blob ${file.etag} intact`, {
            subject: `${repo.id}/${file.path}`,
            hint: 'import the bundle that carried this file first (or ask for a full export, without --have); nothing was imported',
          });
        }
        this.#sources.set(this.#key({ repo, file }), { kind: 'existing', identity });
      }
    }
  }

  async #existing(entry: PayloadEntry, observe?: ChunkObserver): Promise<BlobIdentity | undefined> {
    switch (this.#layout) {
      case 'hf':
        return findExistingBlob(this.#target, entry.repo, entry.file, observe);
      case 'modelscope':
        return findExistingModelScopeFile(this.#target, entry.repo, entry.file, observe);
      case 'dir':
        return findExistingPlainFile(this.#target, entry.file, observe);
    }
  }

  /**
   * pull's warm path (see CommitSink.openExisting): `open(entry)` then `adoptExisting(entry, …)`. Between
   * the two, this entry opens as discarded: its bytes come from the target itself, not from a stream.
   */
  beginAdopting(entry: PayloadEntry): () => void {
    const key = this.#key(entry);
    this.#adopting.add(key);
    return () => this.#adopting.delete(key);
  }

  /**
   * Whether the target already holds the entry's file, intact: read once and hashed against the signed
   * SHA-256 (and unchanged meanwhile), every chunk handed to `observe`. When it does, that file is the
   * entry's source (nothing staged, nothing rewritten); otherwise nothing is recorded.
   */
  async adoptExisting(entry: PayloadEntry, observe: ChunkObserver): Promise<boolean> {
    const key = this.#key(entry);
    try {
      const identity = await this.#existing(entry, observe);
      if (identity === undefined) return false;
      this.#sources.set(key, { kind: 'existing', identity });
      return true;
    } finally {
      this.#adopting.delete(key);
    }
  }

  async open(entry: PayloadEntry): Promise<PayloadTarget> {
    if (this.#chosen !== undefined && !this.#chosen.has(entry.repo)) return discardSink.open(entry); // verified, not written
    const key = this.#key(entry);
    if (this.#sources.has(key) || this.#adopting.has(key)) return discardSink.open(entry);
    const identity = await this.#existing(entry);
    if (identity !== undefined) {
      this.#sources.set(key, { kind: 'existing', identity });
      return discardSink.open(entry);
    }
    const path = this.#staging.path('blob');
    let handle: FileHandle;
    try {
      // 0666 & ~umask: the mode the blob keeps once it is renamed into the cache
      handle = await open(path, 'wx', 0o666);
    } catch (error) {
      throw fsError(error, 'create staging file', path);
    }
    let closed = false;
    // the disk starts writing a big file while the rest of it still arrives (see EarlyWriteback)
    const writeback = new EarlyWriteback(handle, this.#options.writebackBytes);
    const close = async (): Promise<void> => {
      if (closed) return;
      closed = true;
      try {
        await writeback.settle();
      } finally {
        await handle.close();
      }
    };
    return {
      write: async (chunk: Buffer): Promise<void> => {
        let offset = 0;
        while (offset < chunk.byteLength) {
          const { bytesWritten } = await handle.write(chunk, offset, chunk.byteLength - offset);
          offset += bytesWritten;
        }
        writeback.wrote(chunk.byteLength);
      },
      finish: async (): Promise<void> => {
        try {
          await close();
        } catch (error) {
          throw fsError(error, 'write', path);
        }
        // durable before commit: flush() settles every staged file's fsync before anything is renamed
        this.#fsync.addPath(path);
        this.#sources.set(key, { kind: 'staged', path });
      },
      abort: async (): Promise<void> => {
        await close().catch(() => undefined);
        await unlink(path).catch(() => undefined);
      },
    };
  }

  /** After the whole bundle verified: what to commit, repo by repo. */
  plan(manifest: Manifest): HfCommitRepo[] {
    return this.selected(manifest).map((repo) => ({
      repo,
      files: repo.files.map((file) => {
        const source = this.#sources.get(this.#key({ repo, file }));
        if (source === undefined) throw new AirlockError('E_INTERNAL', `no verified content for ${repo.id}/${file.path}`);
        return { file, source };
      }),
    }));
  }
}
