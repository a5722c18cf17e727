/**
 * Opens a bundle for one sequential read with large (1 MiB) reads: a single `.airlock.tar`, or split
 * volumes named by any part (`NAME.tar.000`), their index (`NAME.parts.json`), the joined name
 * (`NAME.tar`, when only parts exist) or the folder holding them. For split volumes the signed parts
 * index is checked first (same trust as the bundle), every part must be present with its size, and
 * the parts are read in order as one stream, each checked against the index as it ends. Without the
 * index (or its signature) the parts found on disk are read as one stream (bundle/parts-unindexed.ts).
 */
import { close as closeFd, constants, fstatSync, open as openFd } from 'node:fs';
import { open, readdir, readFile, stat } from 'node:fs/promises';
import { Socket } from 'node:net';
import { basename, dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { AirlockError, fsError } from '../errors.js';
import { BUNDLE_READ_CHUNK } from '../bundle/reader.js';
import { checkPartsPresent, firstPartPaths, indexPathFor, parsePartsIndex, readParts, splitBundleOf } from '../bundle/parts.js';
import { pooledStream, readPooled, type ReadPool } from '../bundle/read-pool.js';
import { findParts, readPartsWithoutIndex, type MissingIndex } from '../bundle/parts-unindexed.js';
import { verifyDetachedSignature, type TrustPolicy } from '../signing/verify.js';

export interface OpenBundleOptions {
  /** Checks the parts index signature of split volumes; without it (inspect) the index is not authenticated. */
  trust?: TrustPolicy | undefined;
  allowUnsigned?: boolean | undefined;
  /** Read into these reusable buffers (the reader that consumes the stream must release them). */
  pool?: ReadPool | undefined;
  /** Gives up waiting for a FIFO's writer (rejects with `signal.reason`). */
  signal?: AbortSignal | undefined;
}

/** The bundle path that means standard input: `ssh host cat b.tar | airlock import -`. */
export const STDIN_BUNDLE = '-';

/** Whether `path` can be read twice (a file, a folder, split parts) — not standard input, a pipe or a FIFO. */
export async function isRereadable(path: string): Promise<boolean> {
  if (path === STDIN_BUNDLE) return false;
  const info = await stat(path).catch(() => undefined);
  return info === undefined || info.isFile() || info.isDirectory();
}

/**
 * A pipe, FIFO or socket read as an event-driven stream (like process.stdin), not by blocking reads on
 * the thread pool: destroying it on Ctrl-C/SIGTERM returns at once, even while the writer is silent.
 */
function pipeStream(fd: number): Readable {
  return new Socket({ fd, readable: true, writable: false });
}

/**
 * Opens a FIFO for reading. The open itself waits for a writer (`mkfifo f; airlock import f` before
 * `cat b.tar > f`); an abort gives up waiting: a writer that comes and goes at once releases the open
 * blocked in the thread pool, whose descriptor is then closed, so nothing keeps the process alive.
 */
function openFifo(path: string, signal: AbortSignal | undefined): Promise<Readable> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const onAbort = (): void => {
      if (settled) return;
      settled = true;
      reject(signal!.reason instanceof Error ? signal!.reason : new Error(String(signal!.reason)));
      openFd(path, constants.O_WRONLY | constants.O_NONBLOCK, (error, fd) => {
        if (error === null) closeFd(fd, () => undefined);
      });
    };
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    openFd(path, constants.O_RDONLY, (error, fd) => {
      signal?.removeEventListener('abort', onAbort);
      if (settled) {
        if (error === null) closeFd(fd, () => undefined);
        return;
      }
      settled = true;
      if (error !== null) reject(fsError(error, 'open', path));
      else resolve(pipeStream(fd));
    });
  });
}

/** `-`: standard input — a pipe or socket as a stream, a redirected file like any file. */
async function openStdin(options: OpenBundleOptions): Promise<Readable> {
  const info = fstatSync(0);
  if (info.isFIFO() || info.isSocket()) return pipeStream(0);
  if (info.isCharacterDevice() && process.stdin.isTTY) {
    throw new AirlockError('E_USAGE', 'the bundle is to come on standard input, but that is a terminal', {
      hint: 'pipe the bundle in (`cat b.airlock.tar | airlock import -`), or name the file',
    });
  }
  return openBundle('/dev/stdin', options);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

async function anyExists(paths: readonly string[]): Promise<boolean> {
  for (const path of paths) if (await exists(path)) return true;
  return false;
}

/** A folder holding exactly one bundle (single tar or split set) stands for it. */
async function bundleInFolder(dir: string): Promise<string> {
  const names = await readdir(dir);
  const indexes = names.filter((n) => n.endsWith('.parts.json'));
  const tars = names.filter((n) => n.endsWith('.tar'));
  if (indexes.length === 1 && tars.length === 0) return join(dir, indexes[0]!);
  if (tars.length === 1 && indexes.length === 0) return join(dir, tars[0]!);
  // split volumes whose index was not copied: the parts alone name the bundle
  const partsOf = new Set(names.map((n) => splitBundleOf(n)).filter((b): b is string => b !== undefined));
  if (indexes.length === 0 && tars.length === 0 && partsOf.size === 1) return join(dir, [...partsOf][0]!);
  throw new AirlockError('E_USAGE', `${dir} is a folder holding ${indexes.length + tars.length === 0 ? 'no bundle' : 'several bundles'}`, {
    subject: dir,
    hint: 'name the bundle file (or the first part of a split bundle) itself',
  });
}

async function openSplit(bundlePath: string, options: OpenBundleOptions): Promise<Readable> {
  const indexPath = indexPathFor(bundlePath);
  // Without the index (or, when signatures are checked, without its signature) the parts are read as
  // one stream: the signed SHA256SUMS inside the tar still covers every byte (parts-unindexed.ts).
  const withoutIndex = async (reason: MissingIndex): Promise<Readable> => {
    const parts = await findParts(bundlePath);
    return readPartsWithoutIndex(parts, { index: basename(indexPath), reason, parts: parts.length }, options.pool);
  };
  let indexBytes: Buffer;
  try {
    indexBytes = await readFile(indexPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return withoutIndex('missing');
    throw fsError(error, 'read', indexPath);
  }
  if (options.trust !== undefined) {
    const asc = await readFile(`${indexPath}.asc`, 'utf8').catch((error: unknown) => {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw fsError(error, 'read', `${indexPath}.asc`);
    });
    if (asc !== undefined) {
      // the index only names bad parts early; SHA256SUMS (checked by the reader) is what the policy's
      // signature count applies to, so one trusted signature is enough here. A signature that IS
      // there must verify: a bad or untrusted index is refused, never silently ignored.
      await verifyDetachedSignature(indexBytes, asc, { ...options.trust, requireSignatures: 1 }, `${basename(indexPath)}.asc`);
    } else if (!options.allowUnsigned) {
      // an index nobody signed is not used at all; the tar's own signature decides
      return withoutIndex('unsigned');
    }
  }
  const index = parsePartsIndex(indexBytes, basename(indexPath));
  if (index.bundle !== basename(bundlePath)) {
    throw new AirlockError('E_BUNDLE_MALFORMED', `${basename(indexPath)} describes ${index.bundle}, not ${basename(bundlePath)}`, {
      subject: indexPath,
      hint: 'keep the parts under the names export gave them',
    });
  }
  const dir = dirname(bundlePath);
  await checkPartsPresent(index, dir);
  return readParts(index, dir, options.pool);
}

export async function openBundle(path: string, options: OpenBundleOptions = {}): Promise<Readable> {
  if (path === STDIN_BUNDLE) return openStdin(options);
  let target = path;
  const info = await stat(path).catch(() => undefined);
  if (info?.isFIFO() || info?.isSocket()) return openFifo(path, options.signal);
  if (info?.isDirectory()) target = await bundleInFolder(path);
  const targetInfo = target === path ? info : await stat(target).catch(() => undefined);
  const split = splitBundleOf(target) ?? (targetInfo === undefined && (await anyExists(firstPartPaths(target))) ? target : undefined);
  if (split !== undefined) return openSplit(split, options);

  let handle;
  try {
    handle = await open(target, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new AirlockError('E_NOT_FOUND', `bundle not found: ${target}`, {
        subject: target,
        hint: 'check the path; a bundle is the .airlock.tar file `airlock export` wrote (or the first part, NAME.tar.000, of a split bundle)',
        cause: error,
      });
    }
    throw fsError(error, 'open', target);
  }
  // the stream owns the handle from here on and closes it on end, error or destroy
  if (options.pool === undefined) return handle.createReadStream({ highWaterMark: BUNDLE_READ_CHUNK });
  const stream = pooledStream(readPooled(handle, options.pool));
  // closed with the stream (end, error or destroy — even one before the first read); a read still in flight finishes first
  stream.once('close', () => void handle.close().catch(() => undefined));
  return stream;
}
