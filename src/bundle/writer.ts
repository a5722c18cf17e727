/**
 * Writing a finished tar stream to its final place: `<out>.partial`, fsynced and renamed (so a crash
 * never leaves a file under the final name that looks complete but is not), or split volumes
 * `<out>.000`, … with their index. Export normally writes bundles in place (export/bundle-file.ts);
 * this is for a bundle copied as a whole (the rare re-layout when the leading entries outgrew their
 * reserve).
 */
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { basename } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import { fsError } from '../errors.js';
import { partPath, SplitSink, type PartsIndex } from './parts.js';

export interface BundleLeading {
  sums: Uint8Array;
  /** Armored detached signature; undefined for an explicitly unsigned bundle. */
  signature: string | undefined;
  manifest: Uint8Array;
}

export interface WrittenBundle {
  path: string;
  bytes: number;
  /** SHA-256 of the whole tar, when computed (split volumes, `export --sha256`). */
  sha256?: string;
  /** Present when the bundle was written as split volumes: the (unsigned) parts index. */
  parts?: PartsIndex;
}

const CHUNK = 1024 * 1024;

/** Writes the tar bytes of `source` to `outPath` (or its split volumes), hashing them on the way. */
/** `bundleBytes`: with `splitSize`, the tar's size (known up front), which fixes the width of the part names. */
export async function writeTar(outPath: string, source: AsyncIterable<Uint8Array>, splitSize?: number, bundleBytes?: number): Promise<WrittenBundle> {
  const hash = createHash('sha256');
  let bytes = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      bytes += chunk.byteLength;
      callback(null, chunk);
    },
  });
  if (splitSize !== undefined) {
    // built under a temporary name: the volumes of the bundle being replaced may still be open
    const temp = `${outPath}.relayout`;
    const split = new SplitSink(temp, splitSize, bundleBytes);
    try {
      await pipeline(Readable.from(source), tap, split);
      await split.publish();
      const index = split.index();
      for (let i = 0; i < index.parts.length; i++) await rename(split.partPath(i), partPath(outPath, i, index.parts.length));
      return { path: outPath, bytes, sha256: index.sha256, parts: { ...index, bundle: basename(outPath), parts: index.parts.map((p, i) => ({ ...p, name: basename(partPath(outPath, i, index.parts.length)) })) } };
    } catch (error) {
      await split.discard();
      throw fsError(error, 'write parts of', outPath);
    }
  }
  const partial = `${outPath}.relayout.partial`;
  try {
    // flush: fsync before close, so the rename below never publishes a bundle the disk does not hold
    await pipeline(Readable.from(source), tap, createWriteStream(partial, { mode: 0o644, highWaterMark: CHUNK, flush: true }));
    await rename(partial, outPath);
  } catch (error) {
    await rm(partial, { force: true });
    throw fsError(error, 'write', outPath);
  }
  return { path: outPath, bytes, sha256: hash.digest('hex') };
}
