/**
 * The core round trip through the real CLI, as a user runs it: keys generate → export from the test
 * hub → verify → import into an HF cache; the bundle checked with standard tools alone (GNU tar,
 * gpg --verify, sha256sum -c); every tampering rejected with its code and the cache left untouched.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readlink, readdir, writeFile, mkdir, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHubServer, type HubServer, type AddedCommit } from '../support/hub-server.ts';
import { runAirlock, run } from '../support/cli.ts';
import { sampleModelFiles } from '../support/sample-model.ts';
import { snapshotTree } from '../support/cache-snapshot.ts';
import { tarLayout } from '../support/tar-layout.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';

const TOKEN = 'hf_testtoken0123456789abcdefghijklmn';
let hub: HubServer;
let dir: string;
let added: AddedCommit;
let bundle: string;
let keys: string;
let otherKeys: string;

function env(extra: Record<string, string> = {}) {
  return { HF_ENDPOINT: hub.endpoint, ...extra };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-rt-'));
  hub = await startHubServer({ tokens: [TOKEN], pageSize: 3 });
  added = await hub.addRepo({
    id: 'acme/tiny-llm',
    files: [...sampleModelFiles(), { path: 'docs/a very/long nested/' + 'x'.repeat(120) + '/notes é.txt', data: 'nested, long and non-ASCII\n' }],
    tags: ['v1.0'],
  });
  keys = join(dir, 'keys');
  otherKeys = join(dir, 'other-keys');
  for (const [out, uid] of [[keys, 'ML Platform <mlops@example.org>'], [otherKeys, 'Mallory <m@example.org>']] as const) {
    const r = await runAirlock(['keys', 'generate', '--user-id', uid, '--out-dir', out]);
    assert.equal(r.code, 0, r.stderr);
  }
  bundle = join(dir, 'tiny-llm.airlock.tar');
  const r = await runAirlock(['export', 'acme/tiny-llm', '--revision', 'main', '--sign-key', join(keys, 'signer.key.asc'), '-o', bundle], { env: env() });
  assert.equal(r.code, 0, r.stderr);
});

after(async () => {
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('keys generate', () => {
  test('writes a 0600 private key and a public key, prints the fingerprint', async () => {
    const { stat } = await import('node:fs/promises');
    assert.equal((await stat(join(keys, 'signer.key.asc'))).mode & 0o777, 0o600);
    assert.match(await readFile(join(keys, 'signer.pub.asc'), 'utf8'), /BEGIN PGP PUBLIC KEY BLOCK/);
    const again = await runAirlock(['keys', 'generate', '--user-id', 'X <x@example.org>', '--out-dir', keys]);
    assert.equal(again.code, 2, 'never overwrites a key');
    assert.match(again.stderr, /already exists/);
  });
});

describe('passphrase-protected signing keys', () => {
  test('export needs the right passphrase file, and says so before downloading anything', async () => {
    const pkeys = join(dir, 'protected');
    const pass = join(dir, 'pass.txt');
    const wrong = join(dir, 'wrong.txt');
    await writeFile(pass, 'correct horse battery staple\n');
    await writeFile(wrong, 'nope\n');
    const gen = await runAirlock(['keys', 'generate', '--user-id', 'Protected <p@example.org>', '--out-dir', pkeys, '--passphrase-file', pass]);
    assert.equal(gen.code, 0, gen.stderr);
    assert.match(await readFile(join(pkeys, 'signer.key.asc'), 'utf8'), /BEGIN PGP PRIVATE KEY BLOCK/);
    const out = join(dir, 'protected.airlock.tar');
    const start = hub.requests.length;
    const missing = await runAirlock(['export', 'acme/tiny-llm', '--sign-key', join(pkeys, 'signer.key.asc'), '-o', out], { env: env() });
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /E_KEY_INVALID[\s\S]*|passphrase/);
    assert.match(missing.stderr, /--passphrase-file/);
    const bad = await runAirlock(['export', 'acme/tiny-llm', '--sign-key', join(pkeys, 'signer.key.asc'), '--passphrase-file', wrong, '-o', out], { env: env() });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /wrong passphrase/);
    assert.equal(hub.requests.length, start, 'no request was made with an unusable key');
    const ok = await runAirlock(['export', 'acme/tiny-llm', '--sign-key', join(pkeys, 'signer.key.asc'), '--passphrase-file', pass, '-o', out], { env: env() });
    assert.equal(ok.code, 0, ok.stderr);
    const v = await runAirlock(['verify', out, '--trusted-keys', join(pkeys, 'signer.pub.asc')]);
    assert.equal(v.code, 0, v.stderr);
  });
});

describe('the bundle', () => {
  test('starts with SHA256SUMS, SHA256SUMS.asc, manifest.json, then sorted payload files only', async () => {
    const layout = tarLayout(await readFile(bundle));
    assert.deepEqual(layout.slice(0, 3).map((e) => e.name), ['SHA256SUMS', 'SHA256SUMS.asc', 'manifest.json']);
    const payload = layout.slice(3).map((e) => e.name);
    assert.equal(payload.length, added.files.length);
    assert.deepEqual(payload, [...payload].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    for (const e of layout) assert.equal(e.type, '0', `${e.name} is a regular file entry`);
    assert.ok(payload.every((n) => n.startsWith(`payload/models/acme/tiny-llm/${added.commit}/`)));
  });

  test('GNU tar lists it cleanly, and gpg --verify and sha256sum -c pass on the extracted files', async () => {
    const list = await run('tar', ['-tvf', bundle]);
    assert.equal(list.code, 0, list.stderr);
    assert.equal(list.stderr, '', 'tar prints no warnings');
    assert.match(list.stdout, /notes é\.txt/);
    const out = join(dir, 'extracted');
    await mkdir(out);
    assert.equal((await run('tar', ['-xf', bundle, '-C', out])).code, 0);
    const sums = await run('sha256sum', ['--strict', '-c', 'SHA256SUMS'], { cwd: out });
    assert.equal(sums.code, 0, sums.stdout + sums.stderr);
    assert.equal(sums.stdout.trim().split('\n').length, added.files.length + 1);
    const gnupghome = await mkdtemp(join(tmpdir(), 'airlock-gpg-'));
    const gpgEnv = { GNUPGHOME: gnupghome };
    assert.equal((await run('gpg', ['--batch', '--import', join(keys, 'signer.pub.asc')], { env: gpgEnv })).code, 0);
    const verify = await run('gpg', ['--batch', '--status-fd', '1', '--verify', 'SHA256SUMS.asc', 'SHA256SUMS'], { cwd: out, env: gpgEnv });
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stdout, /\[GNUPG:\] GOODSIG/);
    await rm(gnupghome, { recursive: true, force: true });
  });

  test('the manifest records provenance: source, requested revision, pinned commit, per-file hashes and etags', async () => {
    const r = await runAirlock(['inspect', bundle, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.signatureChecked, false);
    const repo = result.manifest.repos[0];
    assert.equal(repo.id, 'acme/tiny-llm');
    assert.equal(repo.revision, 'main');
    assert.equal(repo.commit, added.commit);
    assert.deepEqual(repo.source, { kind: 'huggingface', endpoint: hub.endpoint });
    for (const f of added.files) {
      const m = repo.files.find((x: { path: string }) => x.path === f.path);
      assert.ok(m, f.path);
      assert.equal(m.sha256, f.sha256);
      assert.equal(m.etag, f.etag);
      assert.equal(m.lfs, f.lfs);
      assert.equal(m.size, f.size);
    }
  });

  test('is deterministic: exporting the same snapshot again gives identical payload bytes', async () => {
    const second = join(dir, 'again.airlock.tar');
    const r = await runAirlock(['export', `acme/tiny-llm@${added.commit}`, '--sign-key', join(keys, 'signer.key.asc'), '-o', second], { env: env() });
    assert.equal(r.code, 0, r.stderr);
    const a = await readFile(bundle);
    const b = await readFile(second);
    const start = (buf: Buffer) => tarLayout(buf)[3]!.headerOffset;
    assert.ok(a.subarray(start(a)).equals(b.subarray(start(b))), 'payload region is byte-identical');
  });
});

describe('verify and import', () => {
  test('verify names the signer, repos, files and bytes, and writes nothing', async () => {
    const r = await runAirlock(['verify', bundle, '--trusted-keys', join(keys, 'signer.pub.asc'), '--json']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.equal(result.signers[0].userIds[0], 'ML Platform <mlops@example.org>');
    assert.equal(result.files, added.files.length);
    assert.equal(result.bytes, added.files.reduce((n, f) => n + f.size, 0));
    const human = await runAirlock(['verify', bundle, '--trusted-keys', join(keys, 'signer.pub.asc')]);
    assert.equal(human.code, 0);
    assert.match(human.stdout, /signature: good, by [0-9A-F ]+ ML Platform/);
  });

  test('import writes the exact HF cache layout; re-import is a no-op', async () => {
    const cache = join(dir, 'cache-ok');
    const r = await runAirlock(['import', bundle, '--trusted-keys', join(keys, 'signer.pub.asc')], { env: { HF_HUB_CACHE: cache } });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await readdir(cache), ['models--acme--tiny-llm']);
    const repoDir = join(cache, 'models--acme--tiny-llm');
    assert.equal(await readFile(join(repoDir, 'refs', 'main'), 'utf8'), added.commit);
    for (const f of added.files) {
      const link = join(repoDir, 'snapshots', added.commit, f.path);
      const depth = f.path.split('/').length - 1;
      assert.equal(await readlink(link), `${'../'.repeat(2 + depth)}blobs/${f.etag}`);
      assert.equal((await readFile(link)).length, f.size);
    }
    const before = await snapshotTree(cache);
    const again = await runAirlock(['import', bundle, '--trusted-keys', join(keys, 'signer.pub.asc'), '--cache-dir', cache, '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).repos[0].filesWritten, 0);
    assert.deepEqual(await snapshotTree(cache), before);
  });
});

describe('tampering is rejected and the cache is left exactly as it was', () => {
  let cache: string;
  before(async () => {
    // a cache that already holds another repo: it must survive every failed import untouched
    cache = join(dir, 'cache-guarded');
    const other = await hub.addRepo({ id: 'acme/other', files: [{ path: 'config.json', data: '{"other": true}\n' }] });
    assert.ok(other.commit);
    const otherBundle = join(dir, 'other.airlock.tar');
    assert.equal((await runAirlock(['export', 'acme/other', '--sign-key', join(keys, 'signer.key.asc'), '-o', otherBundle], { env: env() })).code, 0);
    assert.equal((await runAirlock(['import', otherBundle, '--trusted-keys', join(keys, 'signer.pub.asc'), '--cache-dir', cache])).code, 0);
  });

  async function flipped(where: (entries: ReturnType<typeof tarLayout>) => number, name: string): Promise<string> {
    const buf = Buffer.from(await readFile(bundle));
    const offset = where(tarLayout(buf));
    buf[offset] = buf[offset]! ^ 0x01;
    const path = join(dir, `${name}.airlock.tar`);
    await writeFile(path, buf);
    return path;
  }
  const entry = (name: string) => (es: ReturnType<typeof tarLayout>) => {
    const e = es.find((x) => x.name === name || x.name.endsWith(`/${name}`));
    assert.ok(e, name);
    return e.dataOffset + Math.floor(e.size / 2);
  };

  const cases: Array<[string, () => Promise<string>, number, RegExp]> = [
    ['a payload byte', () => flipped(entry('model.safetensors'), 'flip-payload'), 3, /E_HASH_MISMATCH/],
    ['a manifest byte', () => flipped(entry('manifest.json'), 'flip-manifest'), 3, /E_(HASH_MISMATCH|MANIFEST_INVALID)/],
    ['a SHA256SUMS byte', () => flipped(entry('SHA256SUMS'), 'flip-sums'), 3, /E_SIGNATURE_INVALID|E_SUMS_INVALID/],
    ['a signature byte', () => flipped(entry('SHA256SUMS.asc'), 'flip-sig'), 3, /E_SIGNATURE_(INVALID|UNTRUSTED)/],
  ];
  for (const [what, make, code, pattern] of cases) {
    test(`flipped ${what}`, async () => {
      const path = await make();
      const before = await snapshotTree(cache);
      const r = await runAirlock(['import', path, '--trusted-keys', join(keys, 'signer.pub.asc'), '--cache-dir', cache]);
      assert.equal(r.code, code, r.stderr);
      assert.match(r.stderr, pattern);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      assert.deepEqual(await snapshotTree(cache), before);
      const v = await runAirlock(['verify', path, '--trusted-keys', join(keys, 'signer.pub.asc')]);
      assert.equal(v.code, code);
    });
  }

  test('a bundle signed by a key that is not trusted', async () => {
    const before = await snapshotTree(cache);
    const r = await runAirlock(['import', bundle, '--trusted-keys', join(otherKeys, 'signer.pub.asc'), '--cache-dir', cache]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /E_SIGNATURE_UNTRUSTED/);
    assert.match(r.stderr, /not among the trusted keys/);
    assert.deepEqual(await snapshotTree(cache), before);
  });

  test('without trusted keys nothing is imported', async () => {
    const r = await runAirlock(['import', bundle, '--cache-dir', cache]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--trusted-keys/);
  });
});

describe('export refuses and explains', () => {
  test('no unsigned bundle unless --unsigned is explicit', async () => {
    const out = join(dir, 'unsigned.airlock.tar');
    const r = await runAirlock(['export', 'acme/tiny-llm', '-o', out], { env: env() });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /refusing to write an unsigned bundle/);
    assert.equal(existsSync(out), false);
    const ok = await runAirlock(['export', 'acme/tiny-llm', '--unsigned', '-o', out], { env: env() });
    assert.equal(ok.code, 0, ok.stderr);
    const imp = await runAirlock(['verify', out, '--trusted-keys', join(keys, 'signer.pub.asc')]);
    assert.equal(imp.code, 3);
    assert.match(imp.stderr, /E_UNSIGNED/);
  });

  test('hub errors become clear messages with the right exit code', async () => {
    const missing = await runAirlock(['export', 'acme/nope', '--unsigned', '-o', join(dir, 'x.tar')], { env: env() });
    assert.equal(missing.code, 4);
    assert.match(missing.stderr, /E_REPO_NOT_FOUND/);
    assert.match(missing.stderr, /acme\/nope/);
    const rev = await runAirlock(['export', 'acme/tiny-llm', '--revision', 'no-such-branch', '--unsigned', '-o', join(dir, 'x.tar')], { env: env() });
    assert.equal(rev.code, 4);
    assert.match(rev.stderr, /E_REVISION_NOT_FOUND/);
  });

  test('a private repo: the token is used for the hub, never sent to the CDN host, never printed or stored', async () => {
    await hub.addRepo({ id: 'acme/secret', private: true, files: [{ path: 'config.json', data: '{}\n' }, { path: 'model.safetensors', data: safetensorsOf(Buffer.alloc(4096, 7)) }] });
    const out = join(dir, 'secret.airlock.tar');
    const denied = await runAirlock(['export', 'acme/secret', '--unsigned', '-o', out], { env: env() });
    assert.equal(denied.code, 4);
    assert.match(denied.stderr, /token/i, 'hints at a token');
    const start = hub.requests.length;
    const r = await runAirlock(['export', 'acme/secret', '--unsigned', '-o', out, '--json'], { env: env({ HF_TOKEN: TOKEN }) });
    assert.equal(r.code, 0, r.stderr);
    const requests = hub.requests.slice(start);
    assert.ok(requests.some((q) => q.host === '127.0.0.2'), 'the LFS file came from the CDN host');
    for (const q of requests) {
      if (q.host === '127.0.0.2') assert.equal(q.authorization, undefined, `no token to ${q.url}`);
      else assert.equal(q.authorization, `Bearer ${TOKEN}`);
    }
    assert.ok(!(r.stdout + r.stderr).includes(TOKEN));
    assert.ok(!(await readFile(out)).includes(Buffer.from(TOKEN)));
  });
});
