/**
 * Node's recursive mkdir reports ENOENT when the real failure is elsewhere — on a read-only file system
 * (`mkdir -p /ro/x`) it says "no such file or directory", which sends the user looking for a typo.
 * This finds the real reason: it repeats the first missing step alone, whose errno is the kernel's own.
 */
import { mkdir, rmdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';

export async function realMkdirError(error: unknown, path: string): Promise<unknown> {
  if ((error as NodeJS.ErrnoException | undefined)?.code !== 'ENOENT') return error;
  let first = path;
  for (;;) {
    const parent = dirname(first);
    if (parent === first) return error;
    const info = await stat(parent).catch(() => undefined);
    if (info !== undefined) {
      if (!info.isDirectory()) return error;
      break;
    }
    first = parent;
  }
  try {
    await mkdir(first);
  } catch (real) {
    return real;
  }
  await rmdir(first).catch(() => undefined); // it worked this time: leave nothing behind
  return error;
}
