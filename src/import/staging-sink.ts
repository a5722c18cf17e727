/**
 * The import's PayloadSink: writes each payload file, while the reader verifies it, into the staging
 * directory (on the cache's file system). Bytes are verified but not stored when the blob is already
 * in the cache, complete and with the right sha256 (a re-import, or a new revision sharing files), or
 * when this bundle already staged the same blob (same repo folder and etag).
 */
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { AirlockError, fsError } from '../errors.js';
import type { Manifest } from '../bundle/manifest.js';
import { discardSink, type PayloadEntry, type PayloadSink, type PayloadTarget } from '../bundle/reader.js';
import { findExistingBlob, precheckHfCache, repoFolderName, type BlobSource, type HfCommitRepo } from '../cache/hf-hub.js';
import type { Staging } from '../fs/staging.js';

function blobKey(entry: Pick<PayloadEntry, 'repo' | 'file'>): string {
  return `${repoFolderName(entry.repo.type, entry.repo.id)}/${entry.file.etag}`;
}

export class StagingSink implements PayloadSink {
  readonly #staging: Staging;
  /** blob key → where the verified content is */
  readonly #sources = new Map<string, BlobSource>();

  constructor(staging: Staging) {
    this.#staging = staging;
  }

  /** Fail before streaming gigabytes when the cache cannot take this bundle anyway. */
  async begin(manifest: Manifest): Promise<void> {
    await precheckHfCache(this.#staging.cacheDir, manifest.repos);
  }

  async open(entry: PayloadEntry): Promise<PayloadTarget> {
    const key = blobKey(entry);
    if (this.#sources.has(key)) return discardSink.open(entry);
    const identity = await findExistingBlob(this.#staging.cacheDir, entry.repo, entry.file);
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
    const close = async (): Promise<void> => {
      if (closed) return;
      closed = true;
      await handle.close();
    };
    return {
      write: async (chunk: Buffer): Promise<void> => {
        let offset = 0;
        while (offset < chunk.byteLength) {
          const { bytesWritten } = await handle.write(chunk, offset, chunk.byteLength - offset);
          offset += bytesWritten;
        }
      },
      finish: async (): Promise<void> => {
        try {
          await handle.sync();
          await close();
        } catch (error) {
          throw fsError(error, 'write', path);
        }
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
    return manifest.repos.map((repo) => ({
      repo,
      files: repo.files.map((file) => {
        const source = this.#sources.get(blobKey({ repo, file }));
        if (source === undefined) throw new AirlockError('E_INTERNAL', `no verified content for ${repo.id}/${file.path}`);
        return { file, source };
      }),
    }));
  }
}
