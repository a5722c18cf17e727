/**
 * Early write-back of staged files (src/fs/writeback.ts, wired into the import/pull StagingSink): a big
 * file asks the kernel to write what it has so far every N bytes, in the background, so the disk works
 * while the network does and the fsync before the commit finds little left. Asserted: the syncs happen
 * (on the real staging sink's real files, too), at most one runs in the whole process at a time, the
 * file is not closed under a sync in flight, and a failing sync fails the staged file, naming it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { EarlyWriteback } from '../../src/fs/writeback.ts';
import { StagingSink } from '../../src/import/staging-sink.ts';
import { createStaging } from '../../src/fs/staging.ts';
import type { ManifestRepo } from '../../src/bundle/manifest.ts';

/** A handle whose datasync stays pending until released, counting what it was asked. */
function fakeHandle() {
  const pending: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  let calls = 0;
  return {
    handle: {
      datasync: () => {
        calls += 1;
        return new Promise<void>((resolve, reject) => pending.push({ resolve, reject }));
      },
    },
    calls: () => calls,
    pending,
  };
}

const tick = () => new Promise((r) => setImmediate(r));

test('a sync every N bytes, never two at once in the process, settle waits for the one in flight', async () => {
  const a = fakeHandle();
  const b = fakeHandle();
  const wa = new EarlyWriteback(a.handle, 100);
  const wb = new EarlyWriteback(b.handle, 100);
  wa.wrote(60);
  assert.equal(a.calls(), 0, 'below N: no sync');
  wa.wrote(60);
  assert.equal(a.calls(), 1, 'past N: one sync');
  wa.wrote(500);
  assert.equal(a.calls(), 1, 'its own sync still runs: no second one');
  wb.wrote(500);
  assert.equal(b.calls(), 0, 'another file waits while a sync runs anywhere in the process');
  let settled = false;
  const settling = wa.settle().then(() => (settled = true));
  await tick();
  assert.equal(settled, false, 'settle waits for the sync in flight');
  a.pending.shift()!.resolve();
  await settling;
  wb.wrote(1);
  assert.equal(b.calls(), 1, 'once it finished, the other file syncs');
  b.pending.shift()!.resolve();
  await wb.settle();
});

test('a failing sync is thrown by settle', async () => {
  const a = fakeHandle();
  const w = new EarlyWriteback(a.handle, 10);
  w.wrote(10);
  a.pending.shift()!.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
  await assert.rejects(w.settle(), /EIO/);
});

const repo = (size: number, data: Buffer): ManifestRepo => ({
  type: 'model',
  id: 'org/big',
  revision: 'main',
  commit: 'a'.repeat(40),
  source: { kind: 'huggingface', endpoint: 'https://huggingface.co' },
  files: [{ path: 'model.safetensors', size, sha256: createHash('sha256').update(data).digest('hex'), etag: createHash('sha256').update(data).digest('hex'), blobId: 'b'.repeat(40), lfs: true }],
});

/** Stages `data` through the real StagingSink in 256 KiB writes, counting the datasyncs of real FileHandles. */
async function stage(writebackBytes: number | undefined, data: Buffer, failSync = false) {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-writeback-'));
  const probe = await open(join(dir, 'probe'), 'w');
  const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> };
  await probe.close();
  const original = proto.datasync;
  let syncs = 0;
  proto.datasync = function (this: unknown) {
    syncs += 1;
    if (failSync) return Promise.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
    return original.call(this);
  };
  const staging = await createStaging(join(dir, 'cache'));
  try {
    const sink = new StagingSink(staging, { spaceCheck: false, ...(writebackBytes === undefined ? {} : { writebackBytes }) });
    const r = repo(data.length, data);
    const target = await sink.open({ name: 'x', repo: r, file: r.files[0]! });
    for (let at = 0; at < data.length; at += 256 * 1024) await target.write(data.subarray(at, at + 256 * 1024));
    let failure: unknown;
    await target.finish().catch((error: unknown) => (failure = error));
    const [planned] = failure === undefined ? sink.plan({ format: 'model-airlock-bundle', formatVersion: 1, tool: { name: 'model-airlock', version: '0' }, createdAt: '', repos: [r] }) : [];
    const source = planned?.files[0]?.source;
    const staged = source?.kind === 'staged' ? await readFile(source.path) : undefined;
    return { syncs, failure, staged };
  } finally {
    proto.datasync = original;
    await staging.cleanup();
    await rm(dir, { recursive: true, force: true });
  }
}

test('the staging sink asks for write-back while a big file is staged, and the file is intact', async () => {
  const data = randomBytes(4 * 1024 * 1024);
  const { syncs, failure, staged } = await stage(1024 * 1024, data);
  assert.equal(failure, undefined);
  assert.ok(syncs >= 1, `expected early syncs while 4 MiB were staged in 1 MiB steps, saw ${syncs}`);
  assert.ok(staged !== undefined && staged.equals(data), 'the staged file holds exactly the bytes written');
  // the default step (64 MiB) is far above this file: no early sync for small files
  assert.equal((await stage(undefined, data)).syncs, 0);
});

test('a failing early sync fails the staged file, naming it', async () => {
  const { failure } = await stage(1024 * 1024, randomBytes(2 * 1024 * 1024), true);
  assert.ok(failure instanceof Error, 'finish must fail');
  assert.match(failure.message, /EIO|i\/o error/);
  assert.match(failure.message, /blob/, 'names the staged file');
});
