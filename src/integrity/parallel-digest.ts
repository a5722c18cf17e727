/**
 * Hashing off the event loop (STYLE habit 10, at the machine's speed): the bundle reader copies each
 * piece of the bundle ONCE into a SharedArrayBuffer ring; one worker hashes each payload file
 * (SHA-256, plus the git blob SHA-1 when the manifest names the file by it) and, only when asked, a
 * second one hashes the whole stream (the bundle's own SHA-256). The main thread only reads, parses
 * the tar and writes staging, so reading, hashing and writing overlap.
 *
 * Trust: a payload file is hashed over the very memory the tar parser handed to the sink. A payload
 * chunk is located in the ring by identity (it must be a view into a piece this hasher copied, at a
 * known offset, whose ring slot is still live); anything else (a parser that copied, a slot already
 * recycled) is copied and sent to the worker instead. Either way the worker hashes exactly the bytes
 * the sink receives, in order, and the reader trusts an entry only after the digest came back.
 *
 * Small files are hashed inline (a round trip to the worker would cost more than the hash).
 */
import { Worker } from 'node:worker_threads';
import { AirlockError } from '../errors.js';
import { Digester, type Digests } from './digest.js';
import { HASH_WORKER_SOURCE } from './hash-worker.js';

/** Largest piece copied into the ring at once (1 MiB reads are the sweet spot here). */
export const HASH_PIECE_BYTES = 1024 * 1024;
/** Ring size: the pipeline is a few pieces deep; the rest is slack so slots outlive their use. */
const RING_BYTES = 8 * HASH_PIECE_BYTES;
/** Files up to this size are hashed on the main thread. */
const INLINE_FILE_MAX = 256 * 1024;
/** Bytes sent by copy (the fallback path) that may wait in the file worker's queue. */
const MAX_COPIED_IN_FLIGHT = 8 * HASH_PIECE_BYTES;

interface DigestReply {
  sha256: string;
  sha1?: string;
}

type LaneMessage =
  | { op: 'ack'; seq: number }
  | { op: 'digest'; seq: number; sha256: string; sha1?: string }
  | { op: 'error'; seq: number; message: string };

/** One hashing worker and its ordered command stream. */
class HashLane {
  readonly #worker: Worker;
  #seq = 0;
  #acked = 0;
  readonly #digests = new Map<number, { resolve: (d: DigestReply) => void; reject: (e: Error) => void }>();
  #failure: Error | undefined;
  /** Called on every reply (the owner wakes whoever waits for ring space). */
  onProgress: () => void = () => undefined;

  constructor() {
    this.#worker = new Worker(HASH_WORKER_SOURCE, {
      eval: true,
      execArgv: [],
      // it holds no data of its own (the ring is shared): a small heap keeps the RSS budget for the reader
      resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 4 },
    });
    this.#worker.on('message', (message: LaneMessage) => {
      switch (message.op) {
        case 'ack':
          this.#acked = Math.max(this.#acked, message.seq);
          break;
        case 'digest': {
          this.#acked = Math.max(this.#acked, message.seq);
          const waiter = this.#digests.get(message.seq);
          this.#digests.delete(message.seq);
          waiter?.resolve(message.sha1 === undefined ? { sha256: message.sha256 } : { sha256: message.sha256, sha1: message.sha1 });
          break;
        }
        case 'error':
          this.#fail(new Error(message.message));
          break;
      }
      this.onProgress();
    });
    this.#worker.on('error', (error: Error) => this.#fail(error));
    this.#worker.on('exit', (code) => this.#fail(new Error(`hashing thread exited (code ${code})`)));
  }

  get failure(): Error | undefined {
    return this.#failure;
  }

  #fail(error: Error): void {
    if (this.#failure !== undefined) return;
    this.#failure = error;
    for (const waiter of this.#digests.values()) waiter.reject(error);
    this.#digests.clear();
    this.onProgress();
  }

  /** Every command up to `seq` was carried out. */
  done(seq: number): boolean {
    return this.#acked >= seq;
  }

  send(message: Record<string, unknown>, transfer?: ArrayBuffer[]): number {
    const seq = ++this.#seq;
    this.#worker.postMessage({ ...message, seq }, transfer);
    return seq;
  }

  /** `id`: which stream of the thread (see the worker's protocol); 0 is the default one. */
  digest(id = 0): Promise<DigestReply> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      this.#digests.set(this.send(id === 0 ? { op: 'end' } : { op: 'end', id }), { resolve, reject });
    });
  }

  ref(): void {
    this.#worker.ref();
  }

  unref(): void {
    this.#worker.unref();
  }

  terminate(): void {
    this.#failure ??= new Error('hashing thread stopped');
    void this.#worker.terminate();
  }
}

/** Idle lanes, kept (unref'd: they never hold the process open) so repeated reads skip the start-up. */
const idleLanes: HashLane[] = [];
const MAX_IDLE_LANES = 4;

/**
 * Stops the idle hashing threads. For a command that has done its hashing and goes on to other work
 * (publish uploads for minutes after its verification pass): a kept thread holds its own heap.
 */
export function stopIdleHashThreads(): void {
  for (const lane of idleLanes.splice(0)) lane.terminate();
}

function acquireLane(): HashLane {
  const lane = idleLanes.pop() ?? new HashLane();
  lane.ref();
  return lane;
}

function releaseLane(lane: HashLane, reusable: boolean): void {
  lane.onProgress = () => undefined;
  if (reusable && lane.failure === undefined && idleLanes.length < MAX_IDLE_LANES) {
    lane.unref();
    idleLanes.push(lane);
  } else {
    lane.terminate();
  }
}

interface Region {
  start: number;
  end: number;
  /** The bundle lane's command that hashes it. */
  bundleSeq: number;
  /** The file lane's last command that reads it (0: none). */
  fileSeq: number;
  live: boolean;
}

interface Piece {
  byteOffset: number;
  length: number;
  region: Region;
  /** Where in the ring its copy is. */
  at: number;
}

/** A command not yet sent: its region is not free until it is sent and done. */
const PENDING = Number.POSITIVE_INFINITY;
/** Small pieces (and small payload chunks) are sent to the workers in batches of about this size. */
const BATCH_BYTES = 256 * 1024;

/** Hashes one payload file; `digest()` only after the last `update()`. */
export interface FileDigester {
  update(chunk: Buffer): Promise<void> | void;
  digest(): Promise<Digests>;
}

function laneError(error: Error): AirlockError {
  return new AirlockError('E_INTERNAL', `a hashing thread failed: ${error.message}`, {
    hint: 'this is a bug or the machine ran out of memory; run the command again',
    cause: error,
  });
}

/**
 * The hashing side of one bundle read. `append` every piece of the stream in order (≤ HASH_PIECE_BYTES,
 * before handing it to the parser), `file()` for each payload entry, `bundleDigest()` at the end, and
 * `close()` on every path.
 */
export class ParallelDigest {
  readonly #ring = new SharedArrayBuffer(RING_BYTES);
  readonly #view = new Uint8Array(this.#ring);
  /** Hashes the whole stream; undefined when the caller did not ask for the stream's SHA-256. */
  readonly #bundle: HashLane | undefined;
  readonly #file: HashLane;
  readonly #regions: Region[] = [];
  #regionHead = 0;
  /**
   * Pieces by the memory they are views of. Weak: holding the parser's source buffers alive would
   * promote them to the old generation and turn every megabyte read into mark-compact work.
   */
  readonly #pieces = new WeakMap<ArrayBufferLike, Piece[]>();
  #head = 0;
  /** The pump (ring space) and the payload reader (copies in flight) may both be waiting. */
  #waiters: Array<() => void> = [];
  #closed = false;
  #copiedInFlight: Array<{ seq: number; bytes: number }> = [];
  #copiedBytes = 0;
  /** The newest region, while its bundle command is not sent yet. */
  #openRegion: Region | undefined;
  /** A file range gathered from contiguous chunks, not sent yet. */
  #pendingFile: { at: number; len: number; regions: Region[] } | undefined;

  /**
   * `wholeStream`: also hash every byte appended (the bundle's own SHA-256) on a second worker. It
   * costs a second full hash pass — on two cores, a third of verify's speed — so it is asked for only
   * when someone wants that number (`--sha256`, `--report`).
   */
  constructor(options: { wholeStream: boolean }) {
    const wake = (): void => this.#wakeAll();
    this.#file = acquireLane();
    this.#file.onProgress = wake;
    this.#file.send({ op: 'ring', sab: this.#ring });
    if (options.wholeStream) {
      this.#bundle = acquireLane();
      this.#bundle.onProgress = wake;
      this.#bundle.send({ op: 'ring', sab: this.#ring });
      this.#bundle.send({ op: 'begin' });
    }
  }

  #check(): void {
    if (this.#closed) throw new AirlockError('E_INTERNAL', 'hashing was stopped');
    const failure = this.#bundle?.failure ?? this.#file.failure;
    if (failure !== undefined) throw laneError(failure);
  }

  #wakeAll(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  #progress(): Promise<void> {
    return new Promise((resolve) => {
      this.#waiters.push(resolve);
    });
  }

  /** Frees the oldest ring regions both workers are done with. */
  #reclaim(): void {
    while (this.#regionHead < this.#regions.length) {
      const region = this.#regions[this.#regionHead]!;
      const streamDone = this.#bundle === undefined ? region.bundleSeq !== PENDING : this.#bundle.done(region.bundleSeq);
      if (!streamDone || !this.#file.done(region.fileSeq)) break;
      region.live = false;
      this.#regionHead += 1;
    }
    if (this.#regionHead > 1024) {
      this.#regions.splice(0, this.#regionHead);
      this.#regionHead = 0;
    }
  }

  /** Where `len` contiguous free bytes are, if anywhere (regions are freed oldest first). */
  #fit(len: number): number | undefined {
    if (this.#regionHead === this.#regions.length) {
      this.#head = 0;
      return 0;
    }
    const tail = this.#regions[this.#regionHead]!.start;
    if (this.#head > tail) {
      if (this.#head + len <= RING_BYTES) return this.#head;
      return len <= tail ? 0 : undefined;
    }
    if (this.#head < tail) return this.#head + len <= tail ? this.#head : undefined;
    return undefined; // head === tail with live regions: full
  }

  /** Posts the bundle bytes appended since the last flush (small pieces are hashed in batches). */
  #flushBundle(): void {
    const open = this.#openRegion;
    if (open === undefined) return;
    this.#openRegion = undefined;
    open.bundleSeq = this.#bundle === undefined ? 0 : this.#bundle.send({ op: 'ranges', ranges: [open.start, open.end - open.start] });
  }

  /** Posts the file range gathered since the last flush. */
  #flushFile(): void {
    const pending = this.#pendingFile;
    if (pending === undefined) return;
    this.#pendingFile = undefined;
    const seq = this.#file.send({ op: 'ranges', ranges: [pending.at, pending.len] });
    for (const region of pending.regions) region.fileSeq = seq;
  }

  async #waitForProgress(): Promise<void> {
    // whatever is still gathered must be sent, or nothing can complete
    this.#flushBundle();
    this.#flushFile();
    this.#check();
    await this.#progress();
  }

  /** Copies the next piece of the stream into the ring and queues it for the bundle hash. */
  async append(piece: Buffer): Promise<void> {
    const len = piece.byteLength;
    if (len === 0) return;
    if (len > HASH_PIECE_BYTES) throw new AirlockError('E_INTERNAL', `a piece of ${len} bytes is larger than ${HASH_PIECE_BYTES}`);
    let at: number | undefined;
    for (;;) {
      this.#check();
      this.#reclaim();
      at = this.#fit(len);
      if (at !== undefined) break;
      await this.#waitForProgress();
    }
    this.#view.set(piece, at);
    this.#head = at + len;
    let region = this.#openRegion;
    if (region !== undefined && region.end === at) {
      region.end += len;
    } else {
      this.#flushBundle();
      region = { start: at, end: at + len, bundleSeq: PENDING, fileSeq: 0, live: true };
      this.#regions.push(region);
      this.#openRegion = region;
    }
    const record: Piece = { byteOffset: piece.byteOffset, length: len, region, at };
    const same = this.#pieces.get(piece.buffer);
    if (same === undefined) this.#pieces.set(piece.buffer, [record]);
    else {
      // one big source chunk split into pieces, or a reused read buffer (ReadPool) filled again: keep
      // only live pieces whose bytes were not just overwritten — a chunk must never be matched to the
      // ring copy of what its memory held before
      const end = piece.byteOffset + len;
      const kept = same.filter((p) => p.region.live && (p.byteOffset + p.length <= piece.byteOffset || p.byteOffset >= end));
      kept.push(record);
      this.#pieces.set(piece.buffer, kept);
    }
    if (region.end - region.start >= BATCH_BYTES) this.#flushBundle();
  }

  /** The ring offset holding exactly `chunk`'s bytes, when `chunk` is a view into a live piece. */
  #locate(chunk: Buffer): { at: number; region: Region } | undefined {
    const pieces = this.#pieces.get(chunk.buffer);
    if (pieces === undefined) return undefined;
    for (const piece of pieces) {
      const rel = chunk.byteOffset - piece.byteOffset;
      if (rel < 0 || rel + chunk.byteLength > piece.length) continue;
      return piece.region.live ? { at: piece.at + rel, region: piece.region } : undefined;
    }
    return undefined;
  }

  /** A digester for the next payload file (sha256, plus the git blob sha1 when `gitBlobSize` is given). */
  file(size: number, gitBlobSize?: number): FileDigester {
    if (size <= INLINE_FILE_MAX) {
      const digester = new Digester(gitBlobSize);
      return {
        update: (chunk) => digester.update(chunk),
        digest: async () => digester.digest(),
      };
    }
    this.#check();
    this.#file.send(gitBlobSize === undefined ? { op: 'begin' } : { op: 'begin', gitBlobSize });
    let bytes = 0;
    return {
      update: async (chunk) => {
        this.#check();
        const len = chunk.byteLength;
        if (len === 0) return;
        bytes += len;
        const found = this.#locate(chunk);
        if (found !== undefined) {
          const pending = this.#pendingFile;
          if (pending !== undefined && pending.at + pending.len === found.at) {
            pending.len += len;
            if (pending.regions[pending.regions.length - 1] !== found.region) pending.regions.push(found.region);
          } else {
            this.#flushFile();
            this.#pendingFile = { at: found.at, len, regions: [found.region] };
          }
          found.region.fileSeq = PENDING;
          if (this.#pendingFile!.len >= BATCH_BYTES) this.#flushFile();
          return;
        }
        this.#flushFile();
        // not a view into the ring (or its slot was recycled): hash a copy of these very bytes
        const copy = new Uint8Array(len);
        copy.set(chunk);
        const seq = this.#file.send({ op: 'bytes', bytes: copy }, [copy.buffer]);
        this.#copiedInFlight.push({ seq, bytes: len });
        this.#copiedBytes += len;
        while (this.#copiedBytes > MAX_COPIED_IN_FLIGHT) {
          while (this.#copiedInFlight.length > 0 && this.#file.done(this.#copiedInFlight[0]!.seq)) this.#copiedBytes -= this.#copiedInFlight.shift()!.bytes;
          if (this.#copiedBytes <= MAX_COPIED_IN_FLIGHT) break;
          await this.#waitForProgress();
        }
      },
      digest: async () => {
        this.#check();
        this.#flushFile();
        let reply: DigestReply;
        try {
          reply = await this.#file.digest();
        } catch (error) {
          throw laneError(error as Error);
        }
        this.#copiedInFlight = [];
        this.#copiedBytes = 0;
        const out: Digests = { size: bytes, sha256: reply.sha256 };
        if (reply.sha1 !== undefined) out.gitSha1 = reply.sha1;
        return out;
      },
    };
  }

  /** SHA-256 of every byte appended (only when constructed with `wholeStream`). */
  async bundleDigest(): Promise<string> {
    this.#check();
    this.#flushBundle();
    if (this.#bundle === undefined) throw new AirlockError('E_INTERNAL', 'the whole-stream hash was not asked for');
    try {
      return (await this.#bundle.digest()).sha256;
    } catch (error) {
      throw laneError(error as Error);
    }
  }

  /** Releases the workers: back to the pool after a clean finish, else stopped. Idempotent. */
  close(clean: boolean): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#bundle !== undefined) releaseLane(this.#bundle, clean);
    releaseLane(this.#file, clean);
    this.#wakeAll();
  }
}

/** Streams below this size are hashed on the main thread: a round trip to the thread costs more. */
const STREAM_INLINE_MAX = 1024 * 1024;
/**
 * A StreamDigest's ring: this many slots of this size (so at most this much is waiting to be hashed, or
 * written). A slot is also one write when the stream writes: 512 KiB buffered writes were the cheapest
 * size measured here (one buffer written over and over to ext4: 0.17 s of system time per GiB, against
 * 0.50 s for 1 MiB and 0.33 s for 128 KiB writes), and 8 slots keep the disk and the hashing thread a few
 * slots behind the network.
 */
const STREAM_SLOT_BYTES = 512 * 1024;
const STREAM_SLOTS = 8;

/** The one hashing thread every StreamDigest shares (each stream has its own id and ring there). */
let streamLane: HashLane | undefined;
const streamLaneUsers = new Map<HashLane, number>();
let nextStreamId = 1;
const streamWaiters = new Set<() => void>();

function takeStreamLane(): HashLane {
  if (streamLane === undefined || streamLane.failure !== undefined) {
    streamLane = acquireLane();
    streamLane.onProgress = () => {
      for (const wake of [...streamWaiters]) wake();
    };
  }
  streamLaneUsers.set(streamLane, (streamLaneUsers.get(streamLane) ?? 0) + 1);
  return streamLane;
}

function giveStreamLane(lane: HashLane): void {
  const left = (streamLaneUsers.get(lane) ?? 1) - 1;
  if (left > 0) {
    streamLaneUsers.set(lane, left);
    return;
  }
  streamLaneUsers.delete(lane);
  if (streamLane === lane) streamLane = undefined;
  // kept for the next stream when healthy (unref'd: it never holds the process open), else stopped
  releaseLane(lane, true);
}

export interface StreamDigestOptions {
  /** Also compute the git blob SHA-1 of a blob of this size. */
  gitBlobSize?: number;
  /**
   * Also write the bytes, in order, from the very memory that is hashed: each full slot of the ring (and the
   * last, partial one) is handed to `write` — one call at a time, a view the caller must not keep — and
   * refilled only after both its hash and its write are done. A byte received is then copied once in all
   * (socket buffer → ring), and what is written is exactly what was hashed. A rejection ends the stream:
   * the next `update` or `digest` throws it as it is (the caller makes it the error it wants users to see).
   */
  write?: (data: Buffer) => Promise<void>;
}

/**
 * SHA-256 (and the git blob SHA-1 when asked) of bytes that arrive in buffers we do not own — a
 * socket's chunks during a registry pull — on the shared hashing thread, so the main thread only
 * receives (and, with `write`, hands slots to the disk). Each chunk is copied once into the stream's
 * SharedArrayBuffer ring; a full slot is handed to the thread (and to `write`), and `update` waits only
 * when every slot is still in use. Streams of at most 1 MiB are hashed inline (and written chunk by
 * chunk). `digest()` (or `close()`, on failure) ends the stream; `settled()` waits for writes in flight.
 */
export class StreamDigest {
  readonly #inline: Digester | undefined;
  readonly #lane: HashLane | undefined;
  readonly #id = nextStreamId++;
  readonly #ring: SharedArrayBuffer | undefined;
  readonly #view: Uint8Array | undefined;
  readonly #write: ((data: Buffer) => Promise<void>) | undefined;
  /** The command that hashes each slot (0: free). */
  readonly #slotSeq = new Array<number>(STREAM_SLOTS).fill(0);
  /** The write of each slot, while it may be in flight. */
  readonly #slotWrite = new Array<Promise<void> | undefined>(STREAM_SLOTS).fill(undefined);
  /** The last write queued: writes run one at a time, in order. Never rejects (see #writeFailure). */
  #writing: Promise<void> = Promise.resolve();
  #writeFailure: { error: unknown } | undefined;
  #slot = 0;
  #filled = 0;
  #size = 0;
  #ended = false;

  constructor(expectedSize: number, options: StreamDigestOptions = {}) {
    this.#write = options.write;
    if (expectedSize <= STREAM_INLINE_MAX) {
      this.#inline = new Digester(options.gitBlobSize);
      return;
    }
    this.#ring = new SharedArrayBuffer(STREAM_SLOT_BYTES * STREAM_SLOTS);
    this.#view = new Uint8Array(this.#ring);
    this.#lane = takeStreamLane();
    this.#lane.send({ op: 'ring', id: this.#id, sab: this.#ring });
    this.#lane.send(options.gitBlobSize === undefined ? { op: 'begin', id: this.#id } : { op: 'begin', id: this.#id, gitBlobSize: options.gitBlobSize });
  }

  #check(lane: HashLane | undefined): void {
    if (this.#writeFailure !== undefined) throw this.#writeFailure.error;
    if (this.#ended) throw new AirlockError('E_INTERNAL', 'hashing was stopped');
    if (lane?.failure !== undefined) throw laneError(lane.failure);
  }

  #queueWrite(data: Buffer): Promise<void> {
    const write = this.#write!;
    const queued = this.#writing.then(async () => {
      if (this.#writeFailure !== undefined) return;
      try {
        await write(data);
      } catch (error) {
        this.#writeFailure = { error };
      }
    });
    this.#writing = queued;
    return queued;
  }

  /** Hands the filled part of the current slot to the thread (and to `write`) and moves to the next slot. */
  #flush(lane: HashLane): void {
    if (this.#filled === 0) return;
    const at = this.#slot * STREAM_SLOT_BYTES;
    this.#slotSeq[this.#slot] = lane.send({ op: 'ranges', id: this.#id, ranges: [at, this.#filled] });
    if (this.#write !== undefined) this.#slotWrite[this.#slot] = this.#queueWrite(Buffer.from(this.#ring!, at, this.#filled));
    this.#slot = (this.#slot + 1) % STREAM_SLOTS;
    this.#filled = 0;
  }

  /** Waits until the current slot is free (its write and its last hashing command done). */
  async #slotFree(lane: HashLane): Promise<void> {
    const written = this.#slotWrite[this.#slot];
    if (written !== undefined) {
      await written;
      this.#slotWrite[this.#slot] = undefined;
      this.#check(lane);
    }
    while (!lane.done(this.#slotSeq[this.#slot]!)) {
      this.#check(lane);
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          streamWaiters.delete(wake);
          resolve();
        };
        streamWaiters.add(wake);
        // it may have finished between the check and now
        if (lane.done(this.#slotSeq[this.#slot]!) || lane.failure !== undefined) wake();
      });
    }
  }

  /** `chunk` may be reused by the caller as soon as this resolves. */
  async update(chunk: Buffer): Promise<void> {
    this.#size += chunk.byteLength;
    if (this.#inline !== undefined) {
      this.#check(undefined);
      this.#inline.update(chunk);
      if (this.#write !== undefined) {
        await this.#queueWrite(chunk);
        this.#check(undefined);
      }
      return;
    }
    const lane = this.#lane!;
    for (let done = 0; done < chunk.byteLength; ) {
      this.#check(lane);
      if (this.#filled === 0) await this.#slotFree(lane);
      const n = Math.min(chunk.byteLength - done, STREAM_SLOT_BYTES - this.#filled);
      this.#view!.set(chunk.subarray(done, done + n), this.#slot * STREAM_SLOT_BYTES + this.#filled);
      this.#filled += n;
      done += n;
      if (this.#filled === STREAM_SLOT_BYTES) this.#flush(lane);
    }
  }

  /** The digests of everything given to `update`, once every byte of it was also written (with `write`). */
  async digest(): Promise<Digests> {
    if (this.#inline !== undefined) {
      await this.#writing;
      this.#check(undefined);
      return this.#inline.digest();
    }
    const lane = this.#lane!;
    this.#check(lane);
    this.#flush(lane);
    let reply: DigestReply;
    try {
      const digested = lane.digest(this.#id);
      digested.catch(() => undefined); // awaited below, after the writes: not an unhandled rejection meanwhile
      await this.#writing;
      this.#check(lane);
      reply = await digested;
    } catch (error) {
      throw error instanceof AirlockError || error === this.#writeFailure?.error ? error : laneError(error as Error);
    } finally {
      this.close();
    }
    const out: Digests = { size: this.#size, sha256: reply.sha256 };
    if (reply.sha1 !== undefined) out.gitSha1 = reply.sha1;
    return out;
  }

  /** Resolves once no write is in flight (never rejects): before the file written to is closed. */
  async settled(): Promise<void> {
    await this.#writing;
  }

  /** Ends the stream (idempotent): the thread forgets it, and stops when no stream needs it. */
  close(): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#lane === undefined) return;
    if (this.#lane.failure === undefined) this.#lane.send({ op: 'drop', id: this.#id });
    giveStreamLane(this.#lane);
  }
}
