/**
 * The shared hash chains behind `airlock serve` (src/serve/shared-chunks.ts): readers in lockstep share
 * one read and one hash pass; a reader adopts another's chunk only when it continues the very entry the
 * reader holds, so a fork never mixes its bytes with another chain's digest; buffers go back to the pool
 * only when nobody holds them. The hashing thread reads and hashes the same way.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, truncate, writeFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ThreadHasher, type ChunkSource } from '../../src/serve/chain-hasher.ts';
import { BufferPool, CHUNK, ChunkChains, ShortRead, type ChainReader, type ChunkEntry } from '../../src/serve/shared-chunks.ts';

const LEN = 8;
/** A "file" of `n` chunks whose bytes can be changed between reads. */
function fakeFile(n: number, fill = 1) {
  const chunks = Array.from({ length: n }, (_, k) => Buffer.alloc(LEN, fill + k));
  let reads = 0;
  return {
    chunks,
    get reads() {
      return reads;
    },
    /** The chunk source (positions are k·CHUNK). */
    source: {
      handle: undefined as unknown as FileHandle,
      read: async (into: Buffer, position: number) => {
        reads++;
        const chunk = chunks[position / CHUNK]!;
        chunk.copy(into);
        return chunk.length;
      },
      track: <T>(work: Promise<T>) => work,
    } satisfies ChunkSource,
  };
}
const sha = (...parts: Buffer[]) => createHash('sha256').update(Buffer.concat(parts)).digest('hex');

/** Walks `reader` over every chunk; returns the entries (each still held) and the bytes it would send. */
async function walk(reader: ChainReader, file: ReturnType<typeof fakeFile>): Promise<{ entries: ChunkEntry[]; bytes: Buffer }> {
  const entries: ChunkEntry[] = [];
  let prev: ChunkEntry | undefined;
  for (let k = 0; k < file.chunks.length; k++) {
    prev = await reader.take(prev, k, LEN, file.source);
    await prev.ready;
    entries.push(prev);
  }
  return { entries, bytes: Buffer.concat(entries.map((e) => Buffer.from(e.buffer!))) };
}

test('readers in lockstep share one read and one hash per chunk, and all see the same checked digest', async () => {
  const chains = new ChunkChains({ window: 4 });
  const file = fakeFile(10);
  const readers = [chains.reader('f'), chains.reader('f'), chains.reader('f')];
  const prev: Array<ChunkEntry | undefined> = [undefined, undefined, undefined];
  for (let k = 0; k < 10; k++) {
    for (let r = 0; r < 3; r++) prev[r] = await readers[r]!.take(prev[r], k, LEN, file.source);
    assert.ok(prev[1] === prev[0] && prev[2] === prev[0], `chunk ${k} is one entry for all`);
    await prev[0]!.ready;
  }
  assert.equal(file.reads, 10);
  assert.deepEqual(chains.stats, { read: 10, adopted: 20, rejoined: 0 });
  assert.equal(prev[0]!.hex(), sha(...file.chunks));
});

test('a reader adopts only an entry continuing its own entry, or another chain whose prefix digest equals its own', async () => {
  const chains = new ChunkChains({ window: 2 });
  const file = fakeFile(3);
  const a = chains.reader('f');
  const a0 = await a.take(undefined, 0, LEN, file.source);
  // W took chunk 0 and stays there: A's chunks 1 and 2 are next for W, chunk 0 is of no use to anyone
  const w = chains.reader('f');
  assert.equal(await w.take(undefined, 0, LEN, file.source), a0);
  const a1 = await a.take(a0, 1, LEN, file.source);
  const a2 = await a.take(a1, 2, LEN, file.source);
  await a2.ready;
  const original0 = Buffer.from(file.chunks[0]!);
  // the file changes under the same identity (what a flipped bit on disk does)
  file.chunks[0]!.fill(0xee);
  const c = chains.reader('f');
  const c0 = await c.take(undefined, 0, LEN, file.source); // slot 0 empty: C reads its own chunk 0
  assert.notEqual(c0, a0);
  const c1 = await c.take(c0, 1, LEN, file.source);
  assert.notEqual(c1, a1, "A's chunk 1 continues bytes C never sent");
  const c2 = await c.take(c1, 2, LEN, file.source);
  assert.notEqual(c2, a2);
  await c2.ready;
  assert.equal(c2.hex(), sha(Buffer.alloc(LEN, 0xee), file.chunks[1]!, file.chunks[2]!), 'C checks the bytes C sent');
  assert.equal(a2.hex(), sha(original0, file.chunks[1]!, file.chunks[2]!), 'A checks the bytes A sent');
  assert.equal(chains.stats.rejoined, 0);
  // back to the original bytes: a new reader reads chunk 0 itself, then rejoins A's chain
  original0.copy(file.chunks[0]!);
  const d = chains.reader('f');
  const d0 = await d.take(undefined, 0, LEN, file.source);
  assert.notEqual(d0, a0);
  const d1 = await d.take(d0, 1, LEN, file.source);
  assert.equal(d1, a1, 'same prefix digest: D continues on A’s chain');
  assert.equal(chains.stats.rejoined, 1);
  assert.equal(await d.take(d1, 2, LEN, file.source), a2);
});

test('a reader far behind the window reads for itself and still gets every byte, in order', async () => {
  const chains = new ChunkChains({ window: 3 });
  const file = fakeFile(12);
  const fast = chains.reader('f');
  const slow = chains.reader('f');
  let slowPrev = await slow.take(undefined, 0, LEN, file.source);
  await slowPrev.ready;
  const fastWalk = await walk(fast, file);
  for (let k = 1; k < 12; k++) {
    slowPrev = await slow.take(slowPrev, k, LEN, file.source);
    await slowPrev.ready;
  }
  assert.equal(slowPrev.hex(), sha(...file.chunks));
  assert.equal(fastWalk.entries.at(-1)!.hex(), sha(...file.chunks));
  assert.ok(file.reads > 12, 'the slow reader forked and read again');
});

test('buffers return to the pool only when the table, every reader and every holder let go', async () => {
  const pool = new BufferPool(64);
  const chains = new ChunkChains({ window: 4, pool });
  const file = fakeFile(6);
  const a = chains.reader('f');
  const b = chains.reader('f');
  const [wa, wb] = await Promise.all([walk(a, file), walk(b, file)]);
  assert.ok(wa.entries.every((e, k) => e === wb.entries[k]), 'in lockstep: one chain');
  assert.equal(chains.published, 4);
  for (const e of wa.entries) e.release();
  assert.equal(pool.idle, 0, 'B still holds every chunk');
  assert.ok(wb.bytes.equals(Buffer.concat(file.chunks)));
  for (const e of wb.entries) e.release();
  assert.equal(pool.idle, 2, 'the two chunks out of the window are free');
  assert.ok(wa.entries[5]!.buffer !== undefined, 'the table still holds the last chunks');
  a.close();
  b.close();
  assert.equal(chains.published, 0, 'the last reader leaving drops the file');
  assert.equal(pool.idle, 6);
  assert.equal(wa.entries[5]!.buffer, undefined);
});

test('a short read fails every reader of that chunk and leaves the table', async () => {
  const chains = new ChunkChains();
  const a = chains.reader('f');
  const b = chains.reader('f');
  const short: ChunkSource = {
    handle: undefined as unknown as FileHandle,
    read: async (into: Buffer) => {
      into.fill(7, 0, 3);
      return 3;
    },
    track: (work) => work,
  };
  const ea = await a.take(undefined, 0, LEN, short);
  const eb = await b.take(undefined, 0, LEN, short);
  assert.equal(eb, ea);
  await assert.rejects(ea.ready, ShortRead);
  assert.equal(chains.published, 0);
  const file = fakeFile(1);
  const again = await a.take(undefined, 0, LEN, file.source);
  await again.ready;
  assert.equal(again.hex(), sha(file.chunks[0]!));
});

test('the hashing thread reads each chunk through the response’s descriptor and hashes it in place; a file cut short fails', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-chains-'));
  try {
    const path = join(dir, 'blob');
    const bytes = randomBytes(3 * CHUNK + 12345);
    await writeFile(path, bytes);
    const chains = new ChunkChains({ hasher: new ThreadHasher() });
    const handle = await open(path, 'r');
    const pending = new Set<Promise<unknown>>();
    const source: ChunkSource = {
      handle,
      read: () => Promise.reject(new Error('the thread reads by itself')),
      track: (work) => {
        pending.add(work);
        return work;
      },
    };
    const lengths = [CHUNK, CHUNK, CHUNK, 12345];
    const readers = [chains.reader('blob'), chains.reader('blob')];
    const prev: Array<ChunkEntry | undefined> = [undefined, undefined];
    const sent: Buffer[][] = [[], []];
    for (let k = 0; k < 4; k++) {
      for (let r = 0; r < 2; r++) {
        prev[r] = await readers[r]!.take(prev[r], k, lengths[k]!, source);
        await prev[r]!.ready;
        sent[r]!.push(Buffer.from(prev[r]!.buffer!));
      }
      assert.equal(prev[0], prev[1]);
    }
    assert.equal(prev[0]!.hex(), sha(bytes));
    for (const s of sent) assert.ok(Buffer.concat(s).equals(bytes));
    assert.equal(chains.stats.read, 4);
    // the file shrinks: the chunk that runs past the end fails, and so does what follows it
    await truncate(path, 2 * CHUNK + 10);
    const late = chains.reader('late');
    const c0 = await late.take(undefined, 0, CHUNK, source);
    const c1 = await late.take(c0, 1, CHUNK, source);
    const c2 = await late.take(c1, 2, CHUNK, source);
    const c3 = await late.take(c2, 3, 12345, source);
    await c1.ready;
    await assert.rejects(c2.ready, ShortRead);
    // the chunk after a failed one fails too: as a short read if the thread reached the end of the file
    // first, else as "the state before it is gone" (the reader saw c2 fail already); never as good bytes
    await assert.rejects(c3.ready, (e: unknown) => e instanceof ShortRead || (e instanceof Error && /hash state of the chunk before it is gone/.test(e.message)));
    await Promise.allSettled([...pending]);
    await handle.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
