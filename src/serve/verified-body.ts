/**
 * Sends a file's bytes only as far as they are proven: every response that carries the file's LAST
 * byte has the whole file hashed for it (the part before a range is walked without being sent) and
 * compares the digest with the name the file is stored under before that last byte leaves. On a mismatch
 * the connection is cut short of `Content-Length`: the client sees a short read and fails, it never holds
 * a complete, good-looking wrong file. The file is then marked bad (by device, inode, size and times)
 * until something replaces it — a re-import writes a new inode.
 *
 * SHA-256-named files (LFS, ModelScope) are walked in aligned chunks through `ChunkChains`, so concurrent
 * responses for the same file share one hash pass (see shared-chunks.ts for why that keeps the rule
 * exact). Git-SHA-1-named files (small, not LFS) are hashed per response, SHA-1 only.
 *
 * A range that stops before the end cannot complete a file by itself and is sent as read, unless the
 * file is already known bad.
 */
import type { FileHandle } from 'node:fs/promises';
import { open, realpath } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { sep } from 'node:path';
import { CHUNK, ChunkChains, ShortRead, type ChunkEntry } from './shared-chunks.js';
import { ThreadHasher, type ChunkSource } from './chain-hasher.js';

/**
 * Per process: the shared chains of every file being served, and their buffer pool. Chunks are read and
 * hashed by one thread of their own (the main thread only writes to sockets): measured on 2 cores, one
 * client of a 512 MiB file went from ≈1.4 s to ≈0.9 s at the same CPU time (docs/performance.md).
 */
const chains = new ChunkChains({ hasher: new ThreadHasher() });
const pool = chains.pool;

export type Expected = { kind: 'sha256'; hex: string } | { kind: 'git-sha1'; hex: string };

export function expectedFromEtag(etag: string): Expected {
  return etag.length === 64 ? { kind: 'sha256', hex: etag } : { kind: 'git-sha1', hex: etag };
}

export interface ByteRange {
  start: number;
  /** Inclusive. */
  end: number;
}

/** `bytes=a-b`, `bytes=a-`, `bytes=-n` (one range only; several → whole file). 'unsatisfiable' → 416. */
export function parseRange(header: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return undefined;
  const [, a, b] = m;
  if (a === '' && b === '') return undefined;
  if (a === '') {
    const n = Number(b);
    if (n === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  let end = b === '' ? size - 1 : Number(b);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start >= size || end < start) return 'unsatisfiable';
  if (end > size - 1) end = size - 1;
  return { start, end };
}

/** Files found bad while serving, keyed by identity so that a replaced file is served again. */
export class BadFiles {
  readonly #bad = new Map<string, string>();

  static identity(st: { dev: number; ino: number; size: number; mtimeMs: number; ctimeMs: number }): string {
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
  }

  isBad(path: string, identity: string): boolean {
    return this.#bad.get(path) === identity;
  }

  mark(path: string, identity: string): void {
    this.#bad.set(path, identity);
  }

  get size(): number {
    return this.#bad.size;
  }
}

export type OpenOutcome =
  | { kind: 'ok'; handle: FileHandle; realPath: string; identity: string; size: number }
  | { kind: 'outside' }
  | { kind: 'missing' }
  | { kind: 'bad' }
  | { kind: 'size-mismatch'; actual: number };

/**
 * Opens a file for serving after checking that its real path stays under `root` (links out of the
 * cache are refused), that it has the size the listing announced, and that it is not known bad.
 */
export async function openServable(path: string, root: string, size: number, bad: BadFiles): Promise<OpenOutcome> {
  let real: string;
  let rootReal: string;
  try {
    [real, rootReal] = await Promise.all([realpath(path), realpath(root)]);
  } catch {
    return { kind: 'missing' };
  }
  if (!real.startsWith(rootReal + sep)) return { kind: 'outside' };
  let handle: FileHandle;
  try {
    handle = await open(real, 'r');
  } catch {
    return { kind: 'missing' };
  }
  const st = await handle.stat();
  if (!st.isFile()) {
    await handle.close();
    return { kind: 'missing' };
  }
  const identity = BadFiles.identity(st);
  if (bad.isBad(real, identity)) {
    await handle.close();
    return { kind: 'bad' };
  }
  if (st.size !== size) {
    await handle.close();
    return { kind: 'size-mismatch', actual: st.size };
  }
  return { kind: 'ok', handle, realPath: real, identity, size };
}

function waitDrain(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

export type BodyOutcome = { kind: 'sent'; bytes: number } | { kind: 'mismatch'; bytes: number; actual: string } | { kind: 'aborted'; bytes: number };

/** Reads `into.length` bytes at `position` (fewer only at the end of the file). */
async function readFully(handle: FileHandle, into: Buffer, position: number): Promise<number> {
  let got = 0;
  while (got < into.length) {
    const { bytesRead } = await handle.read(into, got, into.length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

/**
 * Streams `range` (or the whole file) of an opened file into `res` (headers already set by the caller,
 * not yet sent), hashing as described above. Closes the handle. On a mismatch the socket is destroyed.
 * `identity` (BadFiles.identity of the opened file) lets concurrent responses share one hash pass.
 */
export async function sendVerifiedBody(res: ServerResponse, handle: FileHandle, size: number, range: ByteRange | undefined, expected: Expected, identity?: string): Promise<BodyOutcome> {
  const start = range?.start ?? 0;
  const end = range?.end ?? size - 1;
  try {
    if (size === 0) {
      const actual = expected.kind === 'git-sha1' ? createHash('sha1').update('blob 0\0').digest('hex') : createHash('sha256').digest('hex');
      if (actual !== expected.hex) {
        res.destroy();
        return { kind: 'mismatch', bytes: 0, actual };
      }
      res.end();
      return { kind: 'sent', bytes: 0 };
    }
    if (end === size - 1 && expected.kind === 'sha256') return await sendShared(res, handle, size, start, expected.hex, identity ?? `unshared:${sharedKeys++}`);
    return await sendPrivate(res, handle, size, start, end, end === size - 1 ? expected.hex : undefined);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

let sharedKeys = 0;

/**
 * A response that reaches the last byte of a SHA-256-named file: walks every chunk of the file on a
 * shared chain (chunks before `start` are hashed, not sent), reading one chunk ahead of the one being
 * written, and checks the last entry's digest before writing the last chunk.
 */
async function sendShared(res: ServerResponse, handle: FileHandle, size: number, start: number, expectedHex: string, key: string): Promise<BodyOutcome> {
  const last = Math.floor((size - 1) / CHUNK);
  const lengthOf = (k: number) => Math.min(CHUNK, size - k * CHUNK);
  const reader = chains.reader(key);
  // reads (and fills) issued on this handle; all settle before the handle is closed (other responses
  // may be waiting on them)
  const pending = new Set<Promise<unknown>>();
  const source: ChunkSource = {
    handle,
    read: (into, position) => readFully(handle, into, position),
    track: (work) => {
      pending.add(work);
      const done = () => pending.delete(work);
      work.then(done, done);
      return work;
    },
  };
  let cur: Promise<ChunkEntry> | undefined = reader.take(undefined, 0, lengthOf(0), source);
  let next: Promise<ChunkEntry> | undefined;
  let sent = 0;
  try {
    for (let k = 0; k <= last; k++) {
      const entry: ChunkEntry = await cur!;
      cur = undefined;
      // taken while this chunk is awaited and written: its read (or its wait for a chain) overlaps ours
      if (k < last) next = reader.take(entry, k + 1, lengthOf(k + 1), source);
      try {
        await entry.ready;
      } catch (error) {
        entry.release();
        if (!(error instanceof ShortRead)) throw error;
        res.destroy();
        return { kind: 'mismatch', bytes: sent, actual: `short file (${error.at} of ${size} bytes)` };
      }
      if (res.destroyed) {
        entry.release();
        return { kind: 'aborted', bytes: sent };
      }
      if (k === last) {
        const actual = entry.hex();
        if (actual !== expectedHex) {
          entry.release();
          res.destroy();
          return { kind: 'mismatch', bytes: sent, actual };
        }
      }
      cur = next;
      next = undefined;
      const chunkStart = k * CHUNK;
      if (chunkStart + entry.buffer!.length <= start) {
        entry.release(); // walked, hashed, not sent
        continue;
      }
      const piece = start > chunkStart ? entry.buffer!.subarray(start - chunkStart) : entry.buffer!;
      sent += piece.length;
      // the socket holds the entry's reference until it has flushed the bytes
      if (k === last) {
        res.end(piece, () => entry.release());
        return { kind: 'sent', bytes: sent };
      }
      if (!res.write(piece, (error) => (error ? undefined : entry.release()))) await waitDrain(res);
    }
    return { kind: 'sent', bytes: sent };
  } finally {
    for (const taken of [cur, next]) if (taken) await taken.then((e) => e.release(), () => undefined);
    await Promise.allSettled([...pending]);
    reader.close();
  }
}

/**
 * A range that stops before the end (sent as read, `expectedHex` undefined), or a git-SHA-1-named file
 * (hashed in this response, SHA-1 only; from byte 0 when it reaches the end).
 */
async function sendPrivate(res: ServerResponse, handle: FileHandle, size: number, start: number, end: number, expectedHex: string | undefined): Promise<BodyOutcome> {
  const hash = expectedHex === undefined ? undefined : createHash('sha1').update(`blob ${size}\0`);
  let sent = 0;
  let pos = hash ? 0 : start;
  while (pos <= end) {
    if (res.destroyed) return { kind: 'aborted', bytes: sent };
    const limit = pos < start ? start : end + 1;
    const n = Math.min(CHUNK, limit - pos);
    const buffer = pool.take();
    const chunk = n === CHUNK ? buffer : buffer.subarray(0, n);
    const got = await readFully(handle, chunk, pos);
    if (got < n) {
      // the file shrank under us: never a complete file
      res.destroy();
      return { kind: 'mismatch', bytes: sent, actual: `short file (${pos + got} of ${size} bytes)` };
    }
    hash?.update(chunk);
    const sending = pos >= start;
    pos += n;
    if (pos > end && hash) {
      const actual = hash.digest('hex');
      if (actual !== expectedHex) {
        pool.give(buffer);
        res.destroy();
        return { kind: 'mismatch', bytes: sent, actual };
      }
    }
    if (!sending) {
      pool.give(buffer);
      continue;
    }
    sent += n;
    if (pos > end) {
      res.end(chunk, () => pool.give(buffer));
      return { kind: 'sent', bytes: sent };
    }
    if (!res.write(chunk, (error) => (error ? undefined : pool.give(buffer)))) await waitDrain(res);
  }
  res.end();
  return { kind: 'sent', bytes: sent };
}
