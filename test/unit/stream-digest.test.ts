/**
 * StreamDigest (registry pull): SHA-256 — and the git blob SHA-1 — of bytes that arrive in socket-sized
 * chunks, hashed on the shared hashing thread. Asserts the digests equal node:crypto's over the same
 * bytes for sizes on both sides of the inline limit and of slot boundaries, with several streams
 * interleaved on the one thread, that a caller may reuse its chunk buffer as soon as update() resolved,
 * and that an abandoned stream does not disturb the next ones. With `write` (how pull stages a layer):
 * the bytes written are exactly the input, in order, one write at a time, and a failing write ends the
 * stream with its own error.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { StreamDigest, stopIdleHashThreads } from '../../src/integrity/parallel-digest.ts';

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const gitSha1 = (b: Buffer): string => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

/** Feeds `data` in chunks of varying size (as a socket delivers them), through ONE reused buffer. */
async function feed(digest: StreamDigest, data: Buffer, seed: number): Promise<void> {
  const scratch = Buffer.alloc(70_000);
  let at = 0;
  let k = seed;
  while (at < data.length) {
    k = (k * 1103515245 + 12345) % 2 ** 31;
    const n = Math.min(data.length - at, 1 + (k % scratch.length));
    data.copy(scratch, 0, at, at + n);
    await digest.update(scratch.subarray(0, n));
    scratch.fill(0xee, 0, n); // reused at once: the digest must already hold its copy
    at += n;
  }
}

test('digests equal node:crypto for sizes around the inline limit and slot boundaries, streams interleaved', async () => {
  const sizes = [0, 1, 1024 * 1024, 1024 * 1024 + 1, 512 * 1024 * 5, 512 * 1024 * 5 + 7, 9 * 1024 * 1024 + 333];
  const inputs = sizes.map((n) => randomBytes(n));
  const results = await Promise.all(
    inputs.map(async (data, i) => {
      const git = i % 2 === 0;
      const digest = new StreamDigest(data.length, git ? { gitBlobSize: data.length } : {});
      await feed(digest, data, i + 1);
      return { data, git, out: await digest.digest() };
    }),
  );
  for (const { data, git, out } of results) {
    assert.equal(out.sha256, sha256(data), `sha256 of ${data.length} bytes`);
    assert.equal(out.size, data.length);
    if (git) assert.equal(out.gitSha1, gitSha1(data), `git sha1 of ${data.length} bytes`);
    else assert.equal(out.gitSha1, undefined);
  }
});

test('a stream abandoned half-way (close) leaves the thread good for the next ones', async () => {
  const abandoned = new StreamDigest(8 * 1024 * 1024);
  await feed(abandoned, randomBytes(3 * 1024 * 1024), 7);
  abandoned.close();
  abandoned.close(); // idempotent
  await assert.rejects(abandoned.update(Buffer.alloc(1)), /hashing was stopped/);
  const data = randomBytes(4 * 1024 * 1024 + 5);
  const next = new StreamDigest(data.length);
  await feed(next, data, 3);
  assert.equal((await next.digest()).sha256, sha256(data));
  stopIdleHashThreads();
});

test('with write: every byte is written once, in order, one write at a time, from memory not reused before its write ended', async () => {
  const sizes = [5, 1024 * 1024, 512 * 1024 * 9 + 17, 6 * 1024 * 1024];
  for (const size of sizes) {
    const data = randomBytes(size);
    const pieces: Buffer[] = [];
    let inFlight = 0;
    let most = 0;
    const digest = new StreamDigest(size, {
      gitBlobSize: size,
      // slow, and it reads the bytes only at its end: a slot refilled before then would show here
      write: async (chunk) => {
        inFlight += 1;
        most = Math.max(most, inFlight);
        await new Promise((r) => setTimeout(r, 2));
        pieces.push(Buffer.from(chunk));
        inFlight -= 1;
      },
    });
    await feed(digest, data, size);
    const out = await digest.digest();
    assert.equal(out.sha256, sha256(data), `sha256 of ${size}`);
    assert.equal(out.gitSha1, gitSha1(data));
    assert.ok(Buffer.concat(pieces).equals(data), `the written bytes are the input (${size} bytes)`);
    assert.equal(most, 1, 'one write at a time');
  }
});

test('with write: a failing write ends the stream with that error; settled() waits for the write in flight', async () => {
  const disk = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  let writes = 0;
  const digest = new StreamDigest(8 * 1024 * 1024, {
    write: async () => {
      writes += 1;
      await new Promise((r) => setTimeout(r, 5));
      if (writes === 2) throw disk;
    },
  });
  let failed: unknown;
  try {
    await feed(digest, randomBytes(8 * 1024 * 1024), 5);
    await digest.digest();
  } catch (error) {
    failed = error;
  }
  assert.equal(failed, disk, 'the write error itself, from update or digest');
  await digest.settled();
  assert.ok(writes >= 2);
  digest.close();
  stopIdleHashThreads();
});
