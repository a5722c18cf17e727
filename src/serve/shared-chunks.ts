/**
 * One SHA-256 pass shared by the concurrent readers of a file (per process), without weakening "every
 * byte sent was hashed into the digest that was checked".
 *
 * A file is walked in aligned chunks (chunk k = bytes [k·CHUNK, (k+1)·CHUNK)). Each chunk read becomes an
 * entry `{ id, index, parentId, buffer }` whose hash state (held by the hasher, see chain-hasher.ts) is
 * the parent entry's state extended with exactly `buffer`; `parentId` names the entry of chunk k−1 it
 * continues (0 = start of file), and `hex()` is the running digest after it. Entries of recent chunks are
 * published in a table keyed by the file's identity (device, inode, size, times) and chunk index, at most
 * one per slot.
 *
 * A reader holding `prev` (its entry of chunk k−1) ADOPTS the table's entry k when that entry's parent is
 * `prev` itself (same id, not merely the same index): then the buffers it has sent and will send are the
 * very buffers that entry's state hashed, in order. Otherwise it reads chunk k itself, hashes it on top of
 * `prev`, and publishes its entry only if slot k is free — a fork, correct but not shared. The reader that
 * sends a file's last byte compares its last entry's digest with the file's name before that byte leaves.
 *
 * A fork may REJOIN another chain: when the table's entry k continues an entry P of chunk k−1 whose
 * running digest equals `prev`'s, P hashed the same bytes this reader sent (SHA-256 collision
 * resistance, the property the file's name already rests on), so entry k's state covers exactly what this
 * reader will have sent. Without this, a reader that fell behind once hashed alone to the end.
 *
 * Entries are published as soon as their read starts (`ready` settles once read and hashed): readers
 * arriving in lockstep wait for the one read instead of each reading and forking. Parents are named by
 * id; an entry keeps its parent object only while published (for rejoining), so a chain's tail does not
 * keep its old buffers alive.
 *
 * The table holds at most `window` entries per file. Chunks every reader is past are dropped at once,
 * except the file's first `window` (for a reader yet to come); when full, the entry dropped is the one
 * whose next use is farthest (largest distance to the nearest reader behind it). Buffers come from a
 * reuse pool (fresh 1 MiB buffers cost page faults and mark-compacts) and go back only when no one can
 * touch them again: the table, each reader that took the entry, the read-and-hash in flight and each
 * socket write holding it count as references; one whose socket write failed is left to the GC.
 */
import { InlineHasher, type ChainHasher, type ChunkSource } from './chain-hasher.js';

export const CHUNK = 1024 * 1024;

/** Reused CHUNK-sized buffers. */
export class BufferPool {
  readonly #free: Buffer[] = [];
  /** @param shared SharedArrayBuffer-backed buffers (for a hashing thread) */
  constructor(
    readonly max = 48,
    readonly shared = false,
  ) {}
  take(): Buffer {
    return this.#free.pop() ?? (this.shared ? Buffer.from(new SharedArrayBuffer(CHUNK)) : Buffer.allocUnsafeSlow(CHUNK));
  }
  give(buffer: Buffer): void {
    if (this.#free.length < this.max) this.#free.push(buffer);
  }
  get idle(): number {
    return this.#free.length;
  }
}

/** The file ended before `at`: it shrank under us. */
export class ShortRead extends Error {
  constructor(readonly at: number) {
    super(`short file (ended at byte ${at})`);
  }
}

let nextId = 1;

export class ChunkEntry {
  readonly id = nextId++;
  /** The chunk's bytes (its full length); undefined once returned to the pool. */
  buffer: Buffer | undefined;
  readonly ready: Promise<void>;
  /** The entry this one continues, kept only while this one is published (for rejoining, below). */
  parent: ChunkEntry | undefined;
  refs = 1;
  #hex: string | undefined;

  constructor(
    readonly index: number,
    readonly parentId: number,
    readonly backing: Buffer,
    length: number,
    readonly pool: BufferPool,
    fill: (entry: ChunkEntry) => Promise<void>,
  ) {
    this.buffer = length === backing.length ? backing : backing.subarray(0, length);
    // the read and the hash hold the buffer too (a hashing thread may still be reading it)
    this.refs++;
    this.ready = fill(this).finally(() => this.release());
    // a published entry may be awaited by no one; its failure is seen by those who do await it
    this.ready.catch(() => undefined);
  }

  /** The SHA-256 of everything up to and including this chunk (once `ready`). */
  hex(): string {
    return this.#hex!;
  }

  /** @internal */
  settle(hex: string): void {
    this.#hex = hex;
  }

  release(): void {
    if (--this.refs === 0 && this.buffer !== undefined) {
      this.buffer = undefined;
      this.pool.give(this.backing);
    }
  }
}

export interface ChainStats {
  /** Chunks read from disk and hashed. */
  read: number;
  /** Chunks taken from the table instead. */
  adopted: number;
  /** Of those, taken by a reader on another chain whose prefix digest was equal (rejoined). */
  rejoined: number;
}

interface FileTable {
  /** Each reader's next chunk index. */
  positions: Map<ChainReader, number>;
  slots: Map<number, ChunkEntry>;
}

export class ChunkChains {
  readonly #files = new Map<string, FileTable>();
  /** Every published entry, oldest first (for the global cap). */
  readonly #order = new Map<ChunkEntry, string>();
  readonly #window: number;
  readonly #maxEntries: number;
  readonly pool: BufferPool;
  readonly hasher: ChainHasher;
  readonly stats: ChainStats = { read: 0, adopted: 0, rejoined: 0 };

  constructor(options: { window?: number; maxEntries?: number; pool?: BufferPool; hasher?: ChainHasher } = {}) {
    this.#window = options.window ?? 32;
    this.#maxEntries = options.maxEntries ?? 64;
    this.hasher = options.hasher ?? new InlineHasher();
    this.pool = options.pool ?? new BufferPool(48, this.hasher.shared);
    if (this.pool.shared !== this.hasher.shared) throw new Error('the buffer pool does not suit the hasher');
  }

  /** Entries currently published (all files). */
  get published(): number {
    return this.#order.size;
  }

  /**
   * A reader of the file `key` (its identity). `close()` it when done: the file's entries are dropped
   * when its last reader leaves.
   */
  reader(key: string): ChainReader {
    let table = this.#files.get(key);
    if (table === undefined) {
      table = { positions: new Map(), slots: new Map() };
      this.#files.set(key, table);
    }
    const reader = new ChainReader(this, key, table);
    table.positions.set(reader, 0);
    return reader;
  }

  /** @internal */
  async take(table: FileTable, key: string, reader: ChainReader, prev: ChunkEntry | undefined, index: number, length: number, source: ChunkSource): Promise<ChunkEntry> {
    table.positions.set(reader, index + 1);
    const slot = table.slots.get(index);
    if (slot !== undefined && slot.buffer !== undefined && slot.buffer.length === length) {
      if (slot.parentId === (prev?.id ?? 0)) {
        slot.refs++;
        this.stats.adopted++;
        return slot;
      }
      // Rejoin: the slot continues another chain. If that chain's state before this chunk has the
      // same SHA-256 as ours, it hashed the same bytes we sent (collision resistance, the very property
      // the file's name relies on), so its state after this chunk covers exactly what we will have sent.
      const theirs = slot.parent;
      if (prev !== undefined && theirs !== undefined && theirs.index === prev.index) {
        slot.refs++;
        const same = await Promise.all([theirs.ready, prev.ready]).then(
          () => theirs.hex() === prev.hex(),
          () => false,
        );
        if (same) {
          this.stats.adopted++;
          this.stats.rejoined++;
          return slot;
        }
        slot.release();
      }
    }
    this.stats.read++;
    const parent = prev;
    const entry = new ChunkEntry(index, parent?.id ?? 0, this.pool.take(), length, this.pool, async (self) => {
      const { got, hex } = await this.hasher.fill(self, parent, self.buffer!, index * CHUNK, source);
      // −1: no state to continue (the parent failed — its readers saw that first — or the hashing
      // thread was restarted); not a verdict on the file
      if (got === -1) throw new Error(`chunk ${index}: the hash state of the chunk before it is gone`);
      if (got < length || hex === undefined) throw new ShortRead(index * CHUNK + got);
      self.settle(hex);
    });
    if (!table.slots.has(index) && this.#files.get(key) === table) {
      entry.parent = parent;
      this.#publish(table, key, entry);
    }
    return entry;
  }

  /**
   * The entry to drop from a full file table: first one no reader still needs (every reader is past
   * it), else the one whose next use is farthest: the largest distance to the nearest reader behind it
   * (a lagging reader's own entries are useless to readers ahead; the chunks just ahead of it are not).
   */
  #victim(table: FileTable): ChunkEntry {
    let victim: ChunkEntry | undefined;
    let worst = -1;
    for (const entry of table.slots.values()) {
      let distance = Number.MAX_SAFE_INTEGER;
      for (const position of table.positions.values()) if (position <= entry.index) distance = Math.min(distance, entry.index - position);
      if (distance > worst) {
        worst = distance;
        victim = entry;
      }
    }
    return victim!;
  }

  #publish(table: FileTable, key: string, entry: ChunkEntry): void {
    entry.refs++;
    table.slots.set(entry.index, entry);
    this.#order.set(entry, key);
    entry.ready.catch(() => this.#unpublish(entry));
    // chunks every reader is past serve no one but a reader yet to come, who starts at chunk 0: only the
    // file's first `window` chunks are kept for it; the rest go at once (a lone reader then cycles a few
    // buffers that stay in the CPU cache instead of a window's worth of cold ones)
    let lowest = Number.MAX_SAFE_INTEGER;
    for (const position of table.positions.values()) lowest = Math.min(lowest, position);
    for (const old of [...table.slots.values()]) if (old.index < lowest && old.index >= this.#window) this.#unpublish(old);
    if (table.slots.size > this.#window) this.#unpublish(this.#victim(table));
    if (this.#order.size > this.#maxEntries) this.#unpublish(this.#order.keys().next().value!);
  }

  #unpublish(entry: ChunkEntry): void {
    const key = this.#order.get(entry);
    if (key === undefined) return;
    this.#order.delete(entry);
    const table = this.#files.get(key);
    if (table?.slots.get(entry.index) === entry) table.slots.delete(entry.index);
    entry.parent = undefined;
    entry.release();
  }

  /** @internal */
  leave(key: string, table: FileTable, reader: ChainReader): void {
    table.positions.delete(reader);
    if (table.positions.size > 0) return;
    for (const entry of [...table.slots.values()]) this.#unpublish(entry);
    if (this.#files.get(key) === table) this.#files.delete(key);
  }
}

export class ChainReader {
  #closed = false;
  constructor(
    readonly chains: ChunkChains,
    readonly key: string,
    readonly table: FileTable,
  ) {}

  /**
   * The entry of chunk `index` continuing `prev` (undefined: chunk 0), adopted or read from `source`
   * (the caller's open file) and hashed. The caller holds
   * one reference: `release()` it, or hand it to a socket write that releases it when flushed.
   */
  take(prev: ChunkEntry | undefined, index: number, length: number, source: ChunkSource): Promise<ChunkEntry> {
    return this.chains.take(this.table, this.key, this, prev, index, length, source);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.chains.leave(this.key, this.table, this);
  }
}
