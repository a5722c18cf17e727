/**
 * `airlock pull` does not download a file the cache already holds intact (a warm re-pull, a revision
 * sharing shards) — but such a file must pass the same checks as one that was downloaded, exactly as
 * `airlock import` checks every entry of a bundle whether or not the cache already holds it: the
 * safetensors header check (--no-weight-check) and the content analysis of what loading it would run
 * (--allow-unsafe-pickle, issue 17). A pull that once let a file in under a flag does not let it in
 * again without that flag, and the verdicts of present files reach --json and the evidence record
 * `airlock serve` shows. A file replaced in the cache by other bytes of the same size is fetched again.
 *
 * Real parts: the test hub, `airlock export`, `airlock publish` into Debian's docker-registry, the CLI.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHubServer, type HubServer } from '../support/hub-server.ts';
import { runAirlock } from '../support/cli.ts';
import { sampleModelFiles } from '../support/sample-model.ts';
import { snapshotTree, stagingLeftovers } from '../support/cache-snapshot.ts';
import { startRegistry, type TestRegistry } from '../support/registry.ts';

let hub: HubServer;
let registry: TestRegistry;
let dir: string;
let keys: string;

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const pub = (): string => join(keys, 'signer.pub.asc');
const weights = (): Buffer => sampleModelFiles().find((f) => f.path === 'model.safetensors')!.data;

async function exportBundle(id: string, out: string, extra: string[] = []): Promise<void> {
  const r = await runAirlock(['export', id, '--sign-key', join(keys, 'signer.key.asc'), '-o', out, ...extra], { env: { HF_ENDPOINT: hub.endpoint } });
  assert.equal(r.code, 0, r.stderr);
}

async function publish(bundle: string, extra: string[] = []): Promise<void> {
  const r = await runAirlock(['publish', bundle, '--to', `oci://${registry.host}/models`, '--trusted-keys', pub(), '--plain-http', ...extra]);
  assert.equal(r.code, 0, r.stderr);
}

function pull(id: string, cache: string, extra: string[] = []) {
  return runAirlock(['pull', `oci://${registry.host}/models/${id}:main`, '--trusted-keys', pub(), '--plain-http', '--cache-dir', cache, '--json', ...extra]);
}

function importBundle(bundle: string, cache: string, extra: string[] = []) {
  return runAirlock(['import', bundle, '--trusted-keys', pub(), '--cache-dir', cache, '--json', ...extra]);
}

async function copyCache(from: string, name: string): Promise<string> {
  const to = join(dir, name);
  await cp(from, to, { recursive: true, verbatimSymlinks: true });
  return to;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-oci-present-'));
  hub = await startHubServer();
  keys = join(dir, 'keys');
  assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'ML Platform <mlops@example.org>', '--out-dir', keys])).code, 0);
  registry = await startRegistry();
});

after(async () => {
  await registry?.close();
  await hub?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('a file the cache already holds passes the same checks as a downloaded one', () => {
  test('safetensors: a warm re-pull checks the header of the present weights; --no-weight-check once does not let them in for good', async () => {
    // signed as it is (exported with --no-weight-check): the header names more tensor bytes than the file has
    const truncated = weights().subarray(0, weights().length - 512);
    await hub.addRepo({ id: 'acme/truncated', files: [{ path: 'config.json', data: Buffer.from('{"model_type": "llama"}\n') }, { path: 'model.safetensors', data: truncated }] });
    const bundle = join(dir, 'truncated.airlock.tar');
    await exportBundle('acme/truncated', bundle, ['--no-weight-check']);
    await publish(bundle);

    const cache = join(dir, 'truncated-cache');
    const cold = await pull('acme/truncated', cache);
    assert.equal(cold.code, 3, cold.stderr);
    assert.equal(JSON.parse(cold.stdout).error.code, 'E_WEIGHTS_INVALID');
    const allowed = await pull('acme/truncated', cache, ['--no-weight-check']);
    assert.equal(allowed.code, 0, allowed.stderr);

    // the weights are now in the cache, intact (their signed sha256): a re-pull downloads nothing …
    const before = await snapshotTree(cache, { mtimes: true });
    const importCopy = await copyCache(cache, 'truncated-cache-import');
    const warm = await pull('acme/truncated', cache);
    // … and still refuses them, naming the file, exactly like an import of the same bundle into that cache
    assert.equal(warm.code, 3, warm.stderr);
    const error = JSON.parse(warm.stdout).error;
    assert.equal(error.code, 'E_WEIGHTS_INVALID');
    assert.match(error.message, /model\.safetensors/);
    assert.deepEqual(await snapshotTree(cache, { mtimes: true }), before, 'the cache is left as it was');
    assert.deepEqual(await stagingLeftovers(cache), []);
    const imported = await importBundle(bundle, importCopy);
    assert.equal(imported.code, 3, imported.stderr);
    assert.equal(JSON.parse(imported.stdout).error.code, 'E_WEIGHTS_INVALID');

    const again = await pull('acme/truncated', cache, ['--no-weight-check']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).bytesDownloaded, 0);
  });

  test('content: a warm re-pull judges a present pickle again; its verdict reaches --json and the evidence record', async () => {
    // protocol 2: GLOBAL os.system, the argument "true", REDUCE — what pickle.loads would run
    const evil = Buffer.from('\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.', 'latin1');
    const model = await hub.addRepo({ id: 'acme/pickled', files: [{ path: 'config.json', data: Buffer.from('{}\n') }, { path: 'model.pkl', data: evil }] });
    const bundle = join(dir, 'pickled.airlock.tar');
    await exportBundle('acme/pickled', bundle);
    await publish(bundle, ['--allow-unsafe-pickle']);

    const cache = join(dir, 'pickled-cache');
    const first = await pull('acme/pickled', cache, ['--allow-unsafe-pickle']);
    assert.equal(first.code, 0, first.stderr);
    const before = await snapshotTree(cache, { mtimes: true });
    const importCopy = await copyCache(cache, 'pickled-cache-import');

    // the allowance of the first pull does not carry over to the next one
    const warm = await pull('acme/pickled', cache);
    assert.equal(warm.code, 3, warm.stderr);
    const error = JSON.parse(warm.stdout).error;
    assert.equal(error.code, 'E_UNSAFE_CONTENT');
    assert.match(error.message, /model\.pkl[\s\S]*os\.system/);
    assert.deepEqual(await snapshotTree(cache, { mtimes: true }), before, 'the cache is left as it was');
    const imported = await importBundle(bundle, importCopy);
    assert.equal(imported.code, 3, imported.stderr);
    assert.equal(JSON.parse(imported.stdout).error.code, 'E_UNSAFE_CONTENT');

    // allowed again: nothing downloaded, and every present file still has its verdict
    const again = await pull('acme/pickled', cache, ['--allow-unsafe-pickle']);
    assert.equal(again.code, 0, again.stderr);
    const result = JSON.parse(again.stdout);
    assert.equal(result.bytesDownloaded, 0);
    assert.equal(result.filesPresent, 2);
    const pkl = result.content.files.find((f: { path: string }) => f.path === 'model.pkl');
    assert.equal(pkl?.verdict, 'unsafe', JSON.stringify(result.content));
    assert.ok(pkl.unsafeGlobals.includes('os.system'));
    // the evidence record `airlock serve` answers from was rewritten by this pull: it keeps the verdict
    const record = JSON.parse(await readFile(join(`${cache}.airlock`, 'evidence', 'hf', 'models--acme--pickled', `${model.commit}.json`), 'utf8'));
    assert.equal(record.files.find((f: { path: string }) => f.path === 'model.pkl')?.content?.verdict, 'unsafe', JSON.stringify(record.files));
  });

  test('a present file replaced by other bytes of the same size is fetched again, not trusted', async () => {
    const model = await hub.addRepo({ id: 'acme/tiny-llm', files: sampleModelFiles() });
    const bundle = join(dir, 'tiny.airlock.tar');
    await exportBundle('acme/tiny-llm', bundle);
    await publish(bundle);
    const cache = join(dir, 'tiny-cache');
    assert.equal((await pull('acme/tiny-llm', cache)).code, 0);
    // same size, same header, other tensor bytes: what a bad disk or a careless copy leaves behind
    const blob = join(cache, 'models--acme--tiny-llm', 'blobs', sha(weights()));
    const other = Buffer.from(weights());
    other[other.length - 1] = other.at(-1)! ^ 0xff;
    await writeFile(blob, other);
    const r = await pull('acme/tiny-llm', cache);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.bytesDownloaded, weights().length);
    assert.equal(result.filesPresent, sampleModelFiles().length - 1);
    assert.equal(sha(await readFile(join(cache, 'models--acme--tiny-llm', 'snapshots', model.commit, 'model.safetensors'))), sha(weights()));
  });
});
