/**
 * Writes a bundle in one sequential pass: the three leading entries, then every payload file streamed
 * from the work dir. Output goes to `<out>.partial`, is fsynced and renamed, so a crash never leaves a
 * file under the final name that looks complete but is not.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import { pack as tarPack, type Header } from 'tar-stream';
import { AirlockError, fsError } from '../errors.js';
import { SplitSink, type PartsIndex } from './parts.js';
import { ENTRY_MODE, ENTRY_MTIME, MANIFEST_NAME, SIGNATURE_NAME, SUMS_NAME, compareBytes } from './format.js';

export interface BundleLeading {
  sums: Uint8Array;
  /** Armored detached signature; undefined for an explicitly unsigned bundle. */
  signature: string | undefined;
  manifest: Uint8Array;
}

export interface BundlePayloadFile {
  /** Tar entry name (`payload/…`). */
  name: string;
  /** The file on disk holding the verified content. */
  localPath: string;
  size: number;
}

export interface WrittenBundle {
  path: string;
  bytes: number;
  sha256: string;
  /** Present when the bundle was written as split volumes: the (unsigned) parts index. */
  parts?: PartsIndex;
}

export interface WriteOptions {
  /** Write `NAME.tar.000`, `.001`, … of at most this many bytes instead of one file. */
  splitSize?: number;
}

const READ_CHUNK = 1024 * 1024;

function header(name: string, size: number): Header {
  return { name, size, mode: ENTRY_MODE, mtime: ENTRY_MTIME, uid: 0, gid: 0, uname: '', gname: '', type: 'file', linkname: '', devmajor: 0, devminor: 0 };
}

export async function writeBundle(outPath: string, leading: BundleLeading, files: readonly BundlePayloadFile[], options: WriteOptions = {}): Promise<WrittenBundle> {
  const ordered = [...files].sort((a, b) => compareBytes(a.name, b.name));
  const partial = `${outPath}.partial`;
  const tar = tarPack();
  const hash = createHash('sha256');
  let bytes = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      bytes += chunk.byteLength;
      callback(null, chunk);
    },
  });

  const feed = async (): Promise<void> => {
    const addBuffer = (name: string, data: Uint8Array): Promise<void> =>
      new Promise((resolve, reject) => {
        tar.entry(header(name, data.byteLength), Buffer.from(data), (error) => (error ? reject(error) : resolve()));
      });
    await addBuffer(SUMS_NAME, leading.sums);
    if (leading.signature !== undefined) await addBuffer(SIGNATURE_NAME, Buffer.from(leading.signature, 'utf8'));
    await addBuffer(MANIFEST_NAME, leading.manifest);
    for (const file of ordered) {
      // the work file must still be what was hashed: a size change means someone touched it
      const info = await stat(file.localPath).catch((error: unknown) => {
        throw fsError(error, 'read', file.localPath);
      });
      if (info.size !== file.size) {
        throw new AirlockError('E_IO', `${file.localPath} changed size since it was verified (${info.size} bytes, expected ${file.size})`, {
          subject: file.localPath,
          hint: 'something modified the work dir during export; run the export again',
        });
      }
      const entry = tar.entry(header(file.name, file.size));
      await pipeline(createReadStream(file.localPath, { highWaterMark: READ_CHUNK }), entry);
    }
    tar.finalize();
  };

  const feeding = (): Promise<void> =>
    feed().catch((error: unknown) => {
      tar.destroy(error as Error);
      throw error;
    });

  if (options.splitSize !== undefined) {
    const split = new SplitSink(outPath, options.splitSize);
    try {
      await Promise.all([feeding(), pipeline(tar, tap, split)]);
      await split.publish();
    } catch (error) {
      await split.discard();
      throw fsError(error, 'write parts of', outPath);
    }
    const parts = split.index();
    return { path: outPath, bytes, sha256: parts.sha256, parts };
  }

  try {
    // flush: fsync before close, so the rename below never publishes a bundle the disk does not hold
    const sink = createWriteStream(partial, { mode: 0o644, highWaterMark: READ_CHUNK, flush: true });
    await Promise.all([feeding(), pipeline(tar, tap, sink)]);
  } catch (error) {
    await rm(partial, { force: true });
    throw fsError(error, 'write', partial);
  }
  try {
    await rename(partial, outPath);
  } catch (error) {
    await rm(partial, { force: true });
    throw fsError(error, 'rename into place', outPath);
  }
  return { path: outPath, bytes, sha256: hash.digest('hex') };
}
