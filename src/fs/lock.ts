/**
 * A cross-process lock for the short commit step of an import: a symlink whose target text names the
 * owner (`<host tag>-<pid>-<random>`). symlink(2) creates it atomically with its content, so there is
 * never a lock without an owner, even after kill -9. A lock whose owner is a dead process of this host
 * is taken over; any other lock is waited for (polling, abortable), up to a time limit.
 *
 * Why: a commit that fails rolls back what it created. Without the lock, a second import could reuse a
 * blob or snapshot folder the first one had just created, and then lose it to the first one's rollback.
 * Commits are serialised; staging (the long part) still runs in parallel.
 */
import { readlink, rename, symlink, unlink } from 'node:fs/promises';
import { AirlockError, fsError } from '../errors.js';
import { randomSuffix } from './atomic.js';
import { ownerIsDead, ownerTag } from './owner.js';

export interface LockOptions {
  signal?: AbortSignal;
  /** Give up after this long (default 10 minutes). */
  timeoutMs?: number;
  /** Poll interval while waiting (default 50 ms). */
  pollMs?: number;
}

/** Takes the lock at `path`; resolves to its release function (idempotent, never throws). */
export async function acquireLock(path: string, options: LockOptions = {}): Promise<() => Promise<void>> {
  const owner = `${ownerTag()}-${randomSuffix()}`;
  const timeoutMs = options.timeoutMs ?? 10 * 60 * 1000;
  const pollMs = options.pollMs ?? 50;
  const started = Date.now();
  for (;;) {
    options.signal?.throwIfAborted();
    try {
      await symlink(owner, path);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError(error, 'create lock', path);
    }
    const holder = await readlink(path).catch(() => undefined);
    if (holder !== undefined && ownerIsDead(holder)) {
      await dropStaleLock(path, holder);
      continue;
    }
    if (Date.now() - started > timeoutMs) {
      throw new AirlockError('E_CACHE_CONFLICT', `another import holds ${path} (${holder ?? 'unknown owner'}) for more than ${Math.round(timeoutMs / 1000)} s`, {
        subject: path,
        hint: 'wait for the other import to finish; if none is running (another host may share this cache), remove the lock and run the import again',
      });
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    const holder = await readlink(path).catch(() => undefined);
    if (holder === owner) await unlink(path).catch(() => undefined);
  };
}

/** The pid in a lock holder's tag (`<host tag>-<pid>-<random>`), if it is one. */
export function holderPid(holder: string): number | undefined {
  const m = /^[0-9a-f]{8}-([0-9]+)(?:-|$)/.exec(holder);
  return m === null ? undefined : Number(m[1]);
}

/**
 * Takes the lock at `path` without waiting (export: a second export to the same output is refused,
 * not queued): its release function, or — when a live process holds it — that holder's tag
 * (`undefined` if it could not be read). A lock left by a dead process of this host is taken over,
 * as acquireLock does.
 */
export async function tryAcquireLock(path: string): Promise<{ release: () => Promise<void> } | { holder: string | undefined }> {
  const owner = `${ownerTag()}-${randomSuffix()}`;
  for (let tries = 0; ; tries++) {
    try {
      await symlink(owner, path);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError(error, 'create lock', path);
    }
    const holder = await readlink(path).catch(() => undefined);
    if (tries < 3 && (holder === undefined || ownerIsDead(holder))) {
      if (holder !== undefined) await dropStaleLock(path, holder);
      continue;
    }
    return { holder };
  }
  let released = false;
  return {
    release: async () => {
      if (released) return;
      released = true;
      const holder = await readlink(path).catch(() => undefined);
      if (holder === owner) await unlink(path).catch(() => undefined);
    },
  };
}

/** Takes over a dead owner's lock: moved aside first, dropped only if it is still the dead one (never a fresh lock). */
async function dropStaleLock(path: string, holder: string): Promise<void> {
  const aside = `${path}.stale-${randomSuffix()}`;
  try {
    await rename(path, aside);
    const moved = await readlink(aside).catch(() => undefined);
    if (moved === holder) await unlink(aside).catch(() => undefined);
    else await rename(aside, path).catch(() => undefined); // raced with a fresh owner: put it back
  } catch {
    // someone else took it over first
  }
}
