/**
 * Free-space preflight on import (issue 6 §2): the payload bytes this import still has to write (files
 * already present in the target, by the cheap test "right name and size", do not count; the full check
 * happens while streaming) against the free space of the target's file system, where staging lives too.
 * Runs after the manifest verified and before the first payload byte is read.
 */
import { statfs } from 'node:fs/promises';
import { AirlockError } from '../errors.js';
import { formatBytes } from '../format.js';

/** Per-file allowance for block rounding and metadata (links, .metadata files, .msc). */
const PER_FILE_SLACK = 8 * 1024;
const SLACK_BYTES = 1024 * 1024;

const human = (bytes: number): string => formatBytes(bytes, 1);

export interface ImportSpaceNeed {
  /** Payload bytes to write. */
  bytes: number;
  /** Files to write. */
  files: number;
  /** Bytes already present in the target (reported, not needed). */
  presentBytes: number;
}

export async function freeBytesAt(dir: string): Promise<number> {
  const fs = await statfs(dir);
  return fs.bavail * fs.bsize;
}

/** Throws E_NO_SPACE with the numbers when `need` does not fit at `dir` (the staging directory, on the target's file system). */
export async function checkImportSpace(dir: string, target: string, need: ImportSpaceNeed, free: (dir: string) => Promise<number> = freeBytesAt): Promise<void> {
  const available = await free(dir);
  const needed = need.bytes + need.files * PER_FILE_SLACK + SLACK_BYTES;
  if (needed > available) {
    throw new AirlockError(
      'E_NO_SPACE',
      `not enough free space for this import in ${target}: ${human(needed)} needed (${human(need.bytes)} of payload in ${need.files} files to write` +
        `${need.presentBytes > 0 ? `, ${human(need.presentBytes)} already present` : ''}), ${human(available)} free`,
      {
        subject: target,
        hint: 'free some space on that file system or import into another one (--cache-dir / --local-dir); --no-space-check skips this check. Nothing was written.',
        details: { target, neededBytes: needed, payloadBytes: need.bytes, presentBytes: need.presentBytes, freeBytes: available },
      },
    );
  }
}
