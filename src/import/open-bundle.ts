/** Opens a bundle file for one sequential read with large (1 MiB) reads. */
import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { AirlockError, fsError } from '../errors.js';
import { BUNDLE_READ_CHUNK } from '../bundle/reader.js';

export async function openBundle(path: string): Promise<Readable> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new AirlockError('E_NOT_FOUND', `bundle not found: ${path}`, {
        subject: path,
        hint: 'check the path; a bundle is the single .airlock.tar file `airlock export` wrote',
        cause: error,
      });
    }
    throw fsError(error, 'open', path);
  }
  try {
    if ((await handle.stat()).isDirectory()) {
      throw new AirlockError('E_USAGE', `${path} is a directory, not a bundle`, {
        subject: path,
        hint: 'pass the .airlock.tar file itself',
      });
    }
  } catch (error) {
    await handle.close().catch(() => undefined);
    throw fsError(error, 'inspect', path);
  }
  // the stream owns the handle from here on and closes it on end, error or destroy
  return handle.createReadStream({ highWaterMark: BUNDLE_READ_CHUNK });
}
