/**
 * Free-space preflight: before downloading, what remains to be downloaded must fit in the work dir, and
 * the bundle (about the size of all files) in the output dir — both on the same file system if they
 * share one. Refusing early beats failing with ENOSPC at 95 % of a 400 GB export.
 */
import { statfs, stat, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { AirlockError } from '../errors.js';
import { formatBytes } from '../format.js';

export interface SpaceNeed {
  /** Bytes still to download into the work dir. */
  workBytes: number;
  /** Bytes of the bundle to write in the output dir. */
  outputBytes: number;
}

/**
 * Margin for file-system overhead (extent and indirect blocks, the work dir's small records): 1 MiB
 * plus 1/256 of the bytes, at most 64 MiB. The needs themselves are exact — export writes the bundle
 * in place (tar headers and leading entries are part of its size), so a 67 MiB bundle needs ~68 MiB,
 * not twice that.
 */
export function slackFor(bytes: number): number {
  return Math.min(64 * 1024 * 1024, 1024 * 1024 + Math.ceil(bytes / 256));
}

const human = (bytes: number): string => formatBytes(bytes, 1);

/** The nearest existing ancestor (the work dir may not exist yet). */
async function existing(path: string): Promise<string> {
  let p = path;
  for (;;) {
    try {
      await stat(p);
      return p;
    } catch {
      const parent = dirname(p);
      if (parent === p) return p;
      p = parent;
    }
  }
}

/** Throws E_NO_SPACE naming the directory, the need and what is free. `freeBytes` is injectable for tests. */
export async function checkFreeSpace(
  workDir: string,
  outDir: string,
  need: SpaceNeed,
  freeBytes: (dir: string) => Promise<{ free: number; device: number }> = defaultFree,
): Promise<void> {
  await mkdir(workDir, { recursive: true }).catch(() => undefined);
  const work = await freeBytes(await existing(workDir));
  const out = await freeBytes(await existing(outDir));
  const checks =
    work.device === out.device
      ? [{ dir: workDir, needed: need.workBytes + need.outputBytes + slackFor(need.workBytes + need.outputBytes), free: work.free, what: 'the remaining downloads and the bundle (same file system)' }]
      : [
          { dir: workDir, needed: need.workBytes + slackFor(need.workBytes), free: work.free, what: 'the remaining downloads' },
          { dir: outDir, needed: need.outputBytes + slackFor(need.outputBytes), free: out.free, what: 'the bundle' },
        ];
  for (const c of checks) {
    if (c.needed > c.free) {
      throw new AirlockError('E_NO_SPACE', `not enough free space in ${c.dir}: ${human(c.needed)} needed for ${c.what}, ${human(c.free)} free`, {
        subject: c.dir,
        hint: 'free some space, or choose other places with --work-dir / -o; --no-space-check skips this check',
      });
    }
  }
}

async function defaultFree(dir: string): Promise<{ free: number; device: number }> {
  const [fs, info] = await Promise.all([statfs(dir), stat(dir)]);
  return { free: fs.bavail * fs.bsize, device: info.dev };
}
