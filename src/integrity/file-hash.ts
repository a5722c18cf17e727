/** SHA-256 of a file on disk, read in 1 MiB pieces (for content already staged or in a cache). */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { fsError } from '../errors.js';

/** Sees every chunk of the hash pass, in order (pull's checks of a file already in the target). */
export type ChunkObserver = (chunk: Buffer) => void | Promise<void>;

export async function sha256File(path: string, observe?: ChunkObserver): Promise<string> {
  const hash = createHash('sha256');
  const stream = createReadStream(path, { highWaterMark: 1024 * 1024 });
  const chunks = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  try {
    for (;;) {
      let next: IteratorResult<Buffer>;
      try {
        next = await chunks.next();
      } catch (error) {
        throw fsError(error, 'read', path);
      }
      if (next.done === true) break;
      hash.update(next.value);
      // the observer's own failure (a check that refuses) is its error, not a read error of this file
      if (observe !== undefined) await observe(next.value);
    }
  } finally {
    stream.destroy();
  }
  return hash.digest('hex');
}
