/**
 * `airlock serve` answering the ModelScope API for what `import --layout modelscope` wrote: revisions,
 * the file listing with SHA-256 (from import's evidence record: that cache keeps no hashes), file
 * downloads with Range — asked the way the modelscope SDK asks (see test/support/modelscope-server.ts) —
 * and a flipped byte on disk cut short like on the Hub side.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startModelScopeServer, type MsAddedCommit, type ModelScopeServer } from '../support/modelscope-server.ts';
import { run, runAirlock } from '../support/cli.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';
import { startServe, type ServeProcess } from '../support/serve-process.ts';
import { evidenceRoot } from '../../src/cache/evidence.ts';

let ms: ModelScopeServer;
let dir: string;
let msCache: string;
let serve: ServeProcess;
let added: MsAddedCommit;
const files = new Map<string, Buffer>([
  ['config.json', Buffer.from('{"model_type": "qwen2"}\n')],
  ['sub/tokenizer.json', Buffer.from('{"version": "1.0"}\n')],
  ['model.safetensors', safetensorsOf(Buffer.alloc(2 * 1024 * 1024 + 3, 0x42))],
]);
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const ID = 'acme/Tiny.Model-0.5B';
const api = (rest: string) => `${serve.url}/api/v1/models/${ID}${rest}`;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-serve-ms-'));
  msCache = join(dir, 'modelscope');
  ms = await startModelScopeServer();
  added = ms.addRepo({ id: ID, files: [...files].map(([path, data]) => ({ path, data })) });
  const keys = join(dir, 'keys');
  assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'MS Platform <ms@example.org>', '--out-dir', keys])).code, 0);
  const bundle = join(dir, 'ms.airlock.tar');
  const exp = await runAirlock(['export', ID, '--source', 'modelscope', '--endpoint', ms.endpoint, '--sign-key', join(keys, 'signer.key.asc'), '-o', bundle]);
  assert.equal(exp.code, 0, exp.stderr);
  const imp = await runAirlock(['import', bundle, '--trusted-keys', join(keys, 'signer.pub.asc'), '--layout', 'modelscope', '--cache-dir', msCache]);
  assert.equal(imp.code, 0, imp.stderr);
  serve = await startServe(['--cache-dir', join(dir, 'empty-hub'), '--modelscope-cache-dir', msCache]);
});

after(async () => {
  await serve?.stop();
  await ms?.close();
  await rm(dir, { recursive: true, force: true });
});

test('repo, revisions and the recursive listing with SHA-256, as the modelscope SDK reads them', async () => {
  const info = (await (await fetch(api(''))).json()) as { Code: number; Data: { Path: string; Name: string } };
  assert.equal(info.Code, 200);
  const revs = (await (await fetch(api('/revisions'))).json()) as { Data: { RevisionMap: { Branches: Array<{ Revision: string; CommitId: string; CreatedAt: number }> } } };
  assert.deepEqual(
    revs.Data.RevisionMap.Branches.map((b) => [b.Revision, b.CommitId, b.CreatedAt]),
    [['master', added.commit, added.createdAt]],
  );
  const listing = (await (await fetch(api('/repo/files?Revision=master&Recursive=True'))).json()) as {
    Data: { Files: Array<{ Path: string; Type: string; Size: number; Sha256?: string; Revision: string }> };
  };
  const blobs = listing.Data.Files.filter((f) => f.Type === 'blob');
  assert.deepEqual(
    blobs.map((f) => [f.Path, f.Size, f.Sha256]).sort(),
    [...files].map(([p, d]) => [p, d.length, sha256(d)]).sort(),
  );
  assert.deepEqual(
    blobs.map((f) => f.Revision).sort(),
    added.files.map((f) => f.lastCommit).sort(),
  );
  assert.ok(listing.Data.Files.some((f) => f.Type === 'tree' && f.Path === 'sub'));
  // a revision that was not imported is a miss, in the envelope
  const other = await fetch(api('/repo/files?Revision=v9&Recursive=True'));
  assert.equal(other.status, 404);
  assert.equal(((await other.json()) as { Success: boolean }).Success, false);
  // the evidence record sits next to the cache, not in it
  assert.ok(evidenceRoot(msCache).startsWith(`${msCache}.airlock`));
});

test('file downloads: whole, ranged resume (206), missing file', async () => {
  for (const [path, data] of files) {
    const res = await fetch(api(`/repo?Revision=master&FilePath=${encodeURIComponent(path)}`));
    assert.equal(res.status, 200);
    assert.equal(sha256(Buffer.from(await res.arrayBuffer())), sha256(data));
  }
  const big = files.get('model.safetensors')!;
  // modelscope 1.x always sends a closed range
  const ranged = await fetch(api('/repo?Revision=master&FilePath=model.safetensors'), { headers: { Range: `bytes=1000-${big.length - 1}` } });
  assert.equal(ranged.status, 206);
  assert.equal(ranged.headers.get('content-range'), `bytes 1000-${big.length - 1}/${big.length}`);
  assert.deepEqual(Buffer.from(await ranged.arrayBuffer()), big.subarray(1000));
  const missing = await fetch(api('/repo?Revision=master&FilePath=nope.bin'));
  assert.equal(missing.status, 404);
  const traversal = await fetch(api('/repo?Revision=master&FilePath=..%2F..%2F.msc'));
  assert.equal(traversal.status, 400);
});

test('a flipped byte in the ModelScope cache is cut short and then refused', async () => {
  const [owner, name] = ID.split('/');
  const path = join(msCache, 'models', owner!, name!.split('.').join('___'), 'model.safetensors');
  const handle = await open(path, 'r+');
  await handle.write(Buffer.from([0x43]), 0, 1, 1_000_000);
  await handle.close();
  const out = join(dir, 'ms-flipped.bin');
  const got = await run('curl', ['-sS', '--noproxy', '*', '-o', out, api('/repo?Revision=master&FilePath=model.safetensors')]);
  assert.equal(got.code, 18, got.stderr);
  assert.ok((await readFile(out)).length < files.get('model.safetensors')!.length);
  await serve.waitForAccess((l) => l['api'] === 'modelscope' && typeof l['error'] === 'string' && l['file'] === 'model.safetensors');
  const again = await fetch(api('/repo?Revision=master&FilePath=model.safetensors'));
  assert.equal(again.status, 422);
});
