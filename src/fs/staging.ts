/**
 * The staging directory of one import: `<cache>/.locks/airlock-staging-<random>/`.
 *
 * Why there: it must be on the cache's own file system so that committing a verified file is a
 * rename (atomic, no second copy), and it must be somewhere huggingface_hub's scanner ignores, which
 * is `.locks` (the scanner skips it; Python only puts empty `*.lock` files in it). Nothing in it is
 * ever visible under a repo folder until it has been verified.
 *
 * `cleanup()` removes the staging directory, and `.locks` and the cache root (and any parents of it)
 * too when this import created them and they are empty again, so a failed first import into a
 * fresh machine leaves no trace at all.
 */
import { mkdir, rm, rmdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { AirlockError, fsError } from '../errors.js';
import { randomSuffix } from './atomic.js';
import { describeStats, lstatIfExists } from './tree.js';

export const LOCKS_DIR = '.locks';
export const STAGING_PREFIX = 'airlock-staging-';

export interface Staging {
  /** The cache root, as given (resolved). */
  readonly cacheDir: string;
  /** The staging directory itself. */
  readonly dir: string;
  /** A fresh, unused path inside the staging directory (nothing is created). */
  path(label: string): string;
  /** Removes everything this staging created. Idempotent; returns what it could not remove (never throws). */
  cleanup(): Promise<string[]>;
}

/** Directories from `first` down to `last` (both included), `first` being an ancestor of (or equal to) `last`. */
function chain(first: string, last: string): string[] {
  const out: string[] = [];
  for (let dir = last; ; dir = dirname(dir)) {
    out.push(dir);
    if (dir === first || dirname(dir) === dir) break;
  }
  return out; // deepest first
}

export async function createStaging(cacheDirInput: string): Promise<Staging> {
  const cacheDir = resolve(cacheDirInput);
  // the root may be a symlink to a bigger disk (common): follow it, but it must end in a directory
  const rootStats = await stat(cacheDir).catch((error: unknown) => {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fsError(error, 'inspect', cacheDir);
  });
  if (rootStats !== undefined && !rootStats.isDirectory()) {
    throw new AirlockError('E_CACHE_CONFLICT', `the hub cache ${cacheDir} is ${describeStats(rootStats)}, not a directory`, {
      subject: cacheDir,
      hint: 'point --cache-dir (or HF_HUB_CACHE) at a directory',
    });
  }

  const createdRoot: string[] = [];
  if (rootStats === undefined) {
    let first: string | undefined;
    try {
      first = await mkdir(cacheDir, { recursive: true, mode: 0o777 });
    } catch (error) {
      throw fsError(error, 'create the hub cache directory', cacheDir);
    }
    if (first !== undefined) createdRoot.push(...chain(resolve(first), cacheDir));
  }

  const locks = join(cacheDir, LOCKS_DIR);
  let createdLocks = false;
  const removeCreated = async (): Promise<string[]> => {
    const failures: string[] = [];
    // only if empty again: a lock file or repo folder someone (or this import) put there stays
    for (const dir of [...(createdLocks ? [locks] : []), ...createdRoot]) {
      try {
        await rmdir(dir);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOTEMPTY' || code === 'EEXIST') break;
        if (code !== 'ENOENT') failures.push(`${dir}: ${(error as Error).message}`);
      }
    }
    return failures;
  };

  try {
    const locksStats = await lstatIfExists(locks);
    if (locksStats === undefined) {
      try {
        await mkdir(locks, { mode: 0o777 });
        createdLocks = true;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError(error, 'create directory', locks);
      }
    } else if (!locksStats.isDirectory()) {
      // a symlinked .locks could put staging on another file system, or somewhere hostile
      throw new AirlockError('E_CACHE_CONFLICT', `${locks} is ${describeStats(locksStats)}, not a directory`, {
        subject: locks,
        hint: `airlock stages imports in ${locks}; make it a plain directory (or remove it) and run the import again`,
      });
    }
  } catch (error) {
    await removeCreated();
    throw error;
  }

  const dir = join(locks, `${STAGING_PREFIX}${randomSuffix()}`);
  try {
    // private while it holds unverified bytes
    await mkdir(dir, { mode: 0o700 });
  } catch (error) {
    await removeCreated();
    throw fsError(error, 'create staging directory', dir);
  }

  let counter = 0;
  let cleaned: Promise<string[]> | undefined;
  return {
    cacheDir,
    dir,
    path(label: string): string {
      counter += 1;
      return join(dir, `${counter}-${label}`);
    },
    cleanup(): Promise<string[]> {
      cleaned ??= (async () => {
        const failures: string[] = [];
        try {
          await rm(dir, { recursive: true, force: true, maxRetries: 3 });
        } catch (error) {
          failures.push(`${dir}: ${(error as Error).message}`);
        }
        failures.push(...(await removeCreated()));
        return failures;
      })();
      return cleaned;
    },
  };
}
