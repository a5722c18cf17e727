/**
 * What the work dir remembers between runs of the same export, so an interrupted one continues:
 *
 * - `<work>/<type>s--<id>/refs/<revision>`: the commit the revision resolved to on the first run (like the
 *   HF cache's refs). A re-run stays pinned to it even if the branch moved meanwhile: the bundle then
 *   holds one consistent snapshot, never files from two commits.
 * - `<work>/<type>s--<id>/verified/<commit>.json`: per completed file its size, sha256, git blob id and
 *   the file's mtime and inode when it was verified. A re-run trusts a file whose size, mtime and inode
 *   still match and whose recorded hash is the one the listing expects — without reading it again; any
 *   other file in `files/` is re-hashed in full.
 *
 * Both are written atomically (temp + rename); a missing or unreadable record only costs a re-hash.
 */
import { lstat, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fsError } from '../errors.js';
import { randomSuffix } from '../fs/atomic.js';
import type { RemoteFile } from '../hub/types.js';
import type { Digests } from '../integrity/digest.js';

const COMMIT_RE = /^[0-9a-f]{40}$/;

export interface VerifiedRecord {
  size: number;
  sha256: string;
  gitSha1?: string | undefined;
  mtimeMs: number;
  ino: number;
}

async function writeAtomic(path: string, text: string): Promise<void> {
  const temp = `${path}.${randomSuffix()}.tmp`;
  try {
    await mkdir(dirname(path), { recursive: true });
    await writeFile(temp, text, { mode: 0o666 });
    await rename(temp, path);
  } catch (error) {
    throw fsError(error, 'write', path);
  }
}

/** A revision as one file name: `refs/pr/1` → `refs%2Fpr%2F1`. */
function refFile(repoDir: string, revision: string): string {
  return join(repoDir, 'refs', encodeURIComponent(revision));
}

/** The commit an earlier run pinned this revision to, if any. */
export async function readPinnedCommit(repoDir: string, revision: string): Promise<string | undefined> {
  try {
    const text = (await readFile(refFile(repoDir, revision), 'utf8')).trim();
    return COMMIT_RE.test(text) ? text : undefined;
  } catch {
    return undefined;
  }
}

export async function writePinnedCommit(repoDir: string, revision: string, commit: string): Promise<void> {
  await writeAtomic(refFile(repoDir, revision), commit);
}

export async function removePinnedCommit(repoDir: string, revision: string): Promise<void> {
  await rm(refFile(repoDir, revision), { force: true });
}

export class VerifiedFiles {
  readonly #path: string;
  readonly #records: Map<string, VerifiedRecord>;
  #saving: Promise<void> = Promise.resolve();

  private constructor(path: string, records: Map<string, VerifiedRecord>) {
    this.#path = path;
    this.#records = records;
  }

  /** Loads the record at `path`; an absent or damaged record is an empty one. */
  static async load(path: string): Promise<VerifiedFiles> {
    const records = new Map<string, VerifiedRecord>();
    try {
      const data = JSON.parse(await readFile(path, 'utf8')) as { files?: Record<string, VerifiedRecord> };
      for (const [name, r] of Object.entries(data.files ?? {})) {
        if (typeof r?.size === 'number' && typeof r.sha256 === 'string' && typeof r.mtimeMs === 'number' && typeof r.ino === 'number') {
          records.set(name, r);
        }
      }
    } catch {
      // nothing usable: files are re-hashed
    }
    return new VerifiedFiles(path, records);
  }

  /**
   * The digests of a completed file if the record vouches for it: same size, mtime and inode as when it
   * was verified, and the recorded hash is the one the listing names.
   */
  async check(localPath: string, file: RemoteFile): Promise<Digests | undefined> {
    const r = this.#records.get(file.path);
    if (r === undefined) return undefined;
    let info;
    try {
      info = await lstat(localPath);
    } catch {
      return undefined;
    }
    if (!info.isFile() || info.size !== file.size || r.size !== file.size || info.mtimeMs !== r.mtimeMs || info.ino !== r.ino) return undefined;
    if (file.lfsSha256 !== undefined ? r.sha256 !== file.lfsSha256 : r.gitSha1 !== file.blobId) return undefined;
    return { size: r.size, sha256: r.sha256, ...(r.gitSha1 !== undefined ? { gitSha1: r.gitSha1 } : {}) };
  }

  /** Records a verified file (after it is in place) and saves the record. */
  async add(localPath: string, file: RemoteFile, digests: Digests): Promise<void> {
    let info;
    try {
      info = await lstat(localPath);
    } catch (error) {
      throw fsError(error, 'inspect', localPath);
    }
    this.#records.set(file.path, { size: digests.size, sha256: digests.sha256, gitSha1: digests.gitSha1, mtimeMs: info.mtimeMs, ino: info.ino });
    await this.save();
  }

  /** Saves are serialised: concurrent downloads finish in any order. */
  save(): Promise<void> {
    const text = `${JSON.stringify({ files: Object.fromEntries(this.#records) })}\n`;
    this.#saving = this.#saving.catch(() => undefined).then(() => writeAtomic(this.#path, text));
    return this.#saving;
  }
}
