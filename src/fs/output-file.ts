/**
 * Files a command writes at a path the user names (`cache inventory --out`, `verify/import --report`):
 * one rule, as `export -o` has — an existing file is refused unless the user passed --force, and the
 * path is checked BEFORE the work (a verdict is never lost because its record cannot be written).
 * `-` means standard output; the CLI handles it, this module never sees it.
 */
import { constants } from 'node:fs';
import { access, lstat, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { AirlockError, fsError } from '../errors.js';
import { writeFileAtomic } from './atomic.js';

export const STDOUT_PATH = '-';

/** Refuses now what writeOutputFile would refuse later: an existing file (without force), a missing or unwritable folder. */
export async function checkOutputFile(path: string, flag: string, force: boolean): Promise<void> {
  const existing = await lstat(path).catch(() => undefined);
  if (existing?.isDirectory()) {
    throw new AirlockError('E_USAGE', `${flag} ${path} is a directory`, { subject: path, hint: `give ${flag} a file name` });
  }
  if (existing !== undefined && !force) {
    throw new AirlockError('E_OUTPUT_EXISTS', `${path} already exists; refusing to overwrite it (${flag})`, {
      subject: path,
      hint: `choose another ${flag} path, or pass --force to replace it`,
    });
  }
  const folder = dirname(path);
  const info = await stat(folder).catch((error: unknown) => {
    throw (error as NodeJS.ErrnoException).code === 'ENOENT'
      ? new AirlockError('E_USAGE', `${flag} ${path}: the folder ${folder} does not exist`, { subject: folder, hint: 'create it first, or choose another path' })
      : fsError(error, 'check', folder);
  });
  if (!info.isDirectory()) throw new AirlockError('E_USAGE', `${flag} ${path}: ${folder} is not a folder`, { subject: folder });
  try {
    await access(folder, constants.W_OK);
  } catch (error) {
    throw fsError(error, `write ${flag} into`, folder);
  }
}

/** Writes atomically (temp name, rename); refuses an existing file unless force (checked again: it may have appeared meanwhile). */
export async function writeOutputFile(path: string, data: string | Uint8Array, flag: string, force: boolean): Promise<void> {
  if (!force && (await lstat(path).catch(() => undefined)) !== undefined) {
    throw new AirlockError('E_OUTPUT_EXISTS', `${path} already exists; refusing to overwrite it (${flag})`, {
      subject: path,
      hint: `choose another ${flag} path, or pass --force to replace it`,
    });
  }
  await writeFileAtomic(path, data);
}
