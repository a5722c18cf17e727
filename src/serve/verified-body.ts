/**
 * Sends a file's bytes only as far as they are proven: every response that carries the file's LAST
 * byte has hashed the whole file in that same request (the part before a range is read and hashed
 * without being sent) and compares the digest with the name the file is stored under before that last
 * byte leaves. On a mismatch the connection is cut short of `Content-Length`: the client sees a short
 * read and fails, it never holds a complete, good-looking wrong file. The file is then marked bad (by
 * device, inode, size and times) until something replaces it — a re-import writes a new inode.
 *
 * A range that stops before the end cannot complete a file by itself and is sent as read, unless the
 * file is already known bad.
 */
import type { FileHandle } from 'node:fs/promises';
import { open, realpath } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { sep } from 'node:path';
import { Digester } from '../integrity/digest.js';

const CHUNK = 1024 * 1024;

/**
 * Reused 1 MiB read buffers, shared by every response. A fresh buffer per read costs page faults and,
 * once promoted, full mark-compacts (docs/performance.md measured a quarter of the CPU). A buffer comes
 * back only when the socket has flushed it (the write callback) or, for bytes hashed but not sent, right
 * after hashing (`Hash.update` consumes synchronously); one lost with a destroyed socket is left to the GC.
 */
const free: Buffer[] = [];
const MAX_FREE = 64;
function takeBuffer(): Buffer {
  return free.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
}
function giveBack(buffer: Buffer): void {
  if (free.length < MAX_FREE) free.push(buffer);
}

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

/**
 * Streams `range` (or the whole file) of an opened file into `res` (headers already set by the caller,
 * not yet sent), hashing as described above. Closes the handle. On a mismatch the socket is destroyed.
 */
export async function sendVerifiedBody(res: ServerResponse, handle: FileHandle, size: number, range: ByteRange | undefined, expected: Expected): Promise<BodyOutcome> {
  const start = range?.start ?? 0;
  const end = range?.end ?? size - 1;
  const verify = end === size - 1;
  const digester = verify ? new Digester(expected.kind === 'git-sha1' ? size : undefined) : undefined;
  const matches = (): { ok: boolean; actual: string } => {
    const d = digester!.digest();
    const actual = expected.kind === 'git-sha1' ? d.gitSha1! : d.sha256;
    return { ok: actual === expected.hex, actual };
  };
  let sent = 0;
  try {
    if (size === 0) {
      const check = matches();
      if (!check.ok) {
        res.destroy();
        return { kind: 'mismatch', bytes: 0, actual: check.actual };
      }
      res.end();
      return { kind: 'sent', bytes: 0 };
    }
    let pos = verify ? 0 : start;
    while (pos <= end) {
      if (res.destroyed) return { kind: 'aborted', bytes: sent };
      const limit = pos < start ? start : end + 1;
      const n = Math.min(CHUNK, limit - pos);
      const buffer = takeBuffer();
      const chunk = n === CHUNK ? buffer : buffer.subarray(0, n);
      let got = 0;
      while (got < n) {
        const { bytesRead } = await handle.read(chunk, got, n - got, pos + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      if (got < n) {
        // the file shrank under us: never a complete file
        res.destroy();
        return { kind: 'mismatch', bytes: sent, actual: `short file (${pos + got} of ${size} bytes)` };
      }
      digester?.update(chunk);
      const sending = pos >= start;
      pos += n;
      if (pos > end && verify) {
        const check = matches();
        if (!check.ok) {
          giveBack(buffer);
          res.destroy();
          return { kind: 'mismatch', bytes: sent, actual: check.actual };
        }
      }
      if (!sending) {
        giveBack(buffer);
        continue;
      }
      if (pos > end) {
        res.end(chunk, () => giveBack(buffer));
        sent += n;
        return { kind: 'sent', bytes: sent };
      }
      sent += n;
      if (!res.write(chunk, (error) => (error ? undefined : giveBack(buffer)))) await waitDrain(res);
    }
    res.end();
    return { kind: 'sent', bytes: sent };
  } finally {
    await handle.close().catch(() => undefined);
  }
}
