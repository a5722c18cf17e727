/**
 * Split volumes for removable media (FAT32: no file of 4 GiB or more). A bundle `NAME.tar` split with
 * `--split-size` is written as `NAME.tar.000`, `NAME.tar.001`, … whose concatenation
 * (`cat NAME.tar.* > NAME.tar`) is exactly the single tar, plus a small signed index
 * `NAME.parts.json` (+ `NAME.parts.json.asc`) naming every part with its size and SHA-256. The index
 * name deliberately does not match `NAME.tar.*`, so the shell glob above picks up parts only.
 *
 * Readers check the index signature first, then read the parts in order as ONE stream, checking each
 * part's size and SHA-256 as it ends, so a missing, truncated, reordered or corrupted part is named
 * precisely — without ever joining the parts on disk, and never modifying or deleting them.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { AirlockError, fsError } from '../errors.js';
import { pooledStream, readPooled, type ReadPool } from './read-pool.js';

export const PARTS_FORMAT = 'model-airlock-parts';
/** Most parts a bundle may have: more would be a mistyped --split-size, not a plan (10,000 × 1 MiB ≈ 10 GiB). */
export const MAX_PARTS = 10_000;
/** Smallest --split-size / spec `splitSize` (docs/bundle-spec.md): below it a bundle becomes thousands of files. */
export const MIN_SPLIT_SIZE = 1024 * 1024;
const READ_CHUNK = 1024 * 1024;

export interface PartInfo {
  /** File name (no directory): `NAME.tar.000`. */
  name: string;
  size: number;
  sha256: string;
}

export interface PartsIndex {
  format: typeof PARTS_FORMAT;
  formatVersion: 1;
  /** File name of the joined tar. */
  bundle: string;
  size: number;
  /** SHA-256 of the joined tar. */
  sha256: string;
  partSize: number;
  parts: PartInfo[];
}

/**
 * Digits in the part names of a bundle of `count` parts: at least 3, and enough for the last index, so
 * every name has the same width and `cat NAME.tar.* > NAME.tar` (the shell sorts the glob) joins them
 * in order — `.0999` before `.1000`. The count is known before the first byte is written.
 */
export function partWidth(count: number): number {
  return Math.max(3, String(Math.max(0, count - 1)).length);
}

/** `NAME.tar.000`… (`NAME.tar.0000`… for more than 1,000 parts): part `index` of `count`. */
export function partPath(bundlePath: string, index: number, count: number): string {
  return `${bundlePath}.${String(index).padStart(partWidth(count), '0')}`;
}

/** The names the first part of a bundle can have (one per width a valid part count allows). */
export function firstPartPaths(bundlePath: string): string[] {
  const paths: string[] = [];
  for (let w = partWidth(1); w <= partWidth(MAX_PARTS); w++) paths.push(`${bundlePath}.${'0'.repeat(w)}`);
  return paths;
}

/** Parts of `bundleBytes` bytes cut every `splitSize` bytes (an empty bundle still has one part). */
export function partCount(bundleBytes: number, splitSize: number): number {
  return Math.max(1, Math.ceil(bundleBytes / splitSize));
}

/** Checks a split size from the command line or a spec against the minimum (at argument time). */
export function checkSplitSize(splitSize: number, what: string): void {
  if (splitSize < MIN_SPLIT_SIZE) {
    throw new AirlockError('E_USAGE', `${what} must be at least 1 MiB (${MIN_SPLIT_SIZE} bytes), not ${splitSize} bytes`, {
      hint: 'parts are for removable media and size-limited links: use e.g. --split-size 3.9GiB (FAT32) or 700MB',
    });
  }
}

/**
 * Checks the part count against MAX_PARTS once the bundle's size is known (after the listing, before
 * the first download).
 */
export function checkPartCount(splitSize: number, bundleBytes: number, what: string): void {
  const count = partCount(bundleBytes, splitSize);
  if (count > MAX_PARTS) {
    const least = Math.ceil(bundleBytes / MAX_PARTS);
    throw new AirlockError('E_USAGE', `${what} ${splitSize} would cut this ${bundleBytes}-byte bundle into ${count} parts, more than the ${MAX_PARTS} allowed`, {
      hint: `choose a split size of at least ${least} bytes (${Math.ceil(least / 1024 / 1024)} MiB)`,
    });
  }
}

/** `NAME.parts.json` for `NAME.tar` (or `NAME-parts.json`): never matched by `NAME.tar.*`. */
export function indexPathFor(bundlePath: string): string {
  return bundlePath.endsWith('.tar') ? `${bundlePath.slice(0, -'.tar'.length)}.parts.json` : `${bundlePath}-parts.json`;
}

/** If `path` names a part (`….000`, `….017`) or a parts index, the joined bundle's path; else undefined. */
export function splitBundleOf(path: string): string | undefined {
  const part = /^(.*)\.(\d{3,})$/.exec(path);
  if (part) return part[1];
  if (path.endsWith('.parts.json')) return `${path.slice(0, -'.parts.json'.length)}.tar`;
  if (path.endsWith('-parts.json')) return path.slice(0, -'-parts.json'.length);
  return undefined;
}

const UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1000, kb: 1000, kib: 1024,
  m: 1000 ** 2, mb: 1000 ** 2, mib: 1024 ** 2,
  g: 1000 ** 3, gb: 1000 ** 3, gib: 1024 ** 3,
  t: 1000 ** 4, tb: 1000 ** 4, tib: 1024 ** 4,
};

/** `3.9GiB`, `700MB`, `4000000000`, `1.5 g` → bytes (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024). */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new AirlockError('E_USAGE', `not a size: ${JSON.stringify(text)}`, { hint: 'use e.g. 3.9GiB, 700MB or a number of bytes' });
  }
  const bytes = Math.floor(Number(m[1]) * unit);
  if (bytes < 1) throw new AirlockError('E_USAGE', `size must be at least 1 byte: ${JSON.stringify(text)}`);
  return bytes;
}

/**
 * A Writable that spreads what it receives over `NAME.tar.000`, `.001`, … of at most `partSize`
 * bytes each, hashing each part and the whole. Parts are written under `.partial` names and renamed
 * only by `publish()`, so an interrupted export never leaves a set of parts that looks complete.
 */
export class SplitSink extends Writable {
  readonly #bundlePath: string;
  readonly #partSize: number;
  readonly #count: number;
  readonly #parts: PartInfo[] = [];
  readonly #whole = createHash('sha256');
  #current: { handle: FileHandle; hash: ReturnType<typeof createHash>; size: number; index: number } | undefined;
  #total = 0;

  /**
   * `bundleBytes`: the size of the whole tar, known up front, which fixes the width of the part names;
   * without it the names have 3 digits and more than 1,000 parts are refused.
   */
  constructor(bundlePath: string, partSize: number, bundleBytes?: number) {
    super({ highWaterMark: READ_CHUNK });
    this.#bundlePath = bundlePath;
    this.#partSize = partSize;
    this.#count = bundleBytes === undefined ? 1000 : partCount(bundleBytes, partSize);
  }

  /** Part `index`'s final path. */
  partPath(index: number): string {
    return partPath(this.#bundlePath, index, this.#count);
  }

  get parts(): readonly PartInfo[] {
    return this.#parts;
  }

  async #closeCurrent(): Promise<void> {
    const part = this.#current;
    if (part === undefined) return;
    this.#current = undefined;
    await part.handle.sync();
    await part.handle.close();
    this.#parts.push({ name: basename(this.partPath(part.index)), size: part.size, sha256: part.hash.digest('hex') });
  }

  async #openNext(): Promise<void> {
    const index = this.#parts.length;
    if (index >= this.#count || index >= MAX_PARTS) {
      throw new AirlockError('E_INTERNAL', `${this.#bundlePath}: more bytes than the ${this.#count} parts announced`);
    }
    const path = `${this.partPath(index)}.partial`;
    const handle = await open(path, 'w', 0o644).catch((error: unknown) => {
      throw fsError(error, 'create', path);
    });
    this.#current = { handle, hash: createHash('sha256'), size: 0, index };
  }

  async #write(chunk: Buffer): Promise<void> {
    this.#whole.update(chunk);
    this.#total += chunk.byteLength;
    let offset = 0;
    while (offset < chunk.byteLength) {
      if (this.#current === undefined) await this.#openNext();
      const part = this.#current!;
      const take = Math.min(this.#partSize - part.size, chunk.byteLength - offset);
      const slice = chunk.subarray(offset, offset + take);
      await part.handle.write(slice);
      part.hash.update(slice);
      part.size += take;
      offset += take;
      if (part.size === this.#partSize) await this.#closeCurrent();
    }
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#write(chunk).then(() => callback(), (error: Error) => callback(error));
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#closeCurrent().then(() => callback(), (error: Error) => callback(error));
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const part = this.#current;
    this.#current = undefined;
    void (part ? part.handle.close().catch(() => undefined) : Promise.resolve()).then(() => callback(error));
  }

  /** The index describing the finished parts (call after the stream finished). */
  index(): PartsIndex {
    return {
      format: PARTS_FORMAT,
      formatVersion: 1,
      bundle: basename(this.#bundlePath),
      size: this.#total,
      sha256: this.#whole.digest('hex'),
      partSize: this.#partSize,
      parts: [...this.#parts],
    };
  }

  /** Renames every `.partial` part to its final name. */
  async publish(): Promise<void> {
    for (let i = 0; i < this.#parts.length; i++) {
      const path = this.partPath(i);
      await rename(`${path}.partial`, path).catch((error: unknown) => {
        throw fsError(error, 'rename into place', path);
      });
    }
  }

  /** Removes whatever parts (partial or final) this sink created. */
  async discard(): Promise<void> {
    const count = this.#parts.length + (this.#current ? 1 : 0);
    for (let i = 0; i < count; i++) {
      await rm(`${this.partPath(i)}.partial`, { force: true });
    }
  }
}

export function formatPartsIndex(index: PartsIndex): Buffer {
  return Buffer.from(`${JSON.stringify(index, null, 2)}\n`, 'utf8');
}

/**
 * Strict parse of a parts index: every field checked, part names must be exactly NAME.tar.000… in
 * order, as wide as the count needs (partWidth).
 */
export function parsePartsIndex(bytes: Uint8Array, subject: string): PartsIndex {
  const fail = (message: string): never => {
    throw new AirlockError('E_BUNDLE_MALFORMED', `${subject}: ${message}`, { subject, hint: 'the parts index was damaged; ask for a fresh copy of NAME.parts.json and its .asc' });
  };
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (cause) {
    return fail(`not JSON: ${(cause as Error).message}`);
  }
  const v = value as Partial<PartsIndex>;
  if (v === null || typeof v !== 'object') return fail('not an object');
  if (v.format !== PARTS_FORMAT || v.formatVersion !== 1) return fail(`not a ${PARTS_FORMAT} v1 index`);
  if (typeof v.bundle !== 'string' || v.bundle.includes('/') || v.bundle.includes('\\') || v.bundle === '' || v.bundle.startsWith('.')) return fail('bad bundle name');
  if (!Number.isSafeInteger(v.size) || v.size! < 0) return fail('bad size');
  if (typeof v.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(v.sha256)) return fail('bad sha256');
  if (!Number.isSafeInteger(v.partSize) || v.partSize! < 1) return fail('bad partSize');
  if (!Array.isArray(v.parts) || v.parts.length === 0 || v.parts.length > MAX_PARTS) return fail('bad parts list');
  let total = 0;
  const count = v.parts.length;
  v.parts.forEach((p: Partial<PartInfo>, i) => {
    const expected = partPath(v.bundle!, i, count);
    if (p?.name !== expected) fail(`part ${i} is named ${JSON.stringify(p?.name)}, expected ${expected}`);
    if (!Number.isSafeInteger(p.size) || p.size! < 1 || p.size! > v.partSize!) fail(`part ${p.name} has a bad size`);
    if (i < v.parts!.length - 1 && p.size !== v.partSize) fail(`part ${p.name} is not the last part but is shorter than partSize`);
    if (typeof p.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(p.sha256)) fail(`part ${p.name} has a bad sha256`);
    total += p.size!;
  });
  if (total !== v.size) fail(`parts add up to ${total} bytes, index says ${v.size}`);
  return v as PartsIndex;
}

/**
 * Checks that every part is there with the size the index gives (fast, before reading a byte), and
 * that there is no part beyond the last: the errors name the part.
 */
export async function checkPartsPresent(index: PartsIndex, dir: string): Promise<void> {
  for (const part of index.parts) {
    const path = join(dir, part.name);
    const info = await stat(path).catch((error: unknown) => {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new AirlockError('E_MISSING_ENTRY', `part ${part.name} is missing (the index lists ${index.parts.length} parts)`, {
          subject: path,
          hint: `copy every part ${index.bundle}.000 … ${index.parts.at(-1)!.name} into ${dir}`,
        });
      }
      throw fsError(error, 'read', path);
    });
    if (info.size !== part.size) {
      throw new AirlockError('E_SIZE_MISMATCH', `part ${part.name} is ${info.size} bytes, the signed index says ${part.size}`, {
        subject: path,
        hint: info.size < part.size ? 'the copy was cut short: copy that part again' : 'that file is not this part: copy it again from the source media',
      });
    }
  }
  // a part beyond the last, in this bundle's width or the next one's
  const n = index.parts.length;
  const extras = [...new Set([partPath(join(dir, index.bundle), n, n), partPath(join(dir, index.bundle), n, n + 1)])];
  const found = await Promise.all(extras.map((p) => stat(p).then(() => true, () => false)));
  const extra = extras[found.indexOf(true)];
  if (extra !== undefined) {
    throw new AirlockError('E_UNEXPECTED_ENTRY', `${basename(extra)} exists but the signed index lists only ${index.parts.length} parts`, {
      subject: extra,
      hint: 'parts from another bundle may be mixed in; keep each bundle in its own folder',
    });
  }
}

function partMismatch(index: PartsIndex, part: PartInfo, path: string, actual: string): AirlockError {
  const swapped = index.parts.find((other) => other.sha256 === actual && other.name !== part.name);
  return new AirlockError('E_HASH_MISMATCH', `part ${part.name} does not match the signed index${swapped ? `: it holds the content of ${swapped.name}` : ` (sha256 ${actual}, expected ${part.sha256})`}`, {
    subject: path,
    hint: swapped ? 'parts were renamed or copied out of order: restore the original names' : 'that part was damaged in transit: copy it again from the source media',
  });
}

/** SHA-256 and size of a whole file. */
export async function hashWhole(path: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: READ_CHUNK })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).byteLength;
  }
  return { sha256: hash.digest('hex'), size };
}

/** The parts as one stream, plus a way to tell whether a failure downstream came from a bad part. */
export interface PartsStream extends Readable {
  /**
   * A damaged part's bytes reach the tar parser before that part's end (where its hash is checked),
   * so a parse or hash error downstream may really be a bad part. This hashes the part that was being
   * read (once, on the failure path only) and returns the part's error if it is the culprit, else
   * the original error.
   */
  diagnose(error: unknown): Promise<unknown>;
}

/**
 * One Readable over all parts in order. Each part's bytes are hashed as they pass; at the end of a
 * part its size and SHA-256 must match the index, else the stream fails naming that part — before the
 * next part is read.
 */
export function readParts(index: PartsIndex, dir: string, pool?: ReadPool): PartsStream {
  let current = -1;
  let currentChecked = false;
  async function* chunks(): AsyncGenerator<Buffer> {
    for (const [i, part] of index.parts.entries()) {
      current = i;
      currentChecked = false;
      const path = join(dir, part.name);
      const hash = createHash('sha256');
      let size = 0;
      const handle = pool === undefined ? undefined : await open(path, 'r');
      try {
        const source: AsyncIterable<Buffer> = handle === undefined ? createReadStream(path, { highWaterMark: READ_CHUNK }) : readPooled(handle, pool!);
        for await (const buffer of source) {
          size += buffer.byteLength;
          if (size > part.size) break;
          hash.update(buffer);
          yield buffer;
        }
      } finally {
        await handle?.close();
      }
      currentChecked = true;
      const actual = hash.digest('hex');
      if (size !== part.size || actual !== part.sha256) throw partMismatch(index, part, path, actual);
    }
  }
  const stream = (pool === undefined ? Readable.from(chunks(), { objectMode: false, highWaterMark: READ_CHUNK }) : pooledStream(chunks())) as PartsStream;
  stream.diagnose = async (error: unknown): Promise<unknown> => {
    const part = index.parts[current];
    if (part === undefined || currentChecked) return error;
    const path = join(dir, part.name);
    const whole = await hashWhole(path).catch(() => undefined);
    if (whole === undefined || (whole.size === part.size && whole.sha256 === part.sha256)) return error;
    return partMismatch(index, part, path, whole.sha256);
  };
  return stream;
}

/** For any bundle source: the error to report for a failed read (see PartsStream.diagnose). */
export async function explainReadFailure(source: Readable, error: unknown): Promise<unknown> {
  const diagnose = (source as Partial<PartsStream>).diagnose;
  return typeof diagnose === 'function' ? diagnose(error) : error;
}

export function partsDirOf(bundlePath: string): string {
  return dirname(bundlePath);
}
