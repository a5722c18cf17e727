/**
 * Read buffers that are reused, for one sequential read of a bundle.
 *
 * Why: a fresh 1 MiB buffer per read is 2,048 buffers per 2 GiB. They live just long enough (parser
 * queue, hashing ring, staging write) to be promoted, so V8 frees them only by full mark-compacts —
 * measured at a quarter of verify's CPU time and a third slower than `openssl dgst` (docs/performance.md).
 *
 * Safety is what makes reuse hard: the tar parser hands the payload sink VIEWS of these buffers, and
 * the bytes a sink writes must be the very bytes that were hashed. So a buffer is refilled only once
 * every byte it held is known to be done with:
 *
 *  - every buffer read is recorded with the stream range it holds (`filled`), so the consumer can
 *    name a payload chunk's stream position from the chunk itself (`offsetOf`);
 *  - the consumer (the bundle reader) calls `release(end)` only after the sink's write of a chunk
 *    ending at `end` settled — chunks arrive in stream order, so every byte before `end` (headers,
 *    padding, earlier chunks) is then done with too;
 *  - `take()` refills the oldest buffer only if its whole range is below the released mark; else it
 *    allocates (up to `maxPooled` buffers are kept, beyond that one-off buffers the GC frees). It
 *    never waits: a stretch of the stream with no payload (headers only) cannot stall the read.
 *
 * A consumer that keeps a chunk past its write's promise must copy it (see PayloadTarget.write).
 */
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';

/** What a bundle read keeps in flight at most before it allocates: the parser, one write, read-ahead. */
export const BUNDLE_POOL = { bufferBytes: 1024 * 1024, maxPooled: 16 } as const;

export class ReadPool {
  readonly #size: number;
  readonly #maxPooled: number;
  /** Pooled buffers holding data, oldest first (refilled in this order). */
  readonly #filled: Array<{ buffer: Buffer; end: number }> = [];
  /** Every buffer read, pooled or not, by its memory: the stream offset of its first byte. */
  readonly #starts = new WeakMap<ArrayBufferLike, number>();
  readonly #own = new WeakSet<Buffer>();
  #pooled = 0;
  #streamBytes = 0;
  #released = 0;

  constructor(options: { bufferBytes: number; maxPooled: number }) {
    this.#size = options.bufferBytes;
    this.#maxPooled = options.maxPooled;
  }

  /** A buffer to read the next bytes into; hand it to `filled` right after the read. */
  take(): Buffer {
    const oldest = this.#filled[0];
    if (oldest !== undefined && oldest.end <= this.#released) {
      this.#filled.shift();
      return oldest.buffer;
    }
    if (this.#pooled < this.#maxPooled) {
      this.#pooled += 1;
      const buffer = Buffer.allocUnsafeSlow(this.#size);
      this.#own.add(buffer);
      return buffer;
    }
    return Buffer.allocUnsafeSlow(this.#size);
  }

  /** `buffer` (from `take`) now holds the next `bytes` bytes of the stream; returns the view to pass on. */
  filled(buffer: Buffer, bytes: number): Buffer {
    const start = this.#streamBytes;
    this.#streamBytes += bytes;
    this.#starts.set(buffer.buffer, start - buffer.byteOffset);
    if (this.#own.has(buffer)) this.#filled.push({ buffer, end: this.#streamBytes });
    return bytes === buffer.byteLength ? buffer : buffer.subarray(0, bytes);
  }

  /** `buffer` (from `take`) was not filled (end of file): it is free for the next `take`. */
  unused(buffer: Buffer): void {
    if (this.#own.has(buffer)) this.#filled.unshift({ buffer, end: 0 });
  }

  /** The stream offset of `chunk`'s first byte, when it is a view into a buffer this pool read. */
  offsetOf(chunk: Uint8Array): number | undefined {
    const base = this.#starts.get(chunk.buffer);
    return base === undefined ? undefined : base + chunk.byteOffset;
  }

  /** Every byte before stream offset `end` is done with: buffers wholly below it may be refilled. */
  release(end: number): void {
    if (end > this.#released) this.#released = Math.min(end, this.#streamBytes);
  }
}

/**
 * Reads `handle` from its current position to the end in buffers from `pool` (each chunk a view of
 * one of them). The caller closes the handle: a generator returned before its first step never runs
 * its own cleanup.
 */
export async function* readPooled(handle: FileHandle, pool: ReadPool): AsyncGenerator<Buffer> {
  for (;;) {
    const buffer = pool.take();
    const { bytesRead } = await handle.read(buffer, 0, buffer.byteLength, null);
    if (bytesRead === 0) {
      pool.unused(buffer);
      return;
    }
    yield pool.filled(buffer, bytesRead);
  }
}

/**
 * A stream of pooled chunks. Object mode, so each chunk stays the very view of a pooled buffer (a byte
 * stream may join buffered chunks into a new one, which the reader could not release).
 */
export function pooledStream(chunks: AsyncIterable<Buffer>): Readable {
  return Readable.from(chunks, { objectMode: true, highWaterMark: 2 });
}
