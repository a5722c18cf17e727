/**
 * `export --from-cache` on a cache written by the REAL huggingface_hub (the project venv's
 * `snapshot_download` against the test hub): whatever else that library leaves in the cache (`.locks/`,
 * `CACHEDIR.TAG`, `.no_exist/`, `trees/`…) must not trip the exporter; the bundle then imports into a
 * fresh cache that huggingface_hub serves offline (`local_files_only=True`), byte for byte.
 */
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runAirlock } from '../support/cli.js';
import { startHubServer, type AddedCommit, type HubServer } from '../support/hub-server.js';
import { runPython } from '../support/python.js';
import { safetensorsOf } from '../support/safetensors-fixture.js';

const FILES: Record<string, Buffer> = {
  'config.json': Buffer.from('{"model_type":"tiny"}\n'),
  'README.md': Buffer.from('# x\n'),
  'nested/deeper/tokenizer.json': Buffer.from('{"version":"1.0"}\n'),
  'nested/notes with space.txt': Buffer.from('spaces survive\n'),
  'model.safetensors': safetensorsOf(randomBytes(256 * 1024)),
};

let dir: string;
let hub: HubServer;
let added: AddedCommit;
let keys: string;
let srcCache: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-fcint-'));
  hub = await startHubServer();
  added = await hub.addRepo({ id: 'acme/x', files: Object.entries(FILES).map(([path, data]) => ({ path, data })) });
  keys = join(dir, 'keys');
  const k = await runAirlock(['keys', 'generate', '--user-id', 'Fc <fc@example.org>', '--out-dir', keys]);
  assert.equal(k.code, 0, k.stderr);
  srcCache = join(dir, 'hf-src');
  // the real library fills the cache; a lookup of a missing file leaves a .no_exist/ marker too
  const py = await runPython(
    `
import json, os
from huggingface_hub import snapshot_download, hf_hub_download
from huggingface_hub.utils import EntryNotFoundError
cache = os.environ['CACHE']
path = snapshot_download('acme/x', cache_dir=cache)
try:
    hf_hub_download('acme/x', 'generation_config.json', cache_dir=cache)
except EntryNotFoundError:
    pass
print(json.dumps({'path': path}))
`,
    { HF_ENDPOINT: hub.endpoint, HF_HUB_DISABLE_XET: '1', CACHE: srcCache },
  );
  assert.equal(py.code, 0, py.stderr);
  assert.equal(JSON.parse(py.stdout).path, join(srcCache, 'models--acme--x', 'snapshots', added.commit));
  // what huggingface_hub (1.x here) leaves beside the snapshot: the exporter must read past all of it
  const folder = join(srcCache, 'models--acme--x');
  for (const extra of ['CACHEDIR.TAG', join('.locks', 'models--acme--x'), join(folder, 'trees', `${added.commit}.json`), join(folder, '.no_exist', added.commit, 'generation_config.json')]) {
    assert.ok(existsSync(extra.startsWith('/') ? extra : join(srcCache, extra)), `huggingface_hub wrote ${extra}`);
  }
});

after(async () => {
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('export --from-cache on a huggingface_hub-written cache', () => {
  test('exports it (re-hashed) and the import is served offline by huggingface_hub, byte for byte', async () => {
    const bundle = join(dir, 'x.airlock.tar');
    const e = await runAirlock(['export', '--from-cache', 'acme/x', '--cache-dir', srcCache, '--sign-key', join(keys, 'signer.key.asc'), '-o', bundle], {
      env: { HF_HUB_OFFLINE: '1' },
    });
    assert.equal(e.code, 0, e.stderr);

    const inspect = await runAirlock(['inspect', bundle, '--json']);
    assert.equal(inspect.code, 0, inspect.stderr);
    const repo = JSON.parse(inspect.stdout).manifest.repos[0];
    assert.equal(repo.source.kind, 'hf-cache');
    assert.equal(repo.commit, added.commit);
    assert.equal(repo.revision, 'main');
    assert.deepEqual(repo.files.map((f: { path: string }) => f.path).sort(), Object.keys(FILES).sort(), 'only the snapshot, nothing from .no_exist/ or .locks/');
    const st = repo.files.find((f: { path: string }) => f.path === 'model.safetensors');
    assert.equal(st.lfs, true);
    assert.ok(st.safetensors !== undefined, 'the weight check ran');

    const fresh = join(dir, 'hf-dst');
    const i = await runAirlock(['import', bundle, '--trusted-keys', join(keys, 'signer.pub.asc'), '--cache-dir', fresh]);
    assert.equal(i.code, 0, i.stderr);

    const py = await runPython(
      `
import json, os
from huggingface_hub import snapshot_download
print(json.dumps({'path': snapshot_download('acme/x', cache_dir=os.environ['CACHE'], local_files_only=True)}))
`,
      { CACHE: fresh, HF_HUB_OFFLINE: '1' },
    );
    assert.equal(py.code, 0, py.stderr);
    const served = JSON.parse(py.stdout).path as string;
    assert.equal(served, join(fresh, 'models--acme--x', 'snapshots', added.commit));
    for (const [path, data] of Object.entries(FILES)) {
      assert.deepEqual(await readFile(join(served, ...path.split('/'))), data, path);
      assert.deepEqual(await readFile(join(srcCache, 'models--acme--x', 'snapshots', added.commit, ...path.split('/'))), data, `${path} (source cache)`);
    }
  });

  test('by commit and with --include, from the same cache', async () => {
    const bundle = join(dir, 'x-json.airlock.tar');
    const e = await runAirlock(['export', '--from-cache', `acme/x@${added.commit}`, '--include', '*.json', '--cache-dir', srcCache, '--unsigned', '-o', bundle], {
      env: { HF_HUB_OFFLINE: '1' },
    });
    assert.equal(e.code, 0, e.stderr);
    const inspect = await runAirlock(['inspect', bundle, '--json']);
    const repo = JSON.parse(inspect.stdout).manifest.repos[0];
    assert.equal(repo.commit, added.commit);
    assert.deepEqual(repo.files.map((f: { path: string }) => f.path).sort(), ['config.json', 'nested/deeper/tokenizer.json']);
  });
});
