/**
 * `airlock cache list | verify | inventory` on a cache holding two revisions of one repo that share
 * blobs — compared with what the real huggingface_hub scan_cache_dir() reports for the same cache —
 * and `cache verify` finding a flipped bit and a dangling link that the scanner itself cannot see.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHubServer, type HubServer, type AddedCommit } from '../support/hub-server.ts';
import { runAirlock } from '../support/cli.ts';
import { runPython } from '../support/python.ts';
import { readPublicKeys, verifyDetachedSignature } from '../../src/signing/verify.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';

let hub: HubServer;
let dir: string;
let cache: string;
let keys: string;
let v1: AddedCommit;
let v2: AddedCommit;
const shared = safetensorsOf(Buffer.alloc(300_000, 1));

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-cache-cmd-'));
  hub = await startHubServer();
  v1 = await hub.addRepo({
    id: 'acme/m',
    tags: ['v1'],
    files: [{ path: 'config.json', data: '{"v": 1}\n' }, { path: 'model-00001-of-00002.safetensors', data: shared }, { path: 'model-00002-of-00002.safetensors', data: safetensorsOf(Buffer.alloc(1000, 2)) }],
  });
  v2 = await hub.addCommit({ id: 'acme/m' }, [
    { path: 'config.json', data: '{"v": 2}\n' },
    { path: 'model-00001-of-00002.safetensors', data: shared },
    { path: 'model-00002-of-00002.safetensors', data: safetensorsOf(Buffer.alloc(1000, 3)) },
  ]);
  keys = join(dir, 'keys');
  assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'Offline Ops <ops@example.org>', '--out-dir', keys])).code, 0);
  const bundle = join(dir, 'm.airlock.tar');
  const exp = await runAirlock(['export', 'acme/m@v1', 'acme/m@main', '--sign-key', join(keys, 'signer.key.asc'), '-o', bundle], { env: { HF_ENDPOINT: hub.endpoint } });
  assert.equal(exp.code, 0, exp.stderr);
  cache = join(dir, 'cache');
  const imp = await runAirlock(['import', bundle, '--trusted-keys', join(keys, 'signer.pub.asc'), '--cache-dir', cache]);
  assert.equal(imp.code, 0, imp.stderr);
});

after(async () => {
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

test('cache list agrees with huggingface_hub scan_cache_dir on repos, revisions, refs, files and sizes', async () => {
  const r = await runAirlock(['cache', 'list', '--cache-dir', cache, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const ours = JSON.parse(r.stdout);
  assert.deepEqual(ours.problems, []);
  const py = await runPython(
    `
import json
from huggingface_hub import scan_cache_dir
info = scan_cache_dir(${JSON.stringify(cache)})
print(json.dumps({"warnings": [str(w) for w in info.warnings], "repos": [{
  "id": r.repo_id, "type": r.repo_type, "size_on_disk": r.size_on_disk,
  "revisions": sorted([{"commit": v.commit_hash, "refs": sorted(v.refs), "nb_files": v.nb_files, "size": v.size_on_disk} for v in r.revisions], key=lambda x: x["commit"])
} for r in info.repos]}))
`,
    { HF_HUB_OFFLINE: '1' },
  );
  assert.equal(py.code, 0, py.stderr);
  const theirs = JSON.parse(py.stdout.trim().split('\n').pop()!);
  assert.deepEqual(theirs.warnings, []);
  assert.equal(ours.repos.length, 1);
  const [repo] = ours.repos;
  const [ref] = theirs.repos;
  assert.equal(repo.id, ref.id);
  assert.equal(repo.type, ref.type);
  assert.equal(repo.sizeOnDisk, ref.size_on_disk);
  assert.deepEqual(
    repo.revisions.map((v: { commit: string; refs: string[]; files: unknown[]; size: number }) => ({ commit: v.commit, refs: v.refs, nb_files: v.files.length, size: v.size })),
    ref.revisions,
  );
  assert.deepEqual(new Set(repo.revisions.map((v: { commit: string }) => v.commit)), new Set([v1.commit, v2.commit]));
  assert.equal(repo.blobs.length, 5, 'the shared shard is stored once');
  const human = await runAirlock(['cache', 'list', '--cache-dir', cache]);
  assert.match(human.stdout, /model acme\/m/);
  assert.match(human.stdout, /\(v1\)/);
});

test('cache inventory lists every repo, commit and blob, and can be signed', async () => {
  const have = join(dir, 'have.json');
  const r = await runAirlock(['cache', 'inventory', '--cache-dir', cache, '--out', have, '--sign-key', join(keys, 'signer.key.asc')]);
  assert.equal(r.code, 0, r.stderr);
  const bytes = await readFile(have);
  const inventory = JSON.parse(bytes.toString('utf8'));
  assert.equal(inventory.format, 'model-airlock-inventory');
  const [repo] = inventory.repos;
  assert.deepEqual(repo.revisions.map((v: { commit: string }) => v.commit).sort(), [v1.commit, v2.commit].sort());
  const etags = new Set([...v1.files, ...v2.files].map((f) => f.etag));
  assert.deepEqual(new Set(repo.blobs.map((b: { etag: string }) => b.etag)), etags);
  const trusted = await readPublicKeys(await readFile(join(keys, 'signer.pub.asc')), 'signer.pub.asc');
  const signers = await verifyDetachedSignature(bytes, await readFile(`${have}.asc`, 'utf8'), trusted);
  assert.equal(signers[0]!.userIds[0], 'Offline Ops <ops@example.org>');
});

test('cache verify passes a clean cache, then finds a flipped bit and a dangling link', async () => {
  const clean = await runAirlock(['cache', 'verify', '--cache-dir', cache, '--json']);
  assert.equal(clean.code, 0, clean.stderr);
  assert.equal(JSON.parse(clean.stdout).blobsChecked, 5);

  const target = v1.files.find((f) => f.path === 'model-00001-of-00002.safetensors')!;
  const blob = join(cache, 'models--acme--m', 'blobs', target.etag);
  const data = await readFile(blob);
  data[12345] = data[12345]! ^ 0x10;
  await writeFile(blob, data);
  const gone = v2.files.find((f) => f.path === 'config.json')!;
  await unlink(join(cache, 'models--acme--m', 'blobs', gone.etag));

  const r = await runAirlock(['cache', 'verify', '--cache-dir', cache, '--json']);
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /E_CACHE_CORRUPT/);
  const result = JSON.parse(r.stdout);
  assert.equal(result.ok, false);
  const report = result.error.details;
  const kinds = report.problems.map((p: { kind: string; path: string }) => `${p.kind} ${p.path}`);
  assert.ok(kinds.includes(`corrupted-blob models--acme--m/blobs/${target.etag}`), kinds.join('\n'));
  assert.ok(kinds.some((k: string) => k.startsWith('dangling-link') && k.endsWith(`snapshots/${v2.commit}/config.json`)), kinds.join('\n'));
});
