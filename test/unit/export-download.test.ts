/**
 * The resumable downloader (src/hub/download.ts) against an in-memory byte source, plus the work-dir
 * record, the free-space check, the rate cap and the progress numbers. Real temp dirs; the network is
 * the only thing replaced, by a source that answers Range requests like a server (or misbehaves).
 */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AirlockError } from '../../src/errors.js';
import { downloadFile, partBoundaries, type ByteRange, type FileBody, type OpenRange } from '../../src/hub/download.js';
import type { RemoteFile } from '../../src/hub/types.js';
import { checkFreeSpace } from '../../src/export/space.js';
import { parseRate, TokenBucket } from '../../src/export/rate-limit.js';
import { VerifiedFiles, readPinnedCommit, writePinnedCommit } from '../../src/export/work-state.js';
import { ProgressModel } from '../../src/export/progress.js';

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const policy = { attempts: 5, baseMs: 1, maxMs: 4, maxServerDelayMs: 4 };

interface FakeSource {
  open: OpenRange;
  requests: ByteRange[];
  served: number;
}

/** Serves `data` in 4 KiB chunks. `cut(range, n)` → bytes after which the n-th response is cut. */
function fakeSource(data: Buffer, behaviour: { ignoreRange?: boolean; cut?: (range: ByteRange, n: number) => number | undefined; size?: number } = {}): FakeSource {
  const source: FakeSource = {
    requests: [],
    served: 0,
    open: async (range) => {
      source.requests.push(range);
      const n = source.requests.length;
      if (behaviour.size !== undefined && range.start >= behaviour.size) return { kind: 'unsatisfiable', size: behaviour.size };
      const start = behaviour.ignoreRange === true ? 0 : range.start;
      const end = behaviour.ignoreRange === true ? data.length : range.end;
      const cutAfter = behaviour.cut?.(range, n);
      const body = (async function* () {
        let sent = 0;
        for (let at = start; at < end; at += 4096) {
          const chunk = data.subarray(at, Math.min(end, at + 4096));
          if (cutAfter !== undefined && sent + chunk.length > cutAfter) {
            const head = chunk.subarray(0, cutAfter - sent);
            if (head.length > 0) {
              source.served += head.length;
              yield head;
            }
            throw new Error('socket hang up');
          }
          sent += chunk.length;
          source.served += chunk.length;
          yield chunk;
        }
      })();
      const result: FileBody = {
        kind: 'body',
        start,
        length: end - start,
        body,
        cancel: () => undefined,
        done: () => undefined,
        networkError: (error) => new AirlockError('E_NETWORK', `network error: ${String(error)}`),
      };
      return result;
    },
  };
  return source;
}

const lfsFile = (data: Buffer, path = 'w.bin'): RemoteFile => ({ path, size: data.length, blobId: 'a'.repeat(40), lfsSha256: sha256(data) });

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'export-download-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('downloadFile', () => {
  it('splits a file over several Range requests, hashes the parts in order, and leaves no part files', async () => {
    const data = randomBytes(100_000);
    const src = fakeSource(data);
    const dest = join(tmp, 'parts.bin');
    const partsDir = join(tmp, 'parts-of-parts.bin');
    const digests = await downloadFile(src.open, 'w.bin', lfsFile(data), dest, { connections: 4, minPartBytes: 10_000, partsDir, retry: policy });
    assert.equal(digests.sha256, sha256(data));
    assert.deepEqual(await readFile(dest), data);
    assert.deepEqual([...src.requests].sort((a, b) => a.start - b.start), partBoundaries(data.length, 4, 10_000).map((p) => ({ start: p.start, end: p.end })));
    assert.equal(src.requests.length, 4);
    assert.ok(!existsSync(partsDir));
  });

  it('never splits below the minimum part size', () => {
    assert.equal(partBoundaries(5_000_000, 8, 8 * 1024 * 1024).length, 1);
    assert.equal(partBoundaries(64 * 1024 * 1024, 16, 8 * 1024 * 1024).length, 8);
    const parts = partBoundaries(1001, 3, 1);
    assert.equal(parts[0]?.start, 0);
    assert.equal(parts[2]?.end, 1001);
  });

  it('a cut part is resumed from where it stopped, in the same run (retries) and in the next one (kept files)', async () => {
    const data = randomBytes(120_000);
    const file = lfsFile(data);
    const dest = join(tmp, 'cut.bin');
    const partsDir = join(tmp, 'cut-parts');
    // every response is cut after 10 000 bytes, and there are only 2 attempts per series: the first run fails
    const flaky = fakeSource(data, { cut: () => 10_000 });
    await assert.rejects(
      downloadFile(flaky.open, 'w.bin', file, dest, { connections: 3, minPartBytes: 10_000, partsDir, retry: { ...policy, attempts: 1 }, keepPartial: true }),
      (e: AirlockError) => e.code === 'E_NETWORK',
    );
    assert.ok(existsSync(dest), 'the partial is kept');
    // the next run continues every part from its size
    const healthy = fakeSource(data);
    const kept: number[] = [];
    const digests = await downloadFile(healthy.open, 'w.bin', file, dest, {
      connections: 3,
      minPartBytes: 10_000,
      partsDir,
      retry: policy,
      resume: true,
      keepPartial: true,
      onResume: (k) => kept.push(k),
    });
    assert.equal(digests.sha256, sha256(data));
    assert.deepEqual(await readFile(dest), data);
    assert.ok(kept.reduce((a, b) => a + b, 0) >= 30_000 - 3 * 4096, `kept ${kept.join('+')}`);
    assert.equal(flaky.served + healthy.served, data.length, 'no byte fetched twice');
    assert.ok(healthy.requests.every((r) => r.start % 40_000 !== 0), 'every part continued, none restarted');
  });

  it('retries a cut connection with Range within one run', async () => {
    const data = randomBytes(50_000);
    let cuts = 0;
    const src = fakeSource(data, { cut: () => (cuts++ < 3 ? 9_000 : undefined) });
    const dest = join(tmp, 'retry.bin');
    const digests = await downloadFile(src.open, 'w.bin', lfsFile(data), dest, { retry: policy, keepPartial: true });
    assert.equal(digests.sha256, sha256(data));
    assert.deepEqual(src.requests.map((r) => r.start), [0, 9_000, 18_000, 27_000]);
    assert.equal(src.served, data.length);
  });

  it('a 200 to a Range request restarts the file cleanly from byte 0', async () => {
    const data = randomBytes(30_000);
    const dest = join(tmp, 'ignored.bin');
    await writeFile(dest, data.subarray(0, 12_000));
    const src = fakeSource(data, { ignoreRange: true });
    const restarts: string[] = [];
    const digests = await downloadFile(src.open, 'w.bin', lfsFile(data), dest, { resume: true, keepPartial: true, retry: policy, onRestart: (r) => restarts.push(r) });
    assert.equal(digests.sha256, sha256(data));
    assert.deepEqual(await readFile(dest), data);
    assert.equal(restarts.length, 1);
    assert.match(restarts[0] ?? '', /ignored the Range request/);
  });

  it('a kept prefix with wrong bytes fails the final hash, and the file is fetched once more from scratch', async () => {
    const data = randomBytes(30_000);
    const dest = join(tmp, 'stale.bin');
    await writeFile(dest, randomBytes(30_000)); // full length, other content: nothing left to request
    const src = fakeSource(data);
    const restarts: string[] = [];
    const digests = await downloadFile(src.open, 'w.bin', lfsFile(data), dest, { resume: true, keepPartial: true, retry: policy, onRestart: (r) => restarts.push(r) });
    assert.equal(digests.sha256, sha256(data));
    assert.match(restarts[0] ?? '', /failed its hash check/);
  });

  it('416 with another total size is an integrity error naming both sizes; the partial is removed', async () => {
    const data = randomBytes(30_000);
    const dest = join(tmp, 'shrunk.bin');
    await writeFile(dest, data.subarray(0, 20_000));
    const src = fakeSource(data, { size: 15_000 });
    await assert.rejects(downloadFile(src.open, 'acme/x/w.bin', lfsFile(data), dest, { resume: true, keepPartial: true, retry: policy }), (e: AirlockError) => {
      assert.equal(e.code, 'E_DOWNLOAD_INTEGRITY');
      assert.match(e.message, /acme\/x\/w\.bin: the server now reports 15000 bytes, the listing says 30000/);
      return true;
    });
    assert.ok(!existsSync(dest));
  });
});

describe('work dir state', () => {
  it('pins a revision to its commit (a branch with a slash too)', async () => {
    const repoDir = join(tmp, 'models--acme--x');
    assert.equal(await readPinnedCommit(repoDir, 'refs/pr/1'), undefined);
    await writePinnedCommit(repoDir, 'refs/pr/1', 'c'.repeat(40));
    assert.equal(await readPinnedCommit(repoDir, 'refs/pr/1'), 'c'.repeat(40));
    assert.ok(existsSync(join(repoDir, 'refs', 'refs%2Fpr%2F1')));
  });

  it('vouches for a completed file by size, mtime, inode and recorded hash — and for nothing else', async () => {
    const data = randomBytes(5000);
    const file = lfsFile(data, 'a/b.bin');
    const path = join(tmp, 'done.bin');
    await writeFile(path, data);
    const record = join(tmp, 'verified', 'c.json');
    const verified = await VerifiedFiles.load(record);
    assert.equal(await verified.check(path, file), undefined);
    await verified.add(path, file, { size: data.length, sha256: sha256(data) });
    const again = await VerifiedFiles.load(record);
    assert.equal((await again.check(path, file))?.sha256, sha256(data));
    assert.equal(await again.check(path, { ...file, lfsSha256: 'f'.repeat(64) }), undefined, 'another expected hash');
    const { mtime } = await stat(path);
    await utimes(path, mtime, new Date(mtime.getTime() + 5000));
    assert.equal(await again.check(path, file), undefined, 'touched since');
    await writeFile(record, '{not json');
    assert.equal(await (await VerifiedFiles.load(record)).check(path, file), undefined, 'a damaged record vouches for nothing');
  });
});

describe('free space preflight', () => {
  it('refuses when the remaining downloads and the bundle do not fit, naming the directory and the numbers', async () => {
    const work = join(tmp, 'space-work');
    await mkdir(work, { recursive: true });
    const free = (bytes: number, device = 1) => async () => ({ free: bytes, device });
    await checkFreeSpace(work, tmp, { workBytes: 10 << 20, outputBytes: 10 << 20 }, free(200 << 20));
    await assert.rejects(checkFreeSpace(work, tmp, { workBytes: 100 << 20, outputBytes: 100 << 20 }, free(200 << 20)), (e: AirlockError) => {
      assert.equal(e.code, 'E_NO_SPACE');
      assert.match(e.message, /not enough free space in .*space-work: 201\.8 MiB needed for the remaining downloads and the bundle \(same file system\), 200\.0 MiB free/);
      assert.match(e.hint ?? '', /--no-space-check/);
      return true;
    });
    // different file systems: each side checked on its own
    let call = 0;
    const split = async () => (call++ === 0 ? { free: 1 << 30, device: 1 } : { free: 1 << 20, device: 2 });
    await assert.rejects(checkFreeSpace(work, tmp, { workBytes: 100 << 20, outputBytes: 100 << 20 }, split), /needed for the bundle/);
  });

  it('asks for what the in-place writer needs: about 1× the bundle, also with the work dir elsewhere (issue 14)', async () => {
    const work = join(tmp, 'space-work-1x');
    await mkdir(work, { recursive: true });
    const bundle = 67 << 20;
    // same file system: a 67 MiB bundle written in place fits in 69 MiB (it used to ask for 131 MiB)
    await checkFreeSpace(work, tmp, { workBytes: 0, outputBytes: bundle }, async () => ({ free: 69 << 20, device: 1 }));
    await assert.rejects(checkFreeSpace(work, tmp, { workBytes: 0, outputBytes: bundle }, async () => ({ free: 67 << 20, device: 1 })), /68\.3 MiB needed/);
    // --work-dir on another file system: the work dir holds only small records, the output the bundle
    let call = 0;
    const apart = async () => (call++ === 0 ? { free: 2 << 20, device: 1 } : { free: 69 << 20, device: 2 });
    await checkFreeSpace(work, tmp, { workBytes: 0, outputBytes: bundle }, apart);
  });
});

describe('rate cap', () => {
  it('parses rates with units', () => {
    assert.equal(parseRate('500K'), 500_000);
    assert.equal(parseRate('10M'), 10_000_000);
    assert.equal(parseRate('1.5MiB'), 1.5 * 1024 * 1024);
    assert.equal(parseRate('2g/s'), 2_000_000_000);
    assert.equal(parseRate('1234'), 1234);
    assert.throws(() => parseRate('fast'), /not a rate/);
    assert.throws(() => parseRate('0'), /not a rate/);
  });

  it('holds the cap across callers', async () => {
    const bucket = new TokenBucket(1_000_000);
    const started = performance.now();
    await Promise.all([bucket.take(250_000), bucket.take(150_000), bucket.take(150_000)]);
    const ms = performance.now() - started;
    // burst 250 kB, then 300 kB at 1 MB/s ≈ 300 ms: the cap is the lower bound; the upper one only
    // catches a bucket that waits far too long, with room for a loaded machine
    assert.ok(ms >= 270 && ms < 10_000, `${ms} ms`);
  });
});

describe('progress numbers', () => {
  it('counts kept and skipped bytes as done, tracks active files, estimates rate and ETA', () => {
    let now = 0;
    const model = new ProgressModel(() => now);
    const file = lfsFile(Buffer.alloc(1000), 'big.bin');
    const small = lfsFile(Buffer.alloc(200), 'small.bin');
    model.planned([
      {
        repo: { type: 'model', id: 'acme/x', revision: 'main' },
        commit: 'c'.repeat(40),
        pinned: false,
        selected: [file, small],
        done: new Map([['small.bin', { size: 200, sha256: '' }]]),
        totalBytes: 1200,
        remainingBytes: 1000,
        verified: undefined as unknown as VerifiedFiles,
      },
    ]);
    model.event({ kind: 'downloading', repo: { type: 'model', id: 'acme/x', revision: 'main' }, path: 'big.bin', size: 1000, index: 1, total: 2 });
    now = 1000;
    model.bytes(300, 'big.bin');
    const s = model.snapshot();
    assert.equal(s.doneBytes, 500);
    assert.equal(s.filesDone, 1);
    assert.deepEqual(s.active, [{ path: 'big.bin', size: 1000, done: 300 }]);
    assert.equal(s.rate, 300);
    assert.ok(Math.abs((s.etaSeconds ?? 0) - 700 / 300) < 1e-9);
  });
});

describe('progress rendering', () => {
  it('one line per active file plus the total, fitted to the terminal; redrawn in place', async () => {
    const { progressLines, progressTotalLine, LiveBlock, formatDuration } = await import('../../src/cli/render.js');
    const view = {
      totalBytes: 10 * 1024 * 1024,
      doneBytes: 5 * 1024 * 1024,
      files: 3,
      filesDone: 1,
      rate: 1024 * 1024,
      etaSeconds: 5,
      active: [{ path: 'a/very/long/path/to/model-00001-of-00002.safetensors', size: 8 * 1024 * 1024, done: 2 * 1024 * 1024 }],
    };
    assert.equal(progressTotalLine(view), 'total 5.0 MiB / 10.0 MiB (50%)  1/3 files  1.0 MiB/s  ETA 5s');
    const lines = progressLines(view, 60);
    assert.equal(lines.length, 2);
    assert.ok(lines.every((l) => l.length < 60), lines.join('\n'));
    assert.match(lines[0] ?? '', /…\S*safetensors \[#####\.+\] {2}25% 2\.0 MiB\/8\.0 MiB$/);
    assert.equal(formatDuration(3725), '1h02m');
    assert.equal(formatDuration(undefined), '--');
    let out = '';
    const block = new LiveBlock((t) => (out += t));
    block.draw(['a', 'b']);
    block.log('event\n', ['c', 'd']);
    block.done();
    assert.equal(out, 'a\nb\n\r\x1b[2A\x1b[0Jevent\nc\nd\n\r\x1b[2A\x1b[0J');
  });
});
