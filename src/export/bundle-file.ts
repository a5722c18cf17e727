/**
 * The bundle being written by export, on disk at its final size from the start: `<out>.partial`, or
 * for split volumes `<out>.000.partial`, `<out>.001.partial`, … whose concatenation is the tar. Every
 * size is known from the listing, so every payload byte has its offset before it arrives
 * (bundle-layout.ts); downloads are written straight there, and the small leading entries last. The
 * files are sparse until written, so the disk holds what arrived — no work copy, no second write.
 *
 * Until the leading entries are written, the reserved space at the start of the bundle holds the
 * export's progress, so an interrupted export resumes from the partial file(s) alone:
 *
 *   0    `airlock-partial 1\n` + fingerprint of the layout (hex) + `\n`     (128 bytes)
 *   128  per payload entry (layout order) 16 bytes: bytes of its verified prefix written (uint48 LE,
 *        then 2 zero bytes), then 1 if the file is complete and verified, then 7 zero bytes.
 *
 * A partial whose fingerprint differs (other files, other sizes, other split size) is started afresh.
 * Progress is noted after each write completes, so a kill loses at most what was in flight; a resumed
 * file's kept prefix is re-hashed before the download continues, and a file is only marked complete
 * after its hash matched the listing.
 */
import { createHash } from 'node:crypto';
import { constants, lstat, open, readdir, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { partCount, partPath } from '../bundle/parts.js';
import { AirlockError, fsError } from '../errors.js';
import type { DownloadTarget, TargetHandle } from '../hub/download.js';
import type { BundleLayout } from './bundle-layout.js';

const MAGIC = 'airlock-partial 1\n';
const SLOTS_AT = 128;
const SLOT_BYTES = 16;
const READ_CHUNK = 1024 * 1024;

/** One on-disk file of the bundle: bytes [start, end) of the tar. */
interface Piece {
  start: number;
  end: number;
  /** Final name. */
  path: string;
  partial: string;
  handle: FileHandle;
}

export interface EntryProgress {
  /** Bytes of the file's verified prefix on disk. */
  kept: number;
  complete: boolean;
}

/**
 * The progress slots of a partial bundle (`<out>.partial`, or the first volume's), as written above:
 * per payload entry in bundle order, the verified prefix on disk and whether it is complete. Empty if
 * the file is not a partial bundle (for tools and tests looking at an interrupted export).
 */
export async function readPartialProgress(partialPath: string, entries: number): Promise<EntryProgress[]> {
  const handle = await open(partialPath, 'r').catch(() => undefined);
  if (handle === undefined) return [];
  try {
    const buffer = Buffer.alloc(SLOTS_AT + SLOT_BYTES * entries);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    if (bytesRead < buffer.length || !buffer.subarray(0, MAGIC.length).equals(Buffer.from(MAGIC))) return [];
    return Array.from({ length: entries }, (_, i) => ({
      kept: buffer.readUIntLE(SLOTS_AT + i * SLOT_BYTES, 6),
      complete: buffer[SLOTS_AT + i * SLOT_BYTES + 8] === 1,
    }));
  } finally {
    await handle.close();
  }
}

export function layoutFingerprint(layout: BundleLayout, splitSize: number | undefined): string {
  const hash = createHash('sha256');
  hash.update(JSON.stringify({ reserve: layout.reserve, size: layout.size, splitSize: splitSize ?? null }));
  for (const e of layout.entries) hash.update(`\n${e.name}\u0000${e.size}\u0000${e.expected}\u0000${e.dataAt}`);
  return hash.digest('hex');
}

/**
 * Removes the partial files an earlier run of this export left under names this layout does not use
 * (another --split-size, a split bundle now written whole, or the other way round). Their progress
 * cannot be reused — the fingerprint covers the split size — and a leftover `NAME.tar.003.partial`
 * would otherwise sit beside the finished parts, where `cat NAME.tar.* > NAME.tar` picks it up.
 * Only names airlock itself gives partial bundles are touched.
 */
async function removeStalePartials(outPath: string, keep: ReadonlySet<string>): Promise<void> {
  const dir = dirname(outPath);
  const base = basename(outPath);
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    if (keep.has(name) || !name.startsWith(`${base}.`) || !name.endsWith('.partial')) continue;
    const middle = name.slice(base.length + 1, -'.partial'.length);
    if (middle !== '' && !/^\d{3,}$/.test(middle)) continue;
    const path = join(dir, name);
    const info = await lstat(path).catch(() => undefined);
    if (info?.isFile() !== true) continue;
    await rm(path, { force: true }).catch((error: unknown) => {
      throw fsError(error, 'remove the stale partial bundle', path);
    });
  }
}

export class BundleFile {
  readonly layout: BundleLayout;
  readonly #pieces: Piece[];
  /** Entries whose progress is readable (the fingerprint matched): index → progress. */
  readonly #earlier: EntryProgress[];
  /** Once aborted, nothing more is written or published (the export was interrupted). */
  readonly #signal: AbortSignal | undefined;
  #closed = false;

  private constructor(layout: BundleLayout, pieces: Piece[], earlier: EntryProgress[], signal?: AbortSignal) {
    this.layout = layout;
    this.#pieces = pieces;
    this.#earlier = earlier;
    this.#signal = signal;
  }

  /**
   * Opens (or creates) the partial file(s) for `layout`. Progress from an earlier run is kept only if
   * that run had the very same layout; otherwise the files are emptied first.
   */
  static async open(outPath: string, layout: BundleLayout, splitSize: number | undefined, signal?: AbortSignal): Promise<BundleFile> {
    if (SLOTS_AT + SLOT_BYTES * layout.entries.length > layout.reserve) {
      throw new AirlockError('E_INTERNAL', `the reserved leading space (${layout.reserve} bytes) cannot hold the export's progress`);
    }
    const fingerprint = layoutFingerprint(layout, splitSize);
    const ranges: Array<{ start: number; end: number; path: string }> = [];
    if (splitSize === undefined) ranges.push({ start: 0, end: layout.size, path: outPath });
    else {
      const count = partCount(layout.size, splitSize);
      for (let i = 0, at = 0; at < layout.size; i++, at += splitSize) ranges.push({ start: at, end: Math.min(layout.size, at + splitSize), path: partPath(outPath, i, count) });
    }
    await removeStalePartials(outPath, new Set(ranges.map((r) => `${basename(r.path)}.partial`)));

    const pieces: Piece[] = [];
    try {
      for (const r of ranges) {
        const partial = `${r.path}.partial`;
        // O_NOFOLLOW: never write through a link planted where the partial belongs
        const handle = await open(partial, constants.O_RDWR | constants.O_CREAT | (constants.O_NOFOLLOW ?? 0), 0o644).catch((error: unknown) => {
          throw fsError(error, 'create', partial);
        });
        pieces.push({ ...r, partial, handle });
      }
      const file = new BundleFile(layout, pieces, [], signal);
      const head = Buffer.alloc(SLOTS_AT);
      const got = await file.read(head, 0).catch(() => 0);
      const same = got === SLOTS_AT && head.toString('latin1') === `${MAGIC}${fingerprint}\n`.padEnd(SLOTS_AT, '\u0000');
      const sizesRight = await Promise.all(pieces.map(async (p) => (await p.handle.stat()).size === p.end - p.start));
      if (same && sizesRight.every(Boolean)) {
        const slots = Buffer.alloc(SLOT_BYTES * layout.entries.length);
        await file.read(slots, SLOTS_AT);
        for (const [i, e] of layout.entries.entries()) {
          const kept = slots.readUIntLE(i * SLOT_BYTES, 6);
          const complete = slots[i * SLOT_BYTES + 8] === 1;
          file.#earlier[i] = { kept: Math.min(kept, e.size), complete: complete && kept === e.size };
        }
        return file;
      }
      for (const p of pieces) {
        await p.handle.truncate(0);
        await p.handle.truncate(p.end - p.start); // sparse: the disk fills as bytes arrive
      }
      await file.write(Buffer.from(`${MAGIC}${fingerprint}\n`.padEnd(SLOTS_AT, '\u0000'), 'latin1'), 0);
      await file.write(Buffer.alloc(SLOT_BYTES * layout.entries.length), SLOTS_AT);
      return file;
    } catch (error) {
      for (const p of pieces) await p.handle.close().catch(() => undefined);
      throw error instanceof AirlockError ? error : fsError(error, 'prepare', `${outPath}.partial`);
    }
  }

  /** What an earlier run left of entry `index` (nothing when starting afresh). */
  earlier(index: number): EntryProgress {
    return this.#earlier[index] ?? { kept: 0, complete: false };
  }

  /** Notes entry `index`'s progress in the reserved space. */
  async note(index: number, kept: number, complete = false): Promise<void> {
    const slot = Buffer.alloc(SLOT_BYTES);
    slot.writeUIntLE(kept, 0, 6);
    slot[8] = complete ? 1 : 0;
    await this.write(slot, SLOTS_AT + index * SLOT_BYTES);
  }

  /** Writes all of `data` at bundle offset `position` (across volumes if need be). */
  async write(data: Uint8Array, position: number): Promise<void> {
    this.#signal?.throwIfAborted();
    let done = 0;
    while (done < data.length) {
      const at = position + done;
      const piece = this.#pieceAt(at);
      const length = Math.min(data.length - done, piece.end - at);
      let written = 0;
      while (written < length) {
        try {
          const { bytesWritten } = await piece.handle.write(data, done + written, length - written, at - piece.start + written);
          written += bytesWritten;
        } catch (error) {
          throw fsError(error, 'write', piece.partial);
        }
      }
      done += length;
    }
  }

  /** Reads into `buffer` from bundle offset `position`; returns the bytes read (short only at the end). */
  async read(buffer: Buffer, position: number): Promise<number> {
    let done = 0;
    while (done < buffer.length && position + done < this.layout.size) {
      const at = position + done;
      const piece = this.#pieceAt(at);
      const length = Math.min(buffer.length - done, piece.end - at);
      let bytesRead: number;
      try {
        ({ bytesRead } = await piece.handle.read(buffer, done, length, at - piece.start));
      } catch (error) {
        throw fsError(error, 'read', piece.partial);
      }
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done;
  }

  #pieceAt(position: number): Piece {
    const piece = this.#pieces.find((p) => position >= p.start && position < p.end);
    if (piece === undefined) throw new AirlockError('E_INTERNAL', `bundle offset ${position} is outside the bundle (${this.layout.size} bytes)`);
    return piece;
  }

  /** Entry `index` as a download target: its data region, with progress noted as it grows. */
  target(index: number): DownloadTarget {
    const entry = this.layout.entries[index]!;
    let kept = this.earlier(index).kept;
    const path = `${this.#pieceAt(entry.dataAt).partial} (${entry.name})`;
    return {
      path,
      open: async (): Promise<TargetHandle> => ({
        kept: async () => kept,
        reset: async () => {
          kept = 0;
          await this.note(index, 0);
        },
        write: async (buffer, offset, length, position) => {
          if (position + length > entry.size) throw new AirlockError('E_INTERNAL', `${entry.name}: write past its ${entry.size} bytes`);
          await this.write(buffer.subarray(offset, offset + length), entry.dataAt + position);
          kept = position + length;
          await this.note(index, kept);
          return { bytesWritten: length };
        },
        read: async (buffer, offset, length, position) => ({
          bytesRead: await this.read(buffer.subarray(offset, offset + Math.min(length, entry.size - position)), entry.dataAt + position),
        }),
        complete: async () => undefined, // the whole bundle is fsynced before it is renamed into place
        close: async () => undefined,
      }),
      discard: async () => {
        kept = 0;
        await this.note(index, 0);
      },
    };
  }

  /**
   * SHA-256 of the whole tar and of each volume, reading it back once (the leading entries come first
   * and are written last, so the hash cannot be taken as bytes arrive).
   */
  async digest(): Promise<{ sha256: string; pieces: Array<{ path: string; size: number; sha256: string }> }> {
    const whole = createHash('sha256');
    const pieces: Array<{ path: string; size: number; sha256: string }> = [];
    const buffer = Buffer.allocUnsafe(READ_CHUNK);
    for (const p of this.#pieces) {
      const hash = createHash('sha256');
      for (let at = p.start; at < p.end; ) {
        const n = await this.read(buffer.subarray(0, Math.min(READ_CHUNK, p.end - at)), at);
        if (n === 0) throw new AirlockError('E_IO', `${p.partial} is shorter than expected`, { subject: p.partial });
        whole.update(buffer.subarray(0, n));
        hash.update(buffer.subarray(0, n));
        at += n;
      }
      pieces.push({ path: p.path, size: p.end - p.start, sha256: hash.digest('hex') });
    }
    return { sha256: whole.digest('hex'), pieces };
  }

  /** fsync every volume, close, and rename each into its final name (the last rename publishes). */
  async publish(): Promise<void> {
    this.#signal?.throwIfAborted();
    for (const p of this.#pieces) {
      try {
        await p.handle.sync();
      } catch (error) {
        throw fsError(error, 'write', p.partial);
      }
    }
    await this.close();
    for (const p of this.#pieces) {
      try {
        await rename(p.partial, p.path);
      } catch (error) {
        throw fsError(error, 'rename into place', p.path);
      }
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const p of this.#pieces) await p.handle.close().catch(() => undefined);
  }

  /** Closes and removes the partial file(s): nothing resumable is kept. */
  async discard(): Promise<void> {
    await this.close();
    for (const p of this.#pieces) await rm(p.partial, { force: true }).catch(() => undefined);
  }
}
