/**
 * Writes that keep the network and the disk busy at once, for bytes arriving in small socket chunks
 * (hub downloads; registry pulls write from their hash ring instead). See `CoalescingWriter`.
 */
import { fsError, type AirlockError } from '../errors.js';

/**
 * Size of a write buffer; a CoalescingWriter fills at most one while another is being written, so at most twice
 * this is unwritten — small on purpose: it is lost if the process is killed, and must be fetched again.
 */
const WRITE_BUFFER_BYTES = 1024 * 1024;
/** Write buffers kept for the next downloads (concurrent files × 2 covers the default). */
const MAX_SPARE_WRITE_BUFFERS = 8;
const spareWriteBuffers: Buffer[] = [];

function takeWriteBuffer(): Buffer {
  return spareWriteBuffers.pop() ?? Buffer.allocUnsafeSlow(WRITE_BUFFER_BYTES);
}

function giveWriteBuffer(buffer: Buffer): void {
  if (spareWriteBuffers.length < MAX_SPARE_WRITE_BUFFERS) spareWriteBuffers.push(buffer);
}

/**
 * Writes, one in flight. A chunk that arrives with nothing in flight is written as it is;
 * chunks that arrive meanwhile are COPIED into a reused write buffer, written as one when the disk is
 * free. Not queuing the network's own buffers matters: held until written, they outlived young-gen
 * collection and cost V8 a mark-compact per ~30 MiB downloaded (docs/performance.md). Data loss on a
 * kill is bounded by two write buffers, so a resumed run re-downloads almost nothing.
 */
export class CoalescingWriter {
  /** The buffer being filled (from the spare list), its bytes so far and their file position. */
  #buffer: Buffer | undefined;
  #filled = 0;
  #at = 0;
  #inFlight: Promise<void> | undefined;
  #error: unknown;
  /** @param writeAt writes all of `data` at `position` (a positioned write, or an append when positions are sequential) */
  constructor(
    readonly writeAt: (data: Buffer, position: number) => Promise<void>,
    readonly path: string,
  ) {}

  /** `chunk` must not change until `drain()` resolved (it may be written without a copy). */
  async write(chunk: Buffer, position: number): Promise<void> {
    if (this.#error !== undefined) throw this.#failure();
    if (this.#filled > 0 && this.#at + this.#filled !== position) await this.drain();
    if (this.#inFlight === undefined && this.#filled === 0) {
      this.#start(chunk, position, undefined);
      return;
    }
    for (let done = 0; done < chunk.length; ) {
      if (this.#buffer === undefined) this.#buffer = takeWriteBuffer();
      if (this.#filled === 0) this.#at = position + done;
      const n = chunk.copy(this.#buffer, this.#filled, done, Math.min(chunk.length, done + this.#buffer.length - this.#filled));
      this.#filled += n;
      done += n;
      // full: wait until it is handed to the disk (not until written: the next one fills meanwhile)
      while (this.#filled === WRITE_BUFFER_BYTES && this.#error === undefined) {
        if (this.#inFlight !== undefined) await this.#inFlight;
        else this.#flush();
      }
      if (this.#error !== undefined) throw this.#failure();
    }
  }

  #start(data: Buffer, at: number, spare: Buffer | undefined): void {
    this.#inFlight = this.writeAt(data, at).then(
      () => {
        this.#inFlight = undefined;
        if (spare !== undefined) giveWriteBuffer(spare);
        this.#flush();
      },
      (error: unknown) => {
        this.#error = error;
        this.#inFlight = undefined;
        if (spare !== undefined) giveWriteBuffer(spare);
      },
    );
  }

  /** Writes what is buffered, when nothing is in flight. */
  #flush(): void {
    if (this.#inFlight !== undefined || this.#filled === 0 || this.#error !== undefined) return;
    const buffer = this.#buffer!;
    const data = buffer.subarray(0, this.#filled);
    this.#buffer = undefined;
    this.#filled = 0;
    this.#start(data, this.#at, buffer);
  }

  #failure(): AirlockError {
    // what is still buffered can never be written now
    if (this.#buffer !== undefined) giveWriteBuffer(this.#buffer);
    this.#buffer = undefined;
    this.#filled = 0;
    return fsError(this.#error, 'write', this.path);
  }

  async drain(): Promise<void> {
    while (this.#error === undefined && (this.#inFlight !== undefined || this.#filled > 0)) {
      if (this.#inFlight !== undefined) await this.#inFlight;
      else this.#flush();
    }
    if (this.#error !== undefined) throw this.#failure();
  }
}

