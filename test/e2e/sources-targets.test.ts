/**
 * Issue 5 wired into the product, through the real CLI: ModelScope export → bundle → import into the
 * modelscope cache (the `.msc` decoded byte for byte against the spec's recipe) and into a plain dir
 * (checked with the real huggingface_hub); `--spec` (valid: two sources in one bundle; invalid: every
 * problem with line:column, exit 2); `--from-cache` round trip and a dangling link refused by name;
 * weight checks on export and import (truncated shard, index naming a missing shard, --no-weight-check);
 * inspect's tensor counts.
 */
import * as assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decodeModelScopePickle } from '../../src/cache/modelscope.ts';
import { writeBundleFile, makeTestKey, type TestKey } from '../support/bundle-builder.ts';
import { formatTree, snapshotTree, stagingLeftovers } from '../support/cache-snapshot.ts';
import { runAirlock } from '../support/cli.ts';
import { startHubServer, type HubServer } from '../support/hub-server.ts';
import { startModelScopeServer, type ModelScopeServer, type MsAddedCommit } from '../support/modelscope-server.ts';
import { runPython } from '../support/python.ts';
import { sampleModelFiles } from '../support/sample-model.ts';

let dir: string;
let hub: HubServer;
let ms: ModelScopeServer;
let msAdded: MsAddedCommit;
let keys: string;
let key: TestKey;
let keyFile: string;

const sample = sampleModelFiles();
const weights = sample.find((f) => f.path === 'model.safetensors')!.data;
const truncated = weights.subarray(0, weights.length - 100);

function sign(): string[] {
  return ['--sign-key', join(keys, 'signer.key.asc')];
}
function trust(): string[] {
  return ['--trusted-keys', join(keys, 'signer.pub.asc')];
}
async function readManifest(bundle: string): Promise<any> {
  const r = await runAirlock(['inspect', bundle, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout).manifest;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-src-'));
  hub = await startHubServer();
  ms = await startModelScopeServer();
  await hub.addRepo({ id: 'acme/tiny-llm', files: sample });
  await hub.addRepo({ id: 'acme/broken', files: [{ path: 'config.json', data: '{}\n' }, { path: 'model.safetensors', data: truncated }] });
  await hub.addRepo({
    id: 'acme/sharded',
    files: [
      { path: 'config.json', data: '{}\n' },
      { path: 'model-00001-of-00002.safetensors', data: weights },
      { path: 'model-00002-of-00002.safetensors', data: weights },
      { path: 'model.safetensors.index.json', data: JSON.stringify({ metadata: {}, weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } }) },
    ],
  });
  msAdded = ms.addRepo({ id: 'qwen/Tiny.Chat-0.5B', files: [...sample, { path: 'sub/readme.md', data: '# tiny\n' }] });
  keys = join(dir, 'keys');
  const r = await runAirlock(['keys', 'generate', '--user-id', 'Src <src@example.org>', '--out-dir', keys]);
  assert.equal(r.code, 0, r.stderr);
  key = await makeTestKey();
  keyFile = join(dir, 'builder.pub.asc');
  await writeFile(keyFile, key.publicKeyArmored);
});

after(async () => {
  await hub?.close();
  await ms?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('ModelScope source → modelscope and dir layouts', () => {
  let bundle: string;
  before(async () => {
    bundle = join(dir, 'ms.airlock.tar');
    const r = await runAirlock(['export', '--source', 'modelscope', 'qwen/Tiny.Chat-0.5B', ...sign(), '-o', bundle], { env: { MODELSCOPE_ENDPOINT: ms.endpoint } });
    assert.equal(r.code, 0, r.stderr);
  });

  test('the manifest records kind, per-file lastCommit, CreatedAt and tensor info', async () => {
    const m = await readManifest(bundle);
    const repo = m.repos[0];
    assert.equal(repo.revision, 'master');
    assert.equal(repo.commit, msAdded.commit);
    assert.deepEqual(repo.source, { kind: 'modelscope', endpoint: ms.endpoint, createdAt: msAdded.createdAt });
    for (const f of repo.files) assert.equal(f.lastCommit, msAdded.files.find((x) => x.path === f.path)!.lastCommit);
    const st = repo.files.find((f: any) => f.path === 'model.safetensors').safetensors;
    assert.ok(st.tensors > 10 && st.dtypes.F32 === st.tensors, JSON.stringify(st));
    const text = await runAirlock(['inspect', bundle]);
    assert.match(text.stdout, new RegExp(`model\\.safetensors .* ${st.tensors} tensors \\(F32 ×${st.tensors}\\)`));
    assert.match(text.stdout, /from modelscope /);
  });

  test('import defaults to the modelscope layout; .msc/.mdl/.mv decode as the spec gives', async () => {
    const cache = join(dir, 'ms-cache');
    const r = await runAirlock(['import', bundle, ...trust()], { env: { MODELSCOPE_CACHE: cache } });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /layout modelscope/);
    const folder = join(cache, 'models', 'qwen', 'Tiny___Chat-0___5B');
    for (const f of [...sample, { path: 'sub/readme.md', data: Buffer.from('# tiny\n') }]) {
      assert.deepEqual(await readFile(join(folder, f.path)), Buffer.from(f.data), f.path);
    }
    const msc = decodeModelScopePickle(await readFile(join(folder, '.msc'))) as Array<{ Path: string; Revision: string }>;
    assert.deepEqual(
      [...msc].sort((a, b) => (a.Path < b.Path ? -1 : 1)),
      msAdded.files.map((f) => ({ Path: f.path, Revision: f.lastCommit })).sort((a, b) => (a.Path < b.Path ? -1 : 1)),
    );
    assert.deepEqual(decodeModelScopePickle(await readFile(join(folder, '.mdl'))), { id: 'qwen/Tiny___Chat-0___5B' });
    assert.equal(await readFile(join(folder, '.mv'), 'utf8'), `Revision:master,CreatedAt:${msAdded.createdAt}`);
    assert.deepEqual(await stagingLeftovers(cache), []);
  });

  test('--layout dir --local-dir: plain files that the real huggingface_hub serves offline, no DIR/.locks', async () => {
    const local = join(dir, 'plain');
    const r = await runAirlock(['import', bundle, ...trust(), '--layout', 'dir', '--local-dir', local]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(existsSync(join(local, '.locks')), false);
    assert.deepEqual((await readdir(join(local, '.cache', 'huggingface'))).sort(), ['.gitignore', 'CACHEDIR.TAG', 'download']);
    const py = await runPython(
      `
import json, os
from huggingface_hub import hf_hub_download
out = {}
for f in json.loads(os.environ['FILES']):
    out[f] = hf_hub_download('qwen/Tiny.Chat-0.5B', f, local_dir=os.environ['LOCAL'], revision=os.environ['REV'])
print(json.dumps(out))
`,
      { LOCAL: local, REV: msAdded.commit, FILES: JSON.stringify(['config.json', 'model.safetensors', 'sub/readme.md']), HF_HUB_OFFLINE: '1' },
    );
    assert.equal(py.code, 0, py.stderr);
    const paths = JSON.parse(py.stdout) as Record<string, string>;
    assert.equal(paths['sub/readme.md'], join(local, 'sub', 'readme.md'));
    assert.deepEqual(await readFile(paths['model.safetensors']!), weights);
  });
});

describe('--spec airlock.yaml', () => {
  test('one bundle from two sources, each repo with its own revision and patterns; bundle-level output and signing key', async () => {
    const specDir = join(dir, 'spec');
    await runAirlock(['keys', 'generate', '--user-id', 'Spec <s@example.org>', '--out-dir', specDir]);
    const spec = join(specDir, 'airlock.yaml');
    await writeFile(
      spec,
      [
        'output: two.airlock.tar',
        'signingKey: signer.key.asc',
        'repos:',
        '  - id: acme/tiny-llm',
        `    endpoint: ${hub.endpoint}`,
        '    include: ["*.json"]',
        '  - id: qwen/Tiny.Chat-0.5B',
        '    source: modelscope',
        `    endpoint: ${ms.endpoint}`,
        '    exclude: "*.safetensors"',
        '',
      ].join('\n'),
    );
    const r = await runAirlock(['export', '--spec', spec]);
    assert.equal(r.code, 0, r.stderr);
    const bundle = join(specDir, 'two.airlock.tar');
    const v = await runAirlock(['verify', bundle, '--trusted-keys', join(specDir, 'signer.pub.asc'), '--json']);
    assert.equal(v.code, 0, v.stderr);
    const m = await readManifest(bundle);
    const byId = Object.fromEntries(m.repos.map((x: any) => [x.id, x]));
    assert.equal(byId['acme/tiny-llm'].source.kind, 'huggingface');
    assert.equal(byId['acme/tiny-llm'].revision, 'main');
    assert.ok(byId['acme/tiny-llm'].files.every((f: any) => f.path.endsWith('.json')));
    assert.equal(byId['qwen/Tiny.Chat-0.5B'].source.kind, 'modelscope');
    assert.equal(byId['qwen/Tiny.Chat-0.5B'].revision, 'master');
    assert.ok(byId['qwen/Tiny.Chat-0.5B'].files.every((f: any) => !f.path.endsWith('.safetensors')));
  });

  test('an invalid spec: every problem at once with line:column, exit 2, nothing fetched', async () => {
    const spec = join(dir, 'bad.yaml');
    await writeFile(spec, ['splitSize: 12', 'repos:', '  - id: acme/tiny-llm', '    source: gitlab', '  - id: ../evil', '    type: space', '    colour: red', ''].join('\n'));
    const before = hub.requests.length;
    const r = await runAirlock(['export', '--spec', spec, '--unsigned']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /bad\.yaml:1:\d+: \/splitSize/);
    assert.match(r.stderr, /bad\.yaml:4:\d+: \/repos\/0\/source/);
    assert.match(r.stderr, /bad\.yaml:5:\d+: \/repos\/1\/id/);
    assert.match(r.stderr, /bad\.yaml:6:\d+: \/repos\/1\/type/);
    assert.match(r.stderr, /bad\.yaml:7:\d+: /);
    const syntax = join(dir, 'syntax.yaml');
    await writeFile(syntax, 'repos:\n  - id: [unclosed\n');
    const s = await runAirlock(['export', '--spec', syntax, '--unsigned']);
    assert.equal(s.code, 2, s.stderr);
    assert.match(s.stderr, /syntax\.yaml:\d+:\d+: /);
    assert.equal(hub.requests.length, before);
  });
});

describe('--from-cache', () => {
  let cache: string;
  before(async () => {
    const bundle = join(dir, 'hf.airlock.tar');
    const e = await runAirlock(['export', 'acme/tiny-llm', ...sign(), '-o', bundle], { env: { HF_ENDPOINT: hub.endpoint } });
    assert.equal(e.code, 0, e.stderr);
    cache = join(dir, 'hf-cache');
    const i = await runAirlock(['import', bundle, ...trust(), '--cache-dir', cache]);
    assert.equal(i.code, 0, i.stderr);
  });

  test('bundles a cached snapshot (re-hashed), which imports into another cache byte for byte', async () => {
    const out = join(dir, 'from-cache.airlock.tar');
    const r = await runAirlock(['export', '--from-cache', 'acme/tiny-llm', '--cache-dir', cache, ...sign(), '-o', out], { env: { HF_HUB_OFFLINE: '1' } });
    assert.equal(r.code, 0, r.stderr);
    const m = await readManifest(out);
    assert.equal(m.repos[0].source.kind, 'hf-cache');
    assert.match(m.repos[0].source.endpoint, /^file:\/\/\//);
    const again = join(dir, 'hf-cache-2');
    const i = await runAirlock(['import', out, ...trust(), '--cache-dir', again]);
    assert.equal(i.code, 0, i.stderr);
    const strip = (t: string): string => t.replace(/^.*\.locks.*$/gm, '');
    assert.equal(strip(formatTree(await snapshotTree(join(again, 'models--acme--tiny-llm')))), strip(formatTree(await snapshotTree(join(cache, 'models--acme--tiny-llm')))));
  });

  test('a spec entry with source: hf-cache reads the cache HF_HUB_CACHE names', async () => {
    const spec = join(dir, 'cache-spec.yaml');
    await writeFile(spec, ['repos:', '  - id: acme/tiny-llm', '    source: hf-cache', '    include: "*.json"', ''].join('\n'));
    const out = join(dir, 'cache-spec.airlock.tar');
    const r = await runAirlock(['export', '--spec', spec, '--unsigned', '-o', out], { env: { HF_HUB_CACHE: cache } });
    assert.equal(r.code, 0, r.stderr);
    const m = await readManifest(out);
    assert.equal(m.repos[0].source.kind, 'hf-cache');
    assert.ok(m.repos[0].files.length > 0 && m.repos[0].files.every((f: any) => f.path.endsWith('.json')));
  });

  test('a dangling link is refused, naming the file', async () => {
    const blobs = join(cache, 'models--acme--tiny-llm', 'blobs');
    const config = sample.find((f) => f.path === 'config.json')!;
    const names = await readdir(blobs);
    let victim: string | undefined;
    for (const n of names) if ((await readFile(join(blobs, n))).equals(config.data)) victim = n;
    assert.ok(victim);
    await unlink(join(blobs, victim));
    const out = join(dir, 'dangling.airlock.tar');
    const r = await runAirlock(['export', '--from-cache', 'acme/tiny-llm', '--cache-dir', cache, '--unsigned', '-o', out]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /E_CACHE_CORRUPT/);
    assert.match(r.stderr, /config\.json: dangling link/);
    assert.equal(existsSync(out), false);
  });
});

describe('weight checks', () => {
  test('export refuses a truncated shard (E_WEIGHTS_INVALID, exit 3, no bundle); --no-weight-check lets it through', async () => {
    const out = join(dir, 'broken.airlock.tar');
    const r = await runAirlock(['export', 'acme/broken', '--unsigned', '-o', out], { env: { HF_ENDPOINT: hub.endpoint } });
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /E_WEIGHTS_INVALID/);
    assert.match(r.stderr, /model\.safetensors/);
    assert.match(r.stderr, /truncated/);
    assert.equal(existsSync(out), false);
    const ok = await runAirlock(['export', 'acme/broken', '--unsigned', '-o', out, '--no-weight-check'], { env: { HF_ENDPOINT: hub.endpoint } });
    assert.equal(ok.code, 0, ok.stderr);
  });

  test('export refuses an index naming a shard left out of the bundle', async () => {
    const out = join(dir, 'sharded.airlock.tar');
    const r = await runAirlock(['export', 'acme/sharded', '--unsigned', '-o', out, '--exclude', '*00002*'], { env: { HF_ENDPOINT: hub.endpoint } });
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /model-00002-of-00002\.safetensors is named by the index but is not in the bundle/);
    const ok = await runAirlock(['export', 'acme/sharded', '--unsigned', '-o', out], { env: { HF_ENDPOINT: hub.endpoint } });
    assert.equal(ok.code, 0, ok.stderr);
  });

  test('import refuses a truncated shard and a missing index shard before committing; --no-weight-check imports', async () => {
    const bad = join(dir, 'bad-weights.airlock.tar');
    await writeBundleFile(bad, {
      signer: key.signer,
      repos: [{ id: 'acme/bad', files: [{ path: 'config.json', data: '{}\n' }, { path: 'model.safetensors', data: truncated, lfs: true }] }],
    });
    const cache = join(dir, 'weights-cache');
    const r = await runAirlock(['import', bad, '--trusted-keys', keyFile, '--cache-dir', cache]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /E_WEIGHTS_INVALID/);
    assert.match(r.stderr, /acme\/bad@[0-9a-f]{40}: model\.safetensors failed the weight check/);
    assert.equal(existsSync(cache), false, 'the cache was created');
    const noIndex = join(dir, 'bad-index.airlock.tar');
    await writeBundleFile(noIndex, {
      signer: key.signer,
      repos: [
        {
          id: 'acme/bad-index',
          files: [
            { path: 'model-00001-of-00002.safetensors', data: weights, lfs: true },
            { path: 'model.safetensors.index.json', data: JSON.stringify({ weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } }) },
          ],
        },
      ],
    });
    const i = await runAirlock(['import', noIndex, '--trusted-keys', keyFile, '--cache-dir', cache]);
    assert.equal(i.code, 3, i.stderr);
    assert.match(i.stderr, /model-00002-of-00002\.safetensors is named by the index but is not in the bundle/);
    assert.equal(existsSync(cache), false);
    const ok = await runAirlock(['import', bad, '--trusted-keys', keyFile, '--cache-dir', cache, '--no-weight-check']);
    assert.equal(ok.code, 0, ok.stderr);
  });
});
