/**
 * Delta bundles: the offline side's inventory goes back to the connected side; a new revision that
 * changed one shard of three is exported with --have, leaving the two unchanged shards out (not even
 * downloaded). Importing it where the old revision is present gives a cache the real huggingface_hub
 * loads offline; importing it anywhere else fails clearly and changes nothing.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHubServer, type HubServer, type AddedCommit, type HubFileInput } from '../support/hub-server.ts';
import { run, runAirlock } from '../support/cli.ts';
import { runPython } from '../support/python.ts';
import { snapshotTree } from '../support/cache-snapshot.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';

let hub: HubServer;
let dir: string;
let keys: string;
let cache: string;
let v1: AddedCommit;
let v2: AddedCommit;
let full: string;
let delta: string;
const SHARD = 2 * 1024 * 1024;

const shard = (n: number, fill: number): HubFileInput => ({ path: `model-0000${n}-of-00003.safetensors`, data: safetensorsOf(Buffer.alloc(SHARD, fill)) });
const index = (): HubFileInput => ({
  path: 'model.safetensors.index.json',
  data: JSON.stringify({ metadata: {}, weight_map: { a: 'model-00001-of-00003.safetensors', b: 'model-00002-of-00003.safetensors', c: 'model-00003-of-00003.safetensors' } }),
});
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const pub = () => join(keys, 'signer.pub.asc');

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-delta-'));
  hub = await startHubServer();
  v1 = await hub.addRepo({ id: 'acme/big', files: [{ path: 'config.json', data: '{"v": 1}\n' }, index(), shard(1, 1), shard(2, 2), shard(3, 3)] });
  keys = join(dir, 'keys');
  assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'Delta <delta@example.org>', '--out-dir', keys])).code, 0);
  full = join(dir, 'v1.airlock.tar');
  assert.equal((await runAirlock(['export', 'acme/big', '--sign-key', join(keys, 'signer.key.asc'), '-o', full], { env: { HF_ENDPOINT: hub.endpoint } })).code, 0);
  cache = join(dir, 'offline');
  assert.equal((await runAirlock(['import', full, '--trusted-keys', pub(), '--cache-dir', cache])).code, 0);
  // the offline side tells the connected side what it has
  const inv = await runAirlock(['cache', 'inventory', '--cache-dir', cache, '--out', join(dir, 'have.json')]);
  assert.equal(inv.code, 0, inv.stderr);
  // upstream moves on: one shard and the config change
  v2 = await hub.addCommit({ id: 'acme/big' }, [{ path: 'config.json', data: '{"v": 2}\n' }, index(), shard(1, 1), shard(2, 22), shard(3, 3)]);
  delta = join(dir, 'v2-delta.airlock.tar');
  const start = hub.contentBytesServed;
  const exp = await runAirlock(['export', 'acme/big', '--have', join(dir, 'have.json'), '--allow-unsigned-have', '--sign-key', join(keys, 'signer.key.asc'), '-o', delta], {
    env: { HF_ENDPOINT: hub.endpoint },
  });
  assert.equal(exp.code, 0, exp.stderr);
  assert.match(exp.stdout, /delta: 2 files, 4\.0 MiB left out/);
  const served = hub.contentBytesServed - start;
  assert.ok(served < SHARD + 4096, `only the changed shard and small files were downloaded (${served} bytes)`);
});

after(async () => {
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('delta export', () => {
  test('leaves the held shards out of the tar and SHA256SUMS, marks them in the signed manifest', async () => {
    const fullSize = (await stat(full)).size;
    const deltaSize = (await stat(delta)).size;
    assert.ok(deltaSize < fullSize / 2.5, `delta ${deltaSize} B vs full ${fullSize} B`);
    const list = await run('tar', ['-tf', delta]);
    assert.doesNotMatch(list.stdout, /model-00001-of-00003|model-00003-of-00003/);
    assert.match(list.stdout, /model-00002-of-00003/);
    const out = join(dir, 'x');
    await mkdir(out);
    assert.equal((await run('tar', ['-xf', delta, '-C', out])).code, 0);
    assert.equal((await run('sha256sum', ['--strict', '-c', 'SHA256SUMS'], { cwd: out })).code, 0);
    const manifest = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8'));
    const refs = manifest.repos[0].files.filter((f: { reference?: boolean }) => f.reference).map((f: { path: string }) => f.path);
    assert.deepEqual(refs, ['model-00001-of-00003.safetensors', 'model-00003-of-00003.safetensors']);
    const v = await runAirlock(['verify', delta, '--trusted-keys', pub()]);
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, /delta: 2 of them are not in the bundle/);
  });
});

describe('delta import', () => {
  test('where the base is present: the new revision loads offline with the real huggingface_hub', async () => {
    const r = await runAirlock(['import', delta, '--trusted-keys', pub(), '--cache-dir', cache, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const py = await runPython(
      `
import json, hashlib, os
from huggingface_hub import snapshot_download, scan_cache_dir
path = snapshot_download("acme/big", local_files_only=True)
files = {}
for root, _, names in os.walk(path):
    for n in names:
        p = os.path.join(root, n)
        files[os.path.relpath(p, path)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
info = scan_cache_dir()
print(json.dumps({"path": path, "files": files, "warnings": [str(w) for w in info.warnings], "revisions": sorted(r.commit_hash for repo in info.repos for r in repo.revisions)}))
`,
      { HF_HUB_OFFLINE: '1', HF_HUB_CACHE: cache },
    );
    assert.equal(py.code, 0, py.stderr);
    const result = JSON.parse(py.stdout.trim().split('\n').pop()!);
    assert.ok(result.path.endsWith(v2.commit));
    assert.deepEqual(result.warnings, []);
    assert.deepEqual(result.revisions, [v1.commit, v2.commit].sort());
    assert.deepEqual(result.files, Object.fromEntries(v2.files.map((f) => [f.path, f.sha256])));
  });

  test('into a cache without the base: refused before any payload, nothing changes', async () => {
    const empty = join(dir, 'empty');
    await mkdir(empty);
    const before = await snapshotTree(empty);
    const r = await runAirlock(['import', delta, '--trusted-keys', pub(), '--cache-dir', empty]);
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, /E_DELTA_BASE_MISSING/);
    assert.match(r.stderr, /model-0000[13]-of-00003\.safetensors/);
    assert.match(r.stderr, /import the bundle that carried this file first/);
    assert.deepEqual(await snapshotTree(empty), before);
  });

  test('into a cache whose base blob is damaged: refused, nothing changes', async () => {
    const damaged = join(dir, 'damaged');
    assert.equal((await runAirlock(['import', full, '--trusted-keys', pub(), '--cache-dir', damaged])).code, 0);
    const held = v1.files.find((f) => f.path === 'model-00001-of-00003.safetensors')!;
    const blob = join(damaged, 'models--acme--big', 'blobs', held.etag);
    const data = await readFile(blob);
    data[SHARD / 2] = data[SHARD / 2]! ^ 1;
    await writeFile(blob, data);
    assert.notEqual(sha(data), held.sha256);
    const before = await snapshotTree(damaged);
    const r = await runAirlock(['import', delta, '--trusted-keys', pub(), '--cache-dir', damaged]);
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, /E_DELTA_BASE_MISSING/);
    assert.deepEqual(await snapshotTree(damaged), before);
  });
});
