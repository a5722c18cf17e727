/**
 * Split volumes read WITHOUT their index (`NAME.parts.json` or its signature was not copied).
 *
 * The index only lets a reader name a damaged part early; it is not what makes the bundle
 * trustworthy: the signed SHA256SUMS inside the tar covers the manifest and every payload byte, and
 * the tar structure around them is checked by the reader. So the parts found on disk are read in
 * the order of their numeric suffix as one stream, and the tar inside is verified exactly as a
 * single-file bundle is. What is lost is only the diagnosis: a failure cannot be traced to a part,
 * and every error says so.
 *
 * Parts are recognised by a numeric suffix of 3 or more digits (`NAME.tar.000`, `NAME.tar.0000`), and
 * must be numbered 0…n-1 with no gap and no number twice (`.001` next to `.0001`), so a part that was
 * not copied is named whenever it is not the last one. Nothing is ever modified.
 */
import { createReadStream } from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { AirlockError, fsError } from '../errors.js';
import { indexPathFor, type PartsStream } from './parts.js';
import { pooledStream, readPooled, type ReadPool } from './read-pool.js';

const READ_CHUNK = 1024 * 1024;

export interface FoundPart {
  name: string;
  path: string;
  size: number;
}

/** Why the index is not used. */
export type MissingIndex = 'missing' | 'unsigned';

/** Attached to the stream of an index-less read, for the CLI's notice. */
export interface UnindexedRead {
  index: string;
  reason: MissingIndex;
  parts: number;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The parts of `bundlePath` (`NAME.tar`) on disk, in order; refuses a gap or a number seen twice. */
export async function findParts(bundlePath: string): Promise<FoundPart[]> {
  const dir = dirname(bundlePath);
  const base = basename(bundlePath);
  const names = await readdir(dir).catch((error: unknown) => {
    throw fsError(error, 'read', dir);
  });
  const pattern = new RegExp(`^${escapeRegExp(base)}\\.(\\d{3,})$`);
  const byNumber = new Map<number, string>();
  for (const name of names) {
    const m = pattern.exec(name);
    if (!m) continue;
    const n = Number(m[1]);
    const other = byNumber.get(n);
    if (other !== undefined) {
      throw new AirlockError('E_DUPLICATE_ENTRY', `${other} and ${name} both claim to be part ${n} of ${base}`, {
        subject: join(dir, name),
        hint: 'parts of two copies are mixed in this folder; keep one set of parts per bundle',
      });
    }
    byNumber.set(n, name);
  }
  if (byNumber.size === 0) {
    // nothing at all: neither the index the user may have named nor any part
    throw new AirlockError('E_NOT_FOUND', `no bundle ${base}: neither its index ${basename(indexPathFor(bundlePath))} nor parts ${base}.000, ${base}.001, … are in ${dir}`, {
      subject: bundlePath,
      hint: `check the path (\`ls ${dir}\`): a split bundle is its index NAME.parts.json next to parts NAME.tar.000, NAME.tar.001, …`,
    });
  }
  const parts: FoundPart[] = [];
  for (let i = 0; i < byNumber.size; i++) {
    const name = byNumber.get(i);
    if (name === undefined) {
      const width = [...byNumber.values()][0]!.length - base.length - 1;
      throw new AirlockError('E_MISSING_ENTRY', `part ${base}.${String(i).padStart(width, '0')} is missing (found ${byNumber.size} parts, numbered up to ${Math.max(...byNumber.keys())})`, {
        subject: join(dir, `${base}.${String(i).padStart(width, '0')}`),
        hint: 'copy every part from the source media',
      });
    }
    const path = join(dir, name);
    const info = await stat(path).catch((error: unknown) => {
      throw fsError(error, 'read', path);
    });
    parts.push({ name, path, size: info.size });
  }
  return parts;
}

const NOTE = 'which part is damaged cannot be told without the index';

/** The error of an index-less read, saying plainly that the damaged part cannot be named. */
function unindexedError(error: unknown, read: UnindexedRead): unknown {
  if (!(error instanceof AirlockError) || error.code === 'E_UNSIGNED' || error.code.startsWith('E_SIGNATURE') || error.code === 'E_NOT_ENOUGH_SIGNATURES') return error;
  return new AirlockError(error.code, `${error.message} (split volumes read as one stream: ${read.index} ${read.reason === 'missing' ? 'is missing' : 'has no signature'}, so ${NOTE})`, {
    ...(error.subject === undefined ? {} : { subject: error.subject }),
    hint: `the signed SHA256SUMS inside the tar refused the joined parts; copy ${read.index} and its .asc to learn which part is damaged, or copy all ${read.parts} parts again (a missing last part shows as a truncated tar)`,
    details: error.details,
    cause: error,
  });
}

/** The parts as one stream, read in place; errors downstream are explained by `diagnose`. */
export function readPartsWithoutIndex(parts: readonly FoundPart[], read: UnindexedRead, pool?: ReadPool): PartsStream & { unindexed: UnindexedRead } {
  async function* chunks(): AsyncGenerator<Buffer> {
    for (const part of parts) {
      const handle = pool === undefined ? undefined : await open(part.path, 'r');
      try {
        const source: AsyncIterable<Buffer> = handle === undefined ? createReadStream(part.path, { highWaterMark: READ_CHUNK }) : readPooled(handle, pool!);
        for await (const buffer of source) yield buffer;
      } finally {
        await handle?.close();
      }
    }
  }
  const stream = (pool === undefined ? Readable.from(chunks(), { objectMode: false, highWaterMark: READ_CHUNK }) : pooledStream(chunks())) as PartsStream & { unindexed: UnindexedRead };
  stream.diagnose = async (error: unknown): Promise<unknown> => unindexedError(error, read);
  stream.unindexed = read;
  return stream;
}

/** The index-less read behind a bundle source, if it is one (for the CLI's notice). */
export function unindexedReadOf(source: Readable): UnindexedRead | undefined {
  return (source as Partial<{ unindexed: UnindexedRead }>).unindexed;
}
