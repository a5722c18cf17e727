/**
 * The shared hash chains behind `airlock serve` (src/serve/shared-chunks.ts): readers in lockstep share
 * one read and one hash pass; a reader adopts another's chunk only when it continues the very entry the
 * reader holds, so a fork never mixes its bytes with another chain's digest; buffers go back to the pool
 * only when nobody holds them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { BufferPool, ChunkChains, ShortRead, type ChainReader, type ChunkEntry } from '../../src/serve/shared-chunks.ts';

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
    read: (k: number) => async (into: Buffer) => {
      reads++;
      chunks[k]!.copy(into);
      return chunks[k]!.length;
    },
  };
}
const sha = (...parts: Buffer[]) => createHash('sha256').update(Buffer.concat(parts)).digest('hex');

/** Walks `reader` over every chunk; returns the entries (each still held) and the bytes it would send. */
async function walk(reader: ChainReader, file: ReturnType<typeof fakeFile>): Promise<{ entries: ChunkEntry[]; bytes: Buffer }> {
  const entries: ChunkEntry[] = [];
  let prev: ChunkEntry | undefined;
  for (let k = 0; k < file.chunks.length; k++) {
    prev = reader.take(prev, k, LEN, file.read(k));
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
    for (let r = 0; r < 3; r++) prev[r] = readers[r]!.take(prev[r], k, LEN, file.read(k));
    assert.ok(prev[1] === prev[0] && prev[2] === prev[0], `chunk ${k} is one entry for all`);
    await prev[0]!.ready;
  }
  assert.equal(file.reads, 10);
  assert.deepEqual(chains.stats, { read: 10, adopted: 20 });
  assert.equal(prev[0]!.hex(), sha(...file.chunks));
});

test('a reader adopts only an entry whose parent is the entry it holds; a fork hashes its own bytes', async () => {
  const chains = new ChunkChains({ window: 2 });
  const file = fakeFile(3);
  const a = chains.reader('f');
  const b = chains.reader('f');
  const c = chains.reader('f');
  const a0 = a.take(undefined, 0, LEN, file.read(0));
  const b0 = b.take(undefined, 0, LEN, file.read(0));
  assert.equal(b0, a0, 'B joins A at chunk 0');
  const a1 = a.take(a0, 1, LEN, file.read(1));
  const a2 = a.take(a1, 2, LEN, file.read(2)); // window 2: chunk 0 leaves the table
  await a2.ready;
  // the file changes under the same identity (what a flipped bit on disk does)
  file.chunks[0]!.fill(0xee);
  const c0 = c.take(undefined, 0, LEN, file.read(0)); // slot 0 empty: C reads and publishes its own chunk 0
  assert.notEqual(c0, a0);
  const b1 = b.take(b0, 1, LEN, file.read(1)); // slot 1 evicted by C's entry: B reads chunk 1 on A's chain
  await b1.ready;
  // slot 1 now holds B's entry, whose parent is A's chunk 0; C holds its own chunk 0: no adoption
  const c1 = c.take(c0, 1, LEN, file.read(1));
  assert.notEqual(c1, b1, 'C must not continue a chain whose first chunk it never sent');
  const c2 = c.take(c1, 2, LEN, file.read(2));
  await c2.ready;
  assert.notEqual(c2, a2);
  assert.equal(c2.hex(), sha(Buffer.alloc(LEN, 0xee), file.chunks[1]!, file.chunks[2]!), 'C checks the bytes C sent');
  assert.equal(a2.hex(), sha(Buffer.alloc(LEN, 1), file.chunks[1]!, file.chunks[2]!), 'A checks the bytes A sent');
  const b2 = b.take(b1, 2, LEN, file.read(2));
  assert.notEqual(b2, a2, "A's chunk 2 continues A's chunk 1, not B's");
  await b2.ready;
  assert.equal(b2.hex(), a2.hex(), 'B forked from A after the same first chunk: same bytes, same digest');
});

test('a reader far behind the window reads for itself and still gets every byte, in order', async () => {
  const chains = new ChunkChains({ window: 3 });
  const file = fakeFile(12);
  const fast = chains.reader('f');
  const slow = chains.reader('f');
  let slowPrev = slow.take(undefined, 0, LEN, file.read(0));
  await slowPrev.ready;
  const fastWalk = await walk(fast, file);
  for (let k = 1; k < 12; k++) {
    slowPrev = slow.take(slowPrev, k, LEN, file.read(k));
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
  const short = async (into: Buffer) => {
    into.fill(7, 0, 3);
    return 3;
  };
  const ea = a.take(undefined, 0, LEN, short);
  const eb = b.take(undefined, 0, LEN, short);
  assert.equal(eb, ea);
  await assert.rejects(ea.ready, ShortRead);
  assert.equal(chains.published, 0);
  const file = fakeFile(1);
  const again = a.take(undefined, 0, LEN, file.read(0));
  await again.ready;
  assert.equal(again.hex(), sha(file.chunks[0]!));
});
