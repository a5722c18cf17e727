/**
 * `import --repo`: one repo out of a multi-repo bundle is written, the others are not — but the whole
 * bundle is still verified, so damage anywhere in it refuses the import.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHubServer, type HubServer } from '../support/hub-server.ts';
import { runAirlock } from '../support/cli.ts';
import { snapshotTree } from '../support/cache-snapshot.ts';
import { tarLayout } from '../support/tar-layout.ts';

let hub: HubServer;
let dir: string;
let bundle: string;
let pub: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-subset-'));
  hub = await startHubServer();
  await hub.addRepo({ id: 'acme/chat', files: [{ path: 'config.json', data: '{"chat": true}\n' }] });
  await hub.addRepo({ id: 'acme/evals', type: 'dataset', files: [{ path: 'data/test.jsonl', data: '{"q": 1}\n' }] });
  const keys = join(dir, 'keys');
  assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'Ops <ops@example.org>', '--out-dir', keys])).code, 0);
  pub = join(keys, 'signer.pub.asc');
  bundle = join(dir, 'two.airlock.tar');
  const r = await runAirlock(['export', 'acme/chat', 'datasets/acme/evals', '--sign-key', join(keys, 'signer.key.asc'), '-o', bundle], { env: { HF_ENDPOINT: hub.endpoint } });
  assert.equal(r.code, 0, r.stderr);
});
after(async () => {
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

test('only the chosen repo lands', async () => {
  const cache = join(dir, 'c1');
  const r = await runAirlock(['import', bundle, '--trusted-keys', pub, '--cache-dir', cache, '--repo', 'datasets/acme/evals', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await readdir(cache), ['datasets--acme--evals']);
  assert.deepEqual(JSON.parse(r.stdout).repos.map((x: { id: string }) => x.id), ['acme/evals']);
  const byRev = await runAirlock(['import', bundle, '--trusted-keys', pub, '--cache-dir', cache, '--repo', 'acme/chat@main']);
  assert.equal(byRev.code, 0, byRev.stderr);
  assert.deepEqual((await readdir(cache)).sort(), ['datasets--acme--evals', 'models--acme--chat']);
});

test('damage in a repo that is not imported still refuses the import', async () => {
  const buf = Buffer.from(await readFile(bundle));
  const entry = tarLayout(buf).find((e) => e.name.endsWith('/config.json'))!;
  buf[entry.dataOffset + 2] = buf[entry.dataOffset + 2]! ^ 1;
  const bad = join(dir, 'bad.airlock.tar');
  await writeFile(bad, buf);
  const cache = join(dir, 'c2');
  const r = await runAirlock(['import', bad, '--trusted-keys', pub, '--cache-dir', cache, '--repo', 'datasets/acme/evals']);
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /E_HASH_MISMATCH/);
  assert.equal(await snapshotTree(cache), null, 'the cache was never created');
});

test('a --repo that names nothing in the bundle lists what is there', async () => {
  const r = await runAirlock(['import', bundle, '--trusted-keys', pub, '--cache-dir', join(dir, 'c3'), '--repo', 'acme/other']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--repo acme\/other matches nothing/);
  assert.match(r.stderr, /the bundle holds: .*acme\/chat@main/);
  assert.match(r.stderr, /datasets\/acme\/evals@main/);
});
