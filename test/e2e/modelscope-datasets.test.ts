/**
 * ModelScope datasets (spec modelscope.md §2.9, §3.1, §3.3) against the test ModelScope's dataset
 * personality: the id lookup, the paginated tree listing by hub id (until a page holds fewer than
 * PageSize entries), downloads from `…/datasets/{owner}/{name}/repo?Source=SDK&Revision=&FilePath=&View=False`,
 * the default revision `master` passed through (no revisions call), errors; then the CLI round trip
 * export → bundle → import into `MC/datasets/{owner}/{name___}` with `.msc` / `.mdl` walked byte for byte
 * against the spec's recipe (and loaded by CPython's pickle) and `.mv` = the bare revision, no newline.
 */
import { walkRecipe } from '../support/modelscope-recipe.js';
import { rejectsWith } from '../support/assert-error.js';
import * as assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fetchSnapshot } from '../../src/export/fetch.js';
import { createModelScopeClient, type ModelScopeClient } from '../../src/hub/modelscope/client.js';
import type { RepoRef } from '../../src/hub/types.js';
import { stagingLeftovers } from '../support/cache-snapshot.js';
import { runAirlock } from '../support/cli.js';
import { startModelScopeServer, type ModelScopeServer, type MsAddedCommit } from '../support/modelscope-server.js';
import { runPython } from '../support/python.js';

const GOOD = 'ms-good-token-0123456789';
const BAD = 'ms-bad-token-0123456789';
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

const FILES: Record<string, Buffer> = {
  'README.md': Buffer.from('# eval set\n'),
  'dataset_infos.json': Buffer.from('{"default":{"splits":{"train":{"num_examples":2}}}}\n'),
  'data/train.jsonl': Buffer.from('{"q":"1+1","a":"2"}\n{"q":"2+2","a":"4"}\n'),
  'data/test dir/test #1.jsonl': Buffer.from('{"q":"3+3","a":"6"}\n'),
  'data/shard.parquet': randomBytes(300 * 1024 + 3),
  'empty.txt': Buffer.alloc(0),
};
const files = (): Array<{ path: string; data: Buffer; lfs?: boolean }> =>
  Object.entries(FILES).map(([path, data]) => (path.endsWith('.parquet') ? { path, data, lfs: true } : { path, data }));
const dataset = (id: string, revision = 'master'): RepoRef => ({ type: 'dataset', id, revision });

let server: ModelScopeServer;
let work: string;
let first: MsAddedCommit;
let second: MsAddedCommit;
let client: ModelScopeClient;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'airlock-msds-'));
  server = await startModelScopeServer({ tokens: [GOOD] });
  first = server.addRepo({ id: 'acme/eval.set', type: 'dataset', files: files(), tags: ['v1'] });
  second = server.addCommit('acme/eval.set', [{ path: 'data/train.jsonl', data: Buffer.concat([FILES['data/train.jsonl']!, Buffer.from('{"q":"5+5","a":"10"}\n')]) }], { type: 'dataset' });
  // a model of the same id with other content: the dataset routes must be the ones used
  server.addRepo({ id: 'acme/eval.set', files: [{ path: 'config.json', data: '{"model":true}\n' }] });
  // 450 files under one directory: 451 entries = pages of 200, 200, 51
  server.addRepo({ id: 'acme/big', type: 'dataset', files: Array.from({ length: 450 }, (_, i) => ({ path: `rows/part-${String(i).padStart(4, '0')}.txt`, data: `row ${i}\n` })) });
  // exactly 4 entries: with PageSize 2, pages of 2, 2 and an empty third
  server.addRepo({ id: 'acme/exact', type: 'dataset', files: ['a', 'b', 'c', 'd'].map((n) => ({ path: `${n}.txt`, data: `${n}\n` })) });
  server.addRepo({ id: 'acme/secret', type: 'dataset', private: true, files: [{ path: 'a.txt', data: 'secret\n' }] });
  server.addRepo({ id: 'acme/loop', type: 'dataset', files: [{ path: 'x.txt', data: 'x\n' }] });
  client = createModelScopeClient({ endpoint: server.endpoint, retry: { baseDelayMs: 1 } });
});

after(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

describe('ModelScope dataset listing', () => {
  it('looks the hub id up, lists the tree by it at master (passed through, no revisions call)', async () => {
    const repo = dataset('acme/eval.set');
    const start = server.requests.length;
    const commit = await client.resolveCommit(repo);
    assert.match(commit, /^[0-9a-f]{40}$/);
    assert.deepEqual(client.resolved(repo), { revision: 'master', kind: 'branch', commit, createdAt: undefined });
    const got = server.requests.slice(start).map((r) => r.url);
    const hubId = server.datasetHubId('acme/eval.set');
    assert.deepEqual(got, [
      '/api/v1/datasets/acme/eval.set',
      `/api/v1/datasets/${hubId}/repo/tree?Revision=master&Root=%2F&Recursive=True&PageNumber=1&PageSize=200`,
    ]);
    const listed = await client.listFiles(repo, commit);
    assert.equal(server.requests.length - start, 2, 'listFiles reuses the listing resolveCommit pinned');
    assert.deepEqual(listed.map((f) => f.path).sort(), Object.keys(FILES).sort());
    const train = listed.find((f) => f.path === 'data/train.jsonl')!;
    assert.equal(train.lastCommit, second.commit);
    assert.equal(listed.find((f) => f.path === 'README.md')!.lastCommit, first.commit);
    assert.equal(train.lfsSha256, second.files.find((f) => f.path === 'data/train.jsonl')!.sha256);
    // the same listing gives the same snapshot id, from a fresh client too
    const again = createModelScopeClient({ endpoint: server.endpoint });
    assert.equal(await again.resolveCommit(repo), commit);
  });

  it('passes a tag through: the listing at v1', async () => {
    const repo = dataset('acme/eval.set', 'v1');
    const commit = await client.resolveCommit(repo);
    const listed = await client.listFiles(repo, commit);
    assert.equal(listed.find((f) => f.path === 'data/train.jsonl')!.lfsSha256, sha256(FILES['data/train.jsonl']!));
    assert.notEqual(commit, await client.resolveCommit(dataset('acme/eval.set')));
  });

  it('pages until a page holds fewer than PageSize entries (200 by default)', async () => {
    const start = server.requests.length;
    const repo = dataset('acme/big');
    const listed = await client.listFiles(repo, await client.resolveCommit(repo));
    assert.equal(listed.length, 450);
    assert.equal(new Set(listed.map((f) => f.path)).size, 450);
    const pages = server.requests.slice(start).filter((r) => r.url.includes('/repo/tree?'));
    assert.deepEqual(pages.map((r) => new URL(r.url, 'http://x').searchParams.get('PageNumber')), ['1', '2', '3']);
    assert.ok(pages.every((r) => new URL(r.url, 'http://x').searchParams.get('PageSize') === '200'));
  });

  it('asks one more page when the last one was full, and stops at the empty one', async () => {
    const small = createModelScopeClient({ endpoint: server.endpoint, datasetPageSize: 2 });
    const start = server.requests.length;
    const repo = dataset('acme/exact');
    const listed = await small.listFiles(repo, await small.resolveCommit(repo));
    assert.deepEqual(listed.map((f) => f.path).sort(), ['a.txt', 'b.txt', 'c.txt', 'd.txt']);
    assert.equal(server.requests.slice(start).filter((r) => r.url.includes('/repo/tree?')).length, 3);
  });

  it('refuses a server that ignores PageNumber (the same full page again)', async () => {
    const entry = (p: string): Record<string, unknown> => ({ Name: p, Path: p, Type: 'blob', Size: 2, Sha256: sha256(Buffer.from('x\n')), Revision: first.commit });
    server.overrideListing('acme/loop', { Files: [entry('x.txt'), entry('y.txt')] }, 'dataset');
    const small = createModelScopeClient({ endpoint: server.endpoint, datasetPageSize: 2 });
    await rejectsWith(small.resolveCommit(dataset('acme/loop')), 'E_HUB_PROTOCOL', (e) => assert.match(e.message, /listed twice/));
    server.overrideListing('acme/loop', { Files: 'nope' }, 'dataset');
    await rejectsWith(small.resolveCommit(dataset('acme/loop')), 'E_HUB_PROTOCOL');
  });
});

describe('ModelScope dataset downloads and errors', () => {
  it('downloads from …/datasets/{owner}/{name}/repo?Source=SDK&Revision=&FilePath=&View=False, LFS via the CDN', async () => {
    const start = server.requests.length;
    const snap = await fetchSnapshot(client, dataset('acme/eval.set', 'v1'), { include: [], exclude: [], workDir: join(work, 'fetch') });
    for (const f of snap.files) assert.deepEqual(await readFile(f.localPath), FILES[f.remote.path], f.remote.path);
    const got = server.requests.slice(start);
    const odd = got.find((r) => r.url.includes('test+dir'))!;
    assert.equal(odd.url, '/api/v1/datasets/acme/eval.set/repo?Source=SDK&Revision=v1&FilePath=data%2Ftest+dir%2Ftest+%231.jsonl&View=False');
    assert.ok(odd.snapshotIdentifier !== undefined);
    assert.ok(!got.some((r) => r.url.includes('empty.txt')), 'no request for a zero-byte file');
    assert.ok(got.some((r) => r.host === '127.0.0.2' && r.status === 200), 'the parquet came from the CDN');
    assert.ok(!got.some((r) => r.url.includes('/revisions') || r.url.includes('/api/v1/models/')));
  });

  it('maps errors: missing, private, bad token, unknown revision, moved listing, corrupt bytes', async () => {
    await rejectsWith(client.resolveCommit(dataset('acme/missing')), 'E_REPO_NOT_FOUND', (e) => assert.match(e.message, /ModelScope dataset acme\/missing/));
    await rejectsWith(client.resolveCommit(dataset('acme/secret')), 'E_REPO_NOT_FOUND', (e) => assert.match(e.hint ?? '', /MODELSCOPE_API_TOKEN/));
    const bad = createModelScopeClient({ endpoint: server.endpoint, token: BAD, retry: { baseDelayMs: 1 } });
    await rejectsWith(bad.resolveCommit(dataset('acme/secret')), 'E_AUTH');
    const good = createModelScopeClient({ endpoint: server.endpoint, token: GOOD, retry: { baseDelayMs: 1 } });
    const secret = dataset('acme/secret');
    const commit = await good.resolveCommit(secret);
    const [file] = await good.listFiles(secret, commit);
    await good.download(secret, commit, file!, join(work, 'secret.txt'));
    assert.equal(await readFile(join(work, 'secret.txt'), 'utf8'), 'secret\n');
    await rejectsWith(client.resolveCommit(dataset('acme/eval.set', 'nope')), 'E_REVISION_NOT_FOUND', (e) => assert.match(e.message, /"nope"/));

    // a resumed export whose pinned listing no longer matches
    const repo = dataset('acme/exact');
    const pinned = await client.resolveCommit(repo);
    server.addCommit('acme/exact', [{ path: 'e.txt', data: 'e\n' }], { type: 'dataset' });
    const fresh = createModelScopeClient({ endpoint: server.endpoint });
    await rejectsWith(fresh.listFiles(repo, pinned), 'E_REVISION_NOT_FOUND', (e) => assert.match(e.message, /changed/));

    server.fault('README.md', { kind: 'corrupt', times: 3 });
    const listed = await client.listFiles(dataset('acme/eval.set'), await client.resolveCommit(dataset('acme/eval.set')));
    await rejectsWith(
      client.download(dataset('acme/eval.set'), client.resolved(dataset('acme/eval.set'))!.commit, listed.find((f) => f.path === 'README.md')!, join(work, 'readme')),
      'E_DOWNLOAD_INTEGRITY',
    );
  });
});

describe('CLI: export --source modelscope datasets/owner/name → import (modelscope layout)', () => {
  let keys: string;
  let bundle: string;
  before(async () => {
    keys = join(work, 'keys');
    const k = await runAirlock(['keys', 'generate', '--user-id', 'Ds <ds@example.org>', '--out-dir', keys]);
    assert.equal(k.code, 0, k.stderr);
    bundle = join(work, 'ds.airlock.tar');
    const r = await runAirlock(['export', '--source', 'modelscope', 'datasets/acme/eval.set', '--sign-key', join(keys, 'signer.key.asc'), '-o', bundle], {
      env: { MODELSCOPE_ENDPOINT: server.endpoint },
    });
    assert.equal(r.code, 0, r.stderr);
  });

  it('records a dataset at master with per-file last commits and no CreatedAt', async () => {
    const r = await runAirlock(['inspect', bundle, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const repo = JSON.parse(r.stdout).manifest.repos[0];
    assert.equal(repo.type, 'dataset');
    assert.equal(repo.id, 'acme/eval.set');
    assert.equal(repo.revision, 'master');
    assert.match(repo.commit, /^[0-9a-f]{40}$/);
    assert.deepEqual(repo.source, { kind: 'modelscope', endpoint: server.endpoint });
    for (const f of repo.files) assert.equal(f.lastCommit, second.files.find((x) => x.path === f.path)!.lastCommit, f.path);
  });

  it('imports into MC/datasets/{owner}/{name___} with .msc/.mdl per the recipe and .mv = "master"', async () => {
    const cache = join(work, 'ms-cache');
    const r = await runAirlock(['import', bundle, '--trusted-keys', join(keys, 'signer.pub.asc')], { env: { MODELSCOPE_CACHE: cache } });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /layout modelscope/);
    assert.deepEqual(await readdir(cache), ['datasets']);
    const folder = join(cache, 'datasets', 'acme', 'eval___set');
    const expected = new Map(second.files.map((f) => [f.path, f.path === 'data/train.jsonl' ? Buffer.concat([FILES[f.path]!, Buffer.from('{"q":"5+5","a":"10"}\n')]) : FILES[f.path]!]));
    for (const [path, data] of expected) assert.deepEqual(await readFile(join(folder, path)), data, path);

    const msc = walkRecipe(await readFile(join(folder, '.msc')), 'msc');
    assert.deepEqual(
      msc.map(([k1, p, k2, rev]) => [k1, p, k2, rev]).sort((a, b) => (a[1]! < b[1]! ? -1 : 1)),
      second.files.map((f) => ['Path', f.path, 'Revision', f.lastCommit]).sort((a, b) => (a[1]! < b[1]! ? -1 : 1)),
    );
    const mdl = await readFile(join(folder, '.mdl'));
    assert.deepEqual(walkRecipe(mdl, 'mdl'), [['id', 'acme/eval___set']]);
    const id = Buffer.from('acme/eval___set');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(id.length);
    assert.deepEqual(mdl, Buffer.concat([Buffer.from([0x80, 0x02, 0x7d, 0x28, 0x58, 0x02, 0, 0, 0]), Buffer.from('id'), Buffer.from([0x58]), len, id, Buffer.from([0x75, 0x2e])]));
    assert.deepEqual(await readFile(join(folder, '.mv')), Buffer.from('master'), '.mv is the bare revision, no newline');
    assert.deepEqual(await stagingLeftovers(cache), []);

    // CPython's own pickle reads both as the library would
    const py = await runPython(
      `
import json, os, pickle
d = os.environ['DIR']
print(json.dumps({'msc': pickle.load(open(os.path.join(d, '.msc'), 'rb')), 'mdl': pickle.load(open(os.path.join(d, '.mdl'), 'rb'))}))
`,
      { DIR: folder },
    );
    assert.equal(py.code, 0, py.stderr);
    const loaded = JSON.parse(py.stdout) as { msc: Array<{ Path: string; Revision: string }>; mdl: { id: string } };
    assert.deepEqual(loaded.mdl, { id: 'acme/eval___set' });
    assert.deepEqual(loaded.msc.map((e) => e.Path).sort(), [...expected.keys()].sort());
  });

  it('--spec with type: dataset beside the model of the same id; both land in their own folders', async () => {
    const spec = join(work, 'ds-spec.yaml');
    await writeFile(
      spec,
      [
        'repos:',
        '  - id: acme/eval.set',
        '    source: modelscope',
        '    type: dataset',
        '    revision: v1',
        `    endpoint: ${server.endpoint}`,
        '  - id: acme/eval.set',
        '    source: modelscope',
        `    endpoint: ${server.endpoint}`,
        '',
      ].join('\n'),
    );
    const out = join(work, 'spec.airlock.tar');
    const r = await runAirlock(['export', '--spec', spec, '--unsigned', '-o', out]);
    assert.equal(r.code, 0, r.stderr);
    const cache = join(work, 'ms-cache-spec');
    const i = await runAirlock(['import', out, '--allow-unsigned', '--cache-dir', cache]);
    assert.equal(i.code, 0, i.stderr);
    assert.deepEqual(await readFile(join(cache, 'datasets', 'acme', 'eval___set', 'data', 'train.jsonl')), FILES['data/train.jsonl']);
    assert.deepEqual(await readFile(join(cache, 'datasets', 'acme', 'eval___set', '.mv')), Buffer.from('v1'));
    assert.equal(await readFile(join(cache, 'models', 'acme', 'eval___set', 'config.json'), 'utf8'), '{"model":true}\n');
    assert.match(await readFile(join(cache, 'models', 'acme', 'eval___set', '.mv'), 'utf8'), /^Revision:master,CreatedAt:\d+$/);
  });

  it('--repo-type dataset names a dataset without the datasets/ prefix', async () => {
    const out = join(work, 'rt.airlock.tar');
    const r = await runAirlock(['export', '--source', 'modelscope', '--repo-type', 'dataset', 'acme/secret', '--unsigned', '-o', out], {
      env: { MODELSCOPE_ENDPOINT: server.endpoint, MODELSCOPE_API_TOKEN: GOOD },
    });
    assert.equal(r.code, 0, r.stderr);
    const none = await runAirlock(['export', '--source', 'modelscope', '--repo-type', 'dataset', 'acme/secret', '--unsigned', '-o', join(work, 'rt2.airlock.tar')], {
      env: { MODELSCOPE_ENDPOINT: server.endpoint },
    });
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /E_REPO_NOT_FOUND|not found/);
  });
});
