/**
 * Who reads a chunk and extends its chain's SHA-256 state (see shared-chunks.ts): the main thread with
 * the libuv pool reading (`InlineHasher`), or one thread per process that reads the chunk and hashes it
 * while it is hot in that core's cache (`ThreadHasher`), so that the main thread only writes to sockets.
 *
 * The thread reads into SharedArrayBuffer-backed buffers (BufferPool with `shared`) through the
 * response's own descriptor (descriptors are per process; the response waits for every fill it started
 * before it closes its file). A buffer is not reused before its fill has answered (the entry holds a
 * reference until then). The thread keeps one state per entry and drops it once the entry is garbage on
 * the main thread. Messages are handled in order, so a chunk can be sent before its parent is done.
 *
 * Protocol: { op: 'fill', id, parent (0 = fresh), fd, position, sab, length } → { id, got, hex } (the
 * running digest after this chunk; no hex when the file was short, got −1 when the parent failed) or
 * { id, error }; { op: 'free', ids }.
 */
import { createHash, type Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';

/** Where a chunk comes from: the response's open file. */
export interface ChunkSource {
  readonly handle: FileHandle;
  /** Reads `into.length` bytes at `position` (fewer only at the end of the file). */
  read(into: Buffer, position: number): Promise<number>;
  /** Every read or fill on the handle goes through here, so the handle outlives them. */
  track<T>(work: Promise<T>): Promise<T>;
}

export interface Filled {
  /** Bytes read; −1 when the parent chunk failed. */
  got: number;
  /** The running SHA-256 after this chunk, when it was read whole. */
  hex: string | undefined;
}

export interface ChainHasher {
  /** Buffers must come from a pool of this kind (SharedArrayBuffer-backed). */
  readonly shared: boolean;
  /**
   * Reads the chunk at `position` into `buffer` and extends `parent`'s state (undefined: a fresh
   * SHA-256) with exactly those bytes; the new state belongs to `entry` and is dropped with it.
   */
  fill(entry: { readonly id: number }, parent: { readonly id: number; readonly ready: Promise<void> } | undefined, buffer: Buffer, position: number, source: ChunkSource): Promise<Filled>;
}

export class InlineHasher implements ChainHasher {
  readonly shared = false;
  readonly #states = new WeakMap<object, Hash>();

  async fill(entry: object, parent: { readonly ready: Promise<void> } | undefined, buffer: Buffer, position: number, source: ChunkSource): Promise<Filled> {
    const [got] = await Promise.all([source.track(source.read(buffer, position)), parent?.ready]);
    if (got < buffer.length) return { got, hex: undefined };
    const from = parent === undefined ? undefined : this.#states.get(parent);
    if (parent !== undefined && from === undefined) return { got: -1, hex: undefined };
    const state = from === undefined ? createHash('sha256') : from.copy();
    state.update(buffer);
    this.#states.set(entry, state);
    return { got, hex: state.copy().digest('hex') };
  }
}

const THREAD_SOURCE = `
'use strict';
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { readSync } = require('node:fs');
const states = new Map();
parentPort.on('message', (m) => {
  if (m.op === 'free') {
    for (const id of m.ids) states.delete(id);
    return;
  }
  try {
    const parent = m.parent === 0 ? undefined : states.get(m.parent);
    if (m.parent !== 0 && parent === undefined) return parentPort.postMessage({ id: m.id, got: -1 });
    const view = new Uint8Array(m.sab, 0, m.length);
    let got = 0;
    while (got < m.length) {
      const n = readSync(m.fd, view, got, m.length - got, m.position + got);
      if (n === 0) break;
      got += n;
    }
    if (got < m.length) return parentPort.postMessage({ id: m.id, got });
    const state = parent === undefined ? createHash('sha256') : parent.copy();
    state.update(view);
    states.set(m.id, state);
    parentPort.postMessage({ id: m.id, got, hex: state.copy().digest('hex') });
  } catch (error) {
    parentPort.postMessage({ id: m.id, error: String((error && error.message) || error) });
  }
});
`;

export class ThreadHasher implements ChainHasher {
  readonly shared = true;
  #worker: Worker | undefined;
  readonly #waiting = new Map<number, { resolve: (f: Filled) => void; reject: (error: Error) => void }>();
  #freed: number[] = [];
  readonly #gone = new FinalizationRegistry<number>((id) => {
    this.#freed.push(id);
    if (this.#freed.length >= 64 && this.#worker !== undefined) {
      this.#worker.postMessage({ op: 'free', ids: this.#freed });
      this.#freed = [];
    }
  });

  #start(): Worker {
    const worker = new Worker(THREAD_SOURCE, { eval: true, execArgv: [], resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 4 } });
    worker.unref();
    const fail = (error: Error) => {
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      this.#freed = [];
      for (const w of this.#waiting.values()) w.reject(error);
      this.#waiting.clear();
    };
    worker.on('message', (m: { id: number; got?: number; hex?: string; error?: string }) => {
      const w = this.#waiting.get(m.id);
      this.#waiting.delete(m.id);
      if (this.#waiting.size === 0) worker.unref();
      if (m.got !== undefined) w?.resolve({ got: m.got, hex: m.hex });
      else w?.reject(new Error(m.error ?? 'reading or hashing a chunk failed'));
    });
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`hashing thread exited (code ${code})`)));
    this.#worker = worker;
    return worker;
  }

  fill(entry: { readonly id: number }, parent: { readonly id: number } | undefined, buffer: Buffer, position: number, source: ChunkSource): Promise<Filled> {
    if (!(buffer.buffer instanceof SharedArrayBuffer) || buffer.byteOffset !== 0) return Promise.reject(new Error('thread hashing needs SharedArrayBuffer-backed chunk buffers'));
    const worker = this.#worker ?? this.#start();
    return source.track(
      new Promise<Filled>((resolve, reject) => {
        if (this.#waiting.size === 0) worker.ref();
        this.#waiting.set(entry.id, { resolve, reject });
        this.#gone.register(entry, entry.id);
        worker.postMessage({ op: 'fill', id: entry.id, parent: parent?.id ?? 0, fd: source.handle.fd, position, sab: buffer.buffer, length: buffer.length });
      }),
    );
  }
}
