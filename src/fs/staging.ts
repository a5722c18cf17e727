/**
 * The staging directory of one import: `<cache>/.locks/airlock-staging-<host>-<pid>-<random>/`.
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
import { lstat, mkdir, readdir, rm, rmdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { AirlockError, fsError } from '../errors.js';
import { randomSuffix } from './atomic.js';
import { ownerIsDead, ownerTag } from './owner.js';
import { describeStats, lstatIfExists } from './tree.js';
import { realMkdirError } from './mkdir-error.js';

export const LOCKS_DIR = '.locks';
export const STAGING_PREFIX = 'airlock-staging-';
/** A staging directory whose name says no owner is only assumed abandoned after this long. */
const UNOWNED_GRACE_MS = 60 * 60 * 1000;

/** `airlock-staging-<host tag>-<pid>-<random>` */
function stagingName(): string {
  return `${STAGING_PREFIX}${ownerTag()}-${randomSuffix()}`;
}

/**
 * Removes staging directories of imports that died without cleaning up (kill -9, power cut): their
 * name says they belong to a process of this host that is gone, or (no owner in the name) they are over
 * an hour old.
 * Staging of a live import, or of another host sharing the cache, is never touched. Best effort: returns
 * the names removed and never throws (the next import tries again).
 */
export async function sweepStaleStaging(locks: string, except?: string): Promise<string[]> {
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(locks);
  } catch {
    return removed;
  }
  for (const name of names) {
    if (!name.startsWith(STAGING_PREFIX)) continue;
    const dir = join(locks, name);
    if (dir === except) continue;
    try {
      const stats = await lstat(dir);
      if (!stats.isDirectory()) continue;
      const owner = name.slice(STAGING_PREFIX.length);
      // the name says who owns it; old-style names (no owner) only after a grace period
      const stale = /^[0-9a-f]{8}-[0-9]+-[0-9a-f]+$/.test(owner) ? ownerIsDead(owner) : Date.now() - stats.mtimeMs > UNOWNED_GRACE_MS;
      if (!stale) continue;
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
      removed.push(name);
    } catch {
      // someone else removed it meanwhile, or we may not: leave it for the next run
    }
  }
  return removed;
}

export interface Staging {
  /** The cache root, as given (resolved). */
  readonly cacheDir: string;
  /** The staging directory itself. */
  readonly dir: string;
  /** Staging directories of dead imports that this one removed. */
  readonly swept: readonly string[];
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
      throw fsError(await realMkdirError(error, cacheDir), 'create the hub cache directory', cacheDir);
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

  const ensureLocks = async (): Promise<void> => {
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
  };

  const dir = join(locks, stagingName());
  for (let attempt = 1; ; attempt++) {
    try {
      await ensureLocks();
      // private while it holds unverified bytes
      await mkdir(dir, { mode: 0o700 });
      break;
    } catch (error) {
      // another import that had created .locks removed it again (empty) between our two steps
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' && attempt < 5) continue;
      await removeCreated();
      throw error instanceof AirlockError ? error : fsError(error, 'create staging directory', dir);
    }
  }

  // leftovers of an import that was killed (kill -9, power cut) would otherwise pile up, gigabytes each
  const swept = await sweepStaleStaging(locks, dir);

  let counter = 0;
  let cleaned: Promise<string[]> | undefined;
  return {
    cacheDir,
    dir,
    swept,
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
