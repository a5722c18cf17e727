/**
 * Reused read buffers (src/bundle/read-pool.ts): the bytes a sink writes must be the bytes that were
 * hashed, even though the memory under them is refilled with later bytes of the bundle. Tiny buffers
 * and a slow sink make refills happen all the time; the sink copies each chunk only when its write
 * settles, so a buffer refilled too early shows up as wrong content.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isAirlockError } from '../../src/errors.ts';
import { readBundle, type PayloadSink } from '../../src/bundle/reader.ts';
import { ReadPool } from '../../src/bundle/read-pool.ts';
import { openBundle } from '../../src/import/open-bundle.ts';
import { entryName, makeTestKey, tamper, writeBundleFile, type BuilderRepo, type TestKey } from '../support/bundle-builder.ts';

let dir: string;
let key: TestKey;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-pool-'));
  key = await makeTestKey();
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

// sizes chosen to straddle the 16 KiB test buffers, and the 256 KiB line between hashing inline and on the hashing thread
const REPO: BuilderRepo = {
  id: 'acme/pooled',
  files: [
    { path: 'a.bin', data: randomBytes(300_001), lfs: true },
    { path: 'b.txt', data: 'b' },
    { path: 'c.bin', data: randomBytes(700_003), lfs: true },
    { path: 'd.json', data: randomBytes(20_000).toString('hex') },
  ],
};

/** A sink that takes its time and copies each chunk only as its write settles. */
function slowCopyingSink(): { sink: PayloadSink; files: Map<string, Buffer>; memories: Set<ArrayBufferLike>; chunks: () => number } {
  const files = new Map<string, Buffer>();
  const memories = new Set<ArrayBufferLike>();
  let chunks = 0;
  let n = 0;
  const sink: PayloadSink = {
    open: async (entry) => {
      const parts: Buffer[] = [];
      return {
        write: async (chunk) => {
          chunks += 1;
          memories.add(chunk.buffer);
          n += 1;
          await (n % 3 === 0 ? sleep(1) : new Promise((resolve) => setImmediate(resolve)));
          parts.push(Buffer.from(chunk));
        },
        finish: async () => void files.set(entry.file.path, Buffer.concat(parts)),
        abort: async () => undefined,
      };
    },
  };
  return { sink, files, memories, chunks: () => chunks };
}

describe('ReadPool', () => {
  test('hands out a buffer again only once every byte it held was released', () => {
    const pool = new ReadPool({ bufferBytes: 4, maxPooled: 2 });
    const a = pool.take();
    const b = pool.take();
    assert.notEqual(a, b);
    assert.equal(pool.filled(a, 4).byteLength, 4); // stream [0, 4)
    assert.equal(pool.filled(b, 3).byteLength, 3); // stream [4, 7): a short read gives a view
    assert.equal(pool.offsetOf(b.subarray(1, 2)), 5);
    const extra = pool.take(); // nothing released, pool full: a one-off buffer
    assert.ok(extra !== a && extra !== b);
    pool.release(3);
    assert.ok(![a, b].includes(pool.take()), 'a is not wholly released yet');
    pool.release(4);
    assert.equal(pool.take(), a);
    pool.unused(a); // end of file: not filled, free again
    assert.equal(pool.take(), a);
    pool.release(1_000); // cannot release past what was read
    assert.equal(pool.take(), b);
  });

  test('a bundle read through tiny reused buffers: every byte written is the byte hashed', async () => {
    const path = join(dir, 'ok.airlock.tar');
    await writeBundleFile(path, { repos: [REPO], signer: key.signer });
    const pool = new ReadPool({ bufferBytes: 16 * 1024, maxPooled: 8 });
    const { sink, files, memories, chunks } = slowCopyingSink();
    const result = await readBundle(await openBundle(path, { pool }), { trustedKeys: key.trustedKeys, subject: path, sink, pool });
    assert.equal(result.files, 4);
    for (const f of REPO.files) assert.ok(files.get(f.path)?.equals(Buffer.from(f.data)), `${f.path} arrived intact`);
    // the buffers really were reused: every chunk came from the 8 pooled buffers (≈5 are in flight at most)
    assert.ok(chunks() > 50, `chunks: ${chunks()}`);
    assert.ok(memories.size <= 8, `${memories.size} distinct buffers for ${chunks()} chunks`);
  });

  test('a changed byte is still caught when buffers are reused', async () => {
    const path = join(dir, 'bad.airlock.tar');
    const name = entryName(REPO, 'c.bin');
    await writeBundleFile(path, { repos: [REPO], signer: key.signer, editEntries: tamper.flipByte(name, 650_000) });
    const pool = new ReadPool({ bufferBytes: 16 * 1024, maxPooled: 3 });
    await assert.rejects(
      readBundle(await openBundle(path, { pool }), { trustedKeys: key.trustedKeys, subject: path, sink: slowCopyingSink().sink, pool }),
      (error: unknown) => isAirlockError(error) && error.code === 'E_HASH_MISMATCH' && error.subject === name,
    );
  });
});
