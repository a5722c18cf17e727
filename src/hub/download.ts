/**
 * One file from a hub to disk, resumable, retried, optionally over several Range requests at once, and
 * hashed in ONE sequential pass that covers the whole file (SHA-256 has no way to combine parts).
 *
 * The file is cut at fixed boundaries (size·k/n) into `connections` parts. `destination` always holds a
 * verified-by-construction PREFIX of the file: the part containing its end (the "frontier") is fetched
 * straight into it and hashed as bytes arrive; every later part goes into its own file under `partsDir`
 * (named `<start>-<end>`), and is appended to `destination` — hashed on the way — once the frontier
 * reaches it. So the digest always covers bytes [0, size of destination) in order, and every file on disk
 * is a prefix of its range: an interrupted run (even killed) resumes each from its size.
 *
 * Resuming re-hashes the kept prefix once (a digester's state cannot be saved). A `200` to a Range
 * request means the server ignores ranges: everything restarts cleanly from byte 0 over one connection.
 * If the final hash of a resumed download is wrong, the kept prefix is suspect (another run, another
 * file version, a crash that lost page cache): it restarts once from scratch before giving up.
 */
import { constants, type FileHandle, mkdir, open, readdir, rm, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { AirlockError, fsError } from '../errors.js';
import { Digester, type Digests } from '../integrity/digest.js';
import { CoalescingWriter } from '../fs/coalescing-writer.js';
import { markTransient, withRetries, type RetryEvent, type RetryPolicy } from './retry.js';
import type { RemoteFile } from './types.js';

/** A byte range [start, end) of a file. */
export interface ByteRange {
  start: number;
  end: number;
}

/** One response carrying file bytes. */
export interface FileBody {
  kind: 'body';
  /** Offset in the file of the first body byte: the requested start for a 206, 0 for a 200. */
  start: number;
  /** Bytes this body carries. */
  length: number;
  body: AsyncIterable<Buffer>;
  /** Abandons the body. */
  cancel(): void;
  /** Call once, when done with the body (it logs the request). */
  done(bytes: number): void;
  /** A failure while reading the body, as E_NETWORK naming the URL. */
  networkError(error: unknown): AirlockError;
}

/** Opens the file's bytes for a range; `unsatisfiable` is a 416 (with the size the server reports). */
export type OpenRange = (range: ByteRange) => Promise<FileBody | { kind: 'unsatisfiable'; size: number | undefined }>;

/** Waits as long as needed to keep a bandwidth cap (shared by every download). */
export interface Throttle {
  take(bytes: number): Promise<void>;
}

/**
 * Where a download lands: a file of its own (`fileTarget`, the default for a path), or a region of a
 * larger file (export writes each download straight into its place inside the bundle). Writes come in
 * file order from byte 0 (the verified prefix only grows), so a target can record how far it got.
 */
export interface DownloadTarget {
  /** Named in errors. */
  readonly path: string;
  open(): Promise<TargetHandle>;
  /** Forgets everything received (and removes what can be removed). */
  discard(): Promise<void>;
}

export interface TargetHandle {
  /** Bytes of the file already present from an earlier attempt or run (a prefix). */
  kept(): Promise<number>;
  /** Starts over at byte 0. */
  reset(): Promise<void>;
  write(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }>;
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  /** All bytes written: make them durable as the target sees fit. */
  complete(): Promise<void>;
  close(): Promise<void>;
}

/** The file at `path`, created if needed (never through a link planted there). */
export function fileTarget(path: string): DownloadTarget {
  return {
    path,
    async open(): Promise<TargetHandle> {
      const handle = await openRw(path);
      return {
        kept: async () => (await handle.stat()).size,
        reset: () => handle.truncate(0),
        write: (buffer, offset, length, position) => handle.write(buffer, offset, length, position),
        read: (buffer, offset, length, position) => handle.read(buffer, offset, length, position),
        complete: () => handle.sync().catch(() => undefined),
        close: () => handle.close(),
      };
    },
    discard: () => rm(path, { force: true }).catch(() => undefined),
  };
}

/** What Writer and readInto need of a file: positioned reads and writes. */
type Positional = Pick<TargetHandle, 'read' | 'write'>;

export interface FileDownloadOptions {
  /** Continue from what `destination` (and `partsDir`) already hold. Default false: start fresh. */
  resume?: boolean | undefined;
  /** Keep the partial file(s) when failing (for a later resume). Default false: delete them. */
  keepPartial?: boolean | undefined;
  /** Default: one attempt. */
  retry?: RetryPolicy | undefined;
  /** Parallel Range requests for one file. Default 1. Needs `partsDir` above 1. */
  connections?: number | undefined;
  /** No part is made smaller than this (default 8 MiB): small files are not worth splitting. */
  minPartBytes?: number | undefined;
  /** Folder for the parts after the first; must not be shared with any other file. */
  partsDir?: string | undefined;
  throttle?: Throttle | undefined;
  /** Bytes as they arrive (deltas); negative when received bytes are thrown away (a restart). */
  onBytes?: ((delta: number) => void) | undefined;
  onRetry?: ((event: RetryEvent) => void) | undefined;
  /** Bytes kept from an earlier attempt or run (not downloaded again); called once per kept piece. */
  onResume?: ((keptBytes: number) => void) | undefined;
  /** Started over from byte 0, and why. */
  onRestart?: ((reason: string) => void) | undefined;
  /**
   * Downloads in all, each from byte 0, while the finished file fails its hash check (default 1; a
   * resumed file gets one clean restart on top anyway). ModelScope's SDK makes 3 (spec modelscope.md §2.8).
   */
  hashAttempts?: number | undefined;
}

export function integrityError(what: string, message: string): AirlockError {
  return new AirlockError('E_DOWNLOAD_INTEGRITY', `${what}: ${message}`, {
    subject: what,
    hint: 'the file changed on the way or the hub/mirror serves other bytes than it lists; nothing was kept — run the export again, and report it to the mirror operator if it persists',
  });
}

const DEFAULT_MIN_PART_BYTES = 8 * 1024 * 1024;
const READ_CHUNK_BYTES = 1024 * 1024;
/** The server ignored a Range request: start over, whole file, one connection. */
class RangeIgnored extends Error {}

async function writeAll(handle: Positional, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

async function openRw(path: string): Promise<FileHandle> {
  try {
    // O_NOFOLLOW: never write through a link planted at the destination
    return await open(path, constants.O_RDWR | constants.O_CREAT | (constants.O_NOFOLLOW ?? 0), 0o666);
  } catch (error) {
    throw fsError(error, 'create', path);
  }
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    const info = await stat(path);
    return info.isFile() ? info.size : undefined;
  } catch {
    return undefined;
  }
}

/** Reads [from, to) of an open file into the digester (and optionally appends it elsewhere). */
async function readInto(handle: Positional, path: string, from: number, to: number, each: (chunk: Buffer) => Promise<void>): Promise<void> {
  let at = from;
  while (at < to) {
    const buffer = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, to - at));
    let bytesRead: number;
    try {
      ({ bytesRead } = await handle.read(buffer, 0, buffer.length, at));
    } catch (error) {
      throw fsError(error, 'read', path);
    }
    if (bytesRead === 0) throw new AirlockError('E_IO', `${path} is shorter than expected (${at} of ${to} bytes)`, { subject: path });
    await each(buffer.subarray(0, bytesRead));
    at += bytesRead;
  }
}

/** Fixed part boundaries: the same on every run for the same size and connection count. */
export function partBoundaries(size: number, connections: number, minPartBytes: number): ByteRange[] {
  const n = Math.max(1, Math.min(connections, Math.floor(size / Math.max(1, minPartBytes))));
  const parts: ByteRange[] = [];
  for (let k = 0; k < n; k++) parts.push({ start: Math.floor((size * k) / n), end: Math.floor((size * (k + 1)) / n) });
  return parts;
}

export async function downloadFile(
  source: OpenRange,
  what: string,
  file: RemoteFile,
  into: string | DownloadTarget,
  options: FileDownloadOptions = {},
): Promise<Digests> {
  const target = typeof into === 'string' ? fileTarget(into) : into;
  const destination = target.path;
  const policy: RetryPolicy = options.retry ?? { attempts: 1, baseMs: 0, maxMs: 0, maxServerDelayMs: 0 };
  let connections = options.partsDir === undefined ? 1 : Math.max(1, options.connections ?? 1);
  let resume = options.resume === true;
  let retriedFresh = false;
  /** Whether the last attempt kept bytes from an earlier one (resuming from nothing is a fresh download). */
  let keptEarlier = false;
  let restarts = 0;
  /** Downloads from byte 0 that failed their hash check. */
  let mismatches = 0;
  const hashAttempts = Math.max(1, options.hashAttempts ?? 1);
  for (;;) {
    try {
      const digests = await attempt(connections, resume);
      const ok =
        digests.size === file.size && (file.lfsSha256 !== undefined ? digests.sha256 === file.lfsSha256 : digests.gitSha1 === file.blobId);
      if (ok) {
        if (options.partsDir !== undefined) await rm(options.partsDir, { recursive: true, force: true }).catch(() => undefined);
        return digests;
      }
      const message =
        digests.size !== file.size
          ? `expected ${file.size} bytes, got ${digests.size}`
          : file.lfsSha256 !== undefined
            ? `sha256 mismatch: expected ${file.lfsSha256}, got ${digests.sha256}`
            : `git blob id mismatch: expected ${file.blobId}, got ${digests.gitSha1 ?? 'none'}`;
      await discard();
      if (keptEarlier && !retriedFresh) {
        // the kept prefix may be what was wrong: one clean restart before blaming the server
        retriedFresh = true;
        resume = false;
        options.onRestart?.(`the resumed file failed its hash check (${message})`);
        continue;
      }
      mismatches++;
      if (mismatches < hashAttempts) {
        resume = false;
        options.onRestart?.(`the download failed its hash check (${message}); attempt ${mismatches + 1} of ${hashAttempts}`);
        continue;
      }
      throw integrityError(what, message);
    } catch (error) {
      if (error instanceof RangeIgnored && restarts < 3) {
        restarts++;
        await discard();
        options.onRestart?.('the server ignored the Range request (answered 200)');
        connections = 1;
        resume = false;
        continue;
      }
      if (error instanceof RangeIgnored) {
        await discard();
        throw new AirlockError('E_HUB_PROTOCOL', `${what}: the server keeps answering Range requests with the whole file`, { subject: what });
      }
      if (!options.keepPartial || (error instanceof AirlockError && error.code === 'E_DOWNLOAD_INTEGRITY')) await discard();
      throw error;
    }
  }

  async function discard(): Promise<void> {
    await target.discard();
    if (options.partsDir !== undefined) await rm(options.partsDir, { recursive: true, force: true }).catch(() => undefined);
  }

  async function attempt(n: number, resuming: boolean): Promise<Digests> {
    const parts = partBoundaries(file.size, n, options.minPartBytes ?? DEFAULT_MIN_PART_BYTES);
    const digester = new Digester(file.lfsSha256 === undefined ? file.size : undefined);
    if (!resuming) await target.discard();
    const handle = await target.open();
    const writer = new CoalescingWriter((data, at) => writeAll(handle, data, at), destination);
    let frontier = 0; // bytes of destination that are written and hashed
    try {
      // 1. The kept prefix (size of destination) is re-hashed once.
      let kept = resuming ? await handle.kept() : 0;
      if (kept > file.size) {
        await handle.reset();
        kept = 0;
      }
      await readInto(handle, destination, 0, kept, async (chunk) => digester.update(chunk));
      frontier = kept;
      keptEarlier = kept > 0;
      if (kept > 0) options.onResume?.(kept);
      if (!resuming) await handle.reset();

      // 2. Parts after the one holding the frontier get their own files; the others' files are stale.
      const later = parts.filter((p) => p.start > frontier);
      const partPath = (p: ByteRange): string => join(options.partsDir as string, `${p.start}-${p.end}`);
      if (options.partsDir !== undefined) {
        const wanted = new Set(later.map((p) => `${p.start}-${p.end}`));
        const present = await readdir(options.partsDir).catch(() => [] as string[]);
        for (const name of present) if (!resuming || !wanted.has(name)) await rm(join(options.partsDir, name), { force: true, recursive: true });
        if (later.length > 0) await mkdir(options.partsDir, { recursive: true }).catch((error: unknown) => {
          throw fsError(error, 'create', options.partsDir as string);
        });
      }
      // Bytes already in part files count as received (progress shows them).
      const laterJobs = later.map(async (p) => {
        const path = partPath(p);
        let have = (await sizeOf(path)) ?? 0;
        if (have > p.end - p.start) {
          await truncate(path, 0);
          have = 0;
        }
        if (have > 0) {
          keptEarlier = true;
          options.onResume?.(have);
        }
        const partHandle = await openRw(path);
        const partWriter = new CoalescingWriter((data, at) => writeAll(partHandle, data, at), path);
        try {
          await fetchRange(p.start + have, p.end, (chunk, at) => partWriter.write(chunk, at - p.start));
          await partWriter.drain();
        } finally {
          // what arrived before a failure is kept: the next attempt or run continues after it
          await partWriter.drain().catch(() => undefined);
          await partHandle.close().catch(() => undefined);
        }
      });
      // a failing part must not leave an unhandled rejection while the frontier is still busy
      const settled = laterJobs.map((job) => job.then(() => undefined, (error: unknown) => error));

      // 3. The frontier part streams straight into destination, hashed on arrival.
      const frontierEnd = later[0]?.start ?? file.size;
      let frontierError: unknown;
      try {
        await fetchRange(frontier, frontierEnd, async (chunk, at) => {
          if (at !== frontier) throw new AirlockError('E_INTERNAL', `${what}: out-of-order bytes at ${at}, expected ${frontier}`);
          digester.update(chunk);
          frontier += chunk.length;
          await writer.write(chunk, at);
        });
        await writer.drain();
      } catch (error) {
        frontierError = error;
      }
      if (frontierError !== undefined) {
        await writer.drain().catch(() => undefined);
        await Promise.all(settled); // keep the parts' progress on disk for a resume
        // eslint-disable-next-line @typescript-eslint/only-throw-error -- rethrows what the download threw, unchanged
        throw frontierError;
      }

      // 4. The later parts, in order, as each completes: hash and append.
      for (const [k, p] of later.entries()) {
        const failure = await settled[k];
        if (failure !== undefined) {
          await Promise.all(settled);
          // eslint-disable-next-line @typescript-eslint/only-throw-error -- rethrows what the part's download threw, unchanged
          throw failure;
        }
        const path = partPath(p);
        const partHandle = await open(path, 'r').catch((error: unknown) => {
          throw fsError(error, 'read', path);
        });
        try {
          await readInto(partHandle, path, 0, p.end - p.start, async (chunk) => {
            digester.update(chunk);
            await writer.write(chunk, frontier);
            frontier += chunk.length;
          });
          await writer.drain();
        } finally {
          await partHandle.close().catch(() => undefined);
        }
        await rm(path, { force: true });
      }
      await handle.complete();
      return digester.digest();
    } finally {
      await writer.drain().catch(() => undefined);
      await handle.close().catch(() => undefined);
    }
  }

  /** Fetches [from, to) with retries; each chunk is handed to `sink` with its file offset. */
  async function fetchRange(from: number, to: number, sink: (chunk: Buffer, at: number) => Promise<void>): Promise<void> {
    let at = from;
    if (at >= to && file.size > 0) return; // an empty file is still asked for: the server must have it
    await withRetries({ policy, what, onRetry: options.onRetry }, async (madeProgress) => {
      const opened = await source({ start: at, end: to });
      if (opened.kind === 'unsatisfiable') {
        if (opened.size !== undefined && opened.size !== file.size) {
          throw integrityError(what, `the server now reports ${opened.size} bytes, the listing says ${file.size}`);
        }
        // it claims nothing is left where the listing says there is: restart cleanly
        throw new RangeIgnored();
      }
      if (opened.start !== at) {
        opened.cancel();
        opened.done(0);
        throw new RangeIgnored();
      }
      const expectedEnd = opened.start + opened.length;
      let received = 0;
      const chunks = opened.body[Symbol.asyncIterator]();
      try {
        for (;;) {
          let step: IteratorResult<Buffer>;
          try {
            step = await chunks.next();
          } catch (error) {
            // only a failure of the body itself is a network error; ours (disk, hooks) keep their own
            throw opened.networkError(error);
          }
          if (step.done === true) break;
          const chunk = step.value;
          if (at + chunk.length > Math.min(to, expectedEnd) || at + chunk.length > file.size) {
            throw integrityError(what, `the server sent more than the ${file.size} bytes the listing says`);
          }
          await sink(chunk, at);
          at += chunk.length;
          received += chunk.length;
          options.onBytes?.(chunk.length);
          madeProgress();
          if (options.throttle !== undefined) await options.throttle.take(chunk.length);
        }
      } catch (error) {
        opened.cancel();
        throw error;
      } finally {
        opened.done(received);
      }
      if (at < Math.min(to, expectedEnd)) {
        // the body ended early without a transport error (no content-length): a cut, worth a retry
        throw markTransient(
          to === file.size && from === 0 && policy.attempts <= 1
            ? integrityError(what, `expected ${file.size} bytes, got ${at}`)
            : new AirlockError('E_NETWORK', `${what}: the connection ended after ${at} of ${to} bytes`, { subject: what }),
          { status: 0 },
        );
      }
      if (at < to) throw integrityError(what, `expected ${file.size} bytes, the server sent ${expectedEnd}`);
    });
  }
}
