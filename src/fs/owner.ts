/**
 * Who owns a staging directory or a lock: a short tag of this host and a process id, so that a later
 * import can tell the leftovers of a dead process (kill -9, power cut) from the work of a live one.
 * Another host's leftovers (a cache on a shared file system) are never judged: their pids mean nothing here.
 */
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';

/** 8 hex of the host name. */
export function hostTag(): string {
  return createHash('sha256').update(hostname()).digest('hex').slice(0, 8);
}

/** Whether a process with this pid exists on this host (EPERM: it exists, but is not ours). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** `<host tag>-<pid>`: the owner part of names and lock contents. */
export function ownerTag(): string {
  return `${hostTag()}-${process.pid}`;
}

/** True when `tag` (`<host tag>-<pid>…`) names a process of this host that no longer exists. */
export function ownerIsDead(tag: string): boolean {
  const m = /^([0-9a-f]{8})-([0-9]+)(?:-|$)/.exec(tag);
  if (m === null || m[1] !== hostTag()) return false;
  const pid = Number(m[2]);
  return Number.isSafeInteger(pid) && pid > 0 && !processAlive(pid);
}
