/**
 * The local Hugging Face hub cache as a HubClient (`airlock export --from-cache acme/tiny-llm[@rev]`), so
 * the exporter stays one path: resolve = `refs/<revision>` (or a commit folder under `snapshots/`),
 * list = walk `snapshots/<commit>/` where every file must be a link into the repo's own `blobs/`
 * (the etag is the blob's name: 64 hex = LFS sha256, 40 hex = git blob id), download = copy the blob
 * while re-hashing it and compare with its name. A dangling link, a link out of `blobs/`, a blob that is
 * not a regular file, or one whose bytes do not match its name is refused, naming the file.
 *
 * Recorded in the manifest as source kind `hf-cache` with endpoint `file:///<cache>/<models--org--name>`.
 */
import { createReadStream } from 'node:fs';
import { lstat, open, readdir, readFile, readlink, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { AirlockError, fsError } from '../../errors.js';
import { COMMIT_RE, unsafeRelativePathReason } from '../../fs/safe-path.js';
import { Digester, type Digests } from '../../integrity/digest.js';
import { repoFolderName } from '../../cache/hf-hub.js';
import { lfsPointerBlobId } from '../modelscope/wire.js';
import { formatRepoRef } from '../repo-ref.js';
import type { DownloadProgress, HubClient, RemoteFile, RepoRef } from '../types.js';

export interface HfCacheClientOptions {
  /** The hub cache root (resolveHfCacheDir). */
  cacheDir: string;
}

export interface HfCacheClient extends HubClient {
  readonly cacheDir: string;
}

const ETAG_RE = /^([0-9a-f]{40}|[0-9a-f]{64})$/;

function corrupt(path: string, message: string, repoFolder: string): AirlockError {
  return new AirlockError('E_CACHE_CORRUPT', `${path}: ${message}`, {
    subject: path,
    hint: `the cached snapshot in ${repoFolder} is incomplete or damaged; download it again (e.g. huggingface_hub.snapshot_download) and re-run the export`,
  });
}

export function createHfCacheClient(options: HfCacheClientOptions): HfCacheClient {
  const cacheDir = resolve(options.cacheDir);
  const folderOf = (repo: RepoRef): string => join(cacheDir, repoFolderName(repo.type, repo.id));
  /** path in repo → blob path, per snapshot listed */
  const blobs = new Map<string, string>();
  const key = (repo: RepoRef, commit: string, path: string): string => `${repo.type}\0${repo.id}\0${commit}\0${path}`;

  async function requireRepo(repo: RepoRef): Promise<string> {
    const folder = folderOf(repo);
    const info = await stat(folder).catch(() => undefined);
    if (info === undefined || !info.isDirectory()) {
      throw new AirlockError('E_REPO_NOT_FOUND', `${formatRepoRef(repo, false)} is not in the hub cache ${cacheDir} (no ${repoFolderName(repo.type, repo.id)} folder)`, {
        subject: folder,
        hint: 'check the repo id and --cache-dir / HF_HUB_CACHE / HF_HOME; `airlock cache list` shows what is there',
      });
    }
    return folder;
  }

  return {
    kind: 'hf-cache',
    cacheDir,
    get endpoint(): string {
      return pathToFileURL(cacheDir).href;
    },

    async resolveCommit(repo: RepoRef): Promise<string> {
      const folder = await requireRepo(repo);
      if (COMMIT_RE.test(repo.revision)) {
        const snap = await stat(join(folder, 'snapshots', repo.revision)).catch(() => undefined);
        if (snap?.isDirectory() === true) return repo.revision;
      }
      const reason = unsafeRelativePathReason(repo.revision);
      const refPath = join(folder, 'refs', ...repo.revision.split('/'));
      const text = reason === undefined ? await readFile(refPath, 'utf8').catch(() => undefined) : undefined;
      const commit = text?.trim();
      if (commit === undefined || !COMMIT_RE.test(commit)) {
        const refs = await readdir(join(folder, 'refs')).catch(() => [] as string[]);
        const snaps = await readdir(join(folder, 'snapshots')).catch(() => [] as string[]);
        throw new AirlockError('E_REVISION_NOT_FOUND', `${formatRepoRef(repo)}: the hub cache has no ref or snapshot ${JSON.stringify(repo.revision)}`, {
          subject: refPath,
          hint: `cached refs: ${refs.join(', ') || 'none'}; cached commits: ${snaps.join(', ') || 'none'}`,
        });
      }
      return commit;
    },

    async listFiles(repo: RepoRef, commit: string): Promise<RemoteFile[]> {
      const folder = await requireRepo(repo);
      const blobsDir = join(folder, 'blobs');
      const root = join(folder, 'snapshots', commit);
      const rootInfo = await lstat(root).catch(() => undefined);
      if (rootInfo === undefined || !rootInfo.isDirectory()) {
        throw new AirlockError('E_REVISION_NOT_FOUND', `${formatRepoRef(repo)}: refs name commit ${commit}, but ${root} is missing`, {
          subject: root,
          hint: 'the cached snapshot is incomplete; download it again and re-run the export',
        });
      }
      const files: RemoteFile[] = [];
      const walk = async (dir: string): Promise<void> => {
        let entries;
        try {
          entries = await readdir(dir, { withFileTypes: true });
        } catch (error) {
          throw fsError(error, 'list', dir);
        }
        for (const entry of entries) {
          const full = join(dir, entry.name);
          const path = relative(root, full).split(sep).join('/');
          if (entry.isDirectory()) {
            await walk(full);
            continue;
          }
          if (!entry.isSymbolicLink()) throw corrupt(full, 'is not a link into blobs/ (airlock exports only snapshots laid out by huggingface_hub)', folder);
          const target = resolve(dirname(full), await readlink(full));
          if (dirname(target) !== blobsDir) throw corrupt(full, `links outside the repo's blobs/ folder (to ${target})`, folder);
          const etag = target.slice(blobsDir.length + 1);
          if (!ETAG_RE.test(etag)) throw corrupt(full, `links to blobs/${etag}, which is not a blob name`, folder);
          const info = await lstat(target).catch(() => undefined);
          if (info === undefined) throw corrupt(full, `dangling link: blobs/${etag} is missing`, folder);
          if (!info.isFile()) throw corrupt(full, `blobs/${etag} is not a regular file`, folder);
          const reason = unsafeRelativePathReason(path);
          if (reason !== undefined) throw corrupt(full, reason, folder);
          blobs.set(key(repo, commit, path), target);
          if (etag.length === 64) files.push({ path, size: info.size, blobId: lfsPointerBlobId(etag, info.size), lfsSha256: etag });
          else files.push({ path, size: info.size, blobId: etag });
        }
      };
      await walk(root);
      return files;
    },

    async download(repo: RepoRef, commit: string, file: RemoteFile, destination: string, onProgress?: DownloadProgress): Promise<Digests> {
      const blob = blobs.get(key(repo, commit, file.path));
      if (blob === undefined) throw new AirlockError('E_INTERNAL', `${file.path} was not listed from the cache`);
      const digester = new Digester(file.lfsSha256 === undefined ? file.size : undefined);
      const out = await open(destination, 'w', 0o644).catch((error: unknown) => {
        throw fsError(error, 'create', destination);
      });
      try {
        for await (const chunk of createReadStream(blob, { highWaterMark: 1024 * 1024 })) {
          const buffer = chunk as Buffer;
          digester.update(buffer);
          let offset = 0;
          while (offset < buffer.byteLength) offset += (await out.write(buffer, offset)).bytesWritten;
          onProgress?.(buffer.byteLength);
        }
        await out.sync();
      } catch (error) {
        throw fsError(error, 'copy', blob);
      } finally {
        await out.close().catch(() => undefined);
      }
      const digests = digester.digest();
      const actual = file.lfsSha256 !== undefined ? digests.sha256 : digests.gitSha1;
      const expected = file.lfsSha256 ?? file.blobId;
      if (digests.size !== file.size || actual !== expected) {
        throw corrupt(join(folderOf(repo), 'snapshots', commit, ...file.path.split('/')), `the blob's content does not match its name ${expected} (${digests.size} bytes, hash ${actual}): the cache is corrupt`, folderOf(repo));
      }
      return digests;
    },
  };
}
