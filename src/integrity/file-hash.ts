/** SHA-256 of a file on disk, read in 1 MiB pieces (for content already staged or in a cache). */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { fsError } from '../errors.js';

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
  } catch (error) {
    throw fsError(error, 'read', path);
  }
  return hash.digest('hex');
}
