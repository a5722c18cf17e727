/**
 * Walking down into a directory tree we are about to write, without ever following a symlink: each
 * component must be a real directory (checked with lstat), or be created by us (and journalled).
 * This is what keeps a hostile or odd cache (a `blobs` that links to /etc, a snapshot folder that is a
 * file) from redirecting our writes outside the folder we meant to write.
 */
import type { Stats } from 'node:fs';
import { lstat, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { AirlockError, fsError } from '../errors.js';
import type { UndoJournal } from './atomic.js';

/** lstat that answers undefined for a missing path (and throws an AirlockError for anything else). */
export async function lstatIfExists(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fsError(error, 'inspect', path);
  }
}

export function describeStats(stats: Stats): string {
  if (stats.isSymbolicLink()) return 'a symlink';
  if (stats.isDirectory()) return 'a directory';
  if (stats.isFile()) return 'a regular file';
  return 'a special file';
}

export function notADirectory(path: string, stats: Stats, root: string): AirlockError {
  return new AirlockError('E_CACHE_CONFLICT', `${path} is ${describeStats(stats)}, not a directory`, {
    subject: path,
    hint: `airlock never writes through symlinks or over unexpected files; inspect ${path}, move it away if it is not needed, and run the import again (the cache at ${root} was left unchanged)`,
  });
}

/**
 * Ensures `base/seg1/seg2/…` exist as real directories, creating missing ones with mode 0777 & ~umask
 * and recording each creation in `journal` (when given). `base` itself must already be a real directory.
 * Returns the full path.
 */
export async function ensureRealDirs(base: string, segments: readonly string[], journal: UndoJournal | undefined, root: string): Promise<string> {
  let current = base;
  for (const segment of segments) {
    current = join(current, segment);
    let stats = await lstatIfExists(current);
    if (stats === undefined) {
      try {
        await mkdir(current, { mode: 0o777 });
        journal?.createdDir(current);
        continue;
      } catch (error) {
        // someone else created it in the meantime: fall through and check what it is
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError(error, 'create directory', current);
        stats = await lstat(current).catch((e: unknown) => {
          throw fsError(e, 'inspect', current);
        });
      }
    }
    if (!stats.isDirectory()) throw notADirectory(current, stats, root);
  }
  return current;
}

/** Checks (without creating anything) that every existing component of `base/segments…` is a real directory. */
export async function checkRealDirs(base: string, segments: readonly string[], root: string): Promise<void> {
  let current = base;
  for (const segment of segments) {
    current = join(current, segment);
    const stats = await lstatIfExists(current);
    if (stats === undefined) return;
    if (!stats.isDirectory()) throw notADirectory(current, stats, root);
  }
}
