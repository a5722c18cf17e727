/**
 * Removable media through the CLI: `export --split-size` writes volumes that `cat` joins into the
 * single tar; verify and import read them in place from the first part, a shell glob or the folder;
 * a damaged, missing or swapped part, or an index signed by someone else, is refused naming it, with
 * the cache untouched and no part ever modified; without the index's signature the parts are verified
 * as one stream (test/e2e/matrix.test.ts covers the index-less path in full). Also: `export --gpg-sign` through the system gpg.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { startHubServer, type HubServer, type AddedCommit } from '../support/hub-server.ts';
import { run, runAirlock } from '../support/cli.ts';
import { sampleModelFiles } from '../support/sample-model.ts';
import { snapshotTree } from '../support/cache-snapshot.ts';

let hub: HubServer;
let dir: string;
let keys: string;
let added: AddedCommit;
let media: string;
let parts: string[];

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const pub = () => join(keys, 'signer.pub.asc');

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-split-'));
  hub = await startHubServer();
  // 8.5 MiB of weights: split at the 1 MiB minimum (issue 14), the bundle makes 9 parts
  added = await hub.addRepo({ id: 'acme/tiny-llm', files: [...sampleModelFiles(), { path: 'extra.bin', data: randomBytes(8 * 1024 * 1024 + 500_000) }] });
  keys = join(dir, 'keys');
  assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'Media Ops <media@example.org>', '--out-dir', keys])).code, 0);
  media = join(dir, 'usb');
  await mkdir(media);
  // 1 MiB, the smallest split size allowed (test/unit/parts.test.ts cuts inside tar headers too)
  const r = await runAirlock(['export', 'acme/tiny-llm', '--sign-key', join(keys, 'signer.key.asc'), '--split-size', '1MiB', '-o', join(media, 'tiny.airlock.tar')], {
    env: { HF_ENDPOINT: hub.endpoint },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /volumes tiny\.airlock\.tar\.000/);
  parts = (await readdir(media)).filter((n) => /\.tar\.\d{3}$/.test(n)).sort();
  assert.ok(parts.length >= 8, `${parts.length} parts`);
});

after(async () => {
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('split volumes', () => {
  test('every part is at most the split size; cat joins them into the single tar that GNU tar lists', async () => {
    const names = await readdir(media);
    assert.ok(names.includes('tiny.airlock.parts.json') && names.includes('tiny.airlock.parts.json.asc'));
    const datas = await Promise.all(parts.map((p) => readFile(join(media, p))));
    assert.ok(datas.every((d) => d.length <= 1024 * 1024));
    const joined = join(dir, 'joined.tar');
    const cat = await run('sh', ['-c', `cat tiny.airlock.tar.* > '${joined}'`], { cwd: media });
    assert.equal(cat.code, 0, cat.stderr);
    const index = JSON.parse(await readFile(join(media, 'tiny.airlock.parts.json'), 'utf8'));
    assert.equal(sha(await readFile(joined)), index.sha256);
    const list = await run('tar', ['-tf', joined]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^SHA256SUMS\nSHA256SUMS\.asc\nmanifest\.json\n/);
    const joinedVerify = await runAirlock(['verify', joined, '--trusted-keys', pub(), '--quiet']);
    assert.equal(joinedVerify.code, 0, joinedVerify.stderr);
  });

  test('verify reads them in place from the first part, the glob, or the folder', async () => {
    for (const args of [[join(media, parts[0]!)], parts.map((p) => join(media, p)).reverse(), [media], [join(media, 'tiny.airlock.tar')]]) {
      const r = await runAirlock(['verify', ...args, '--trusted-keys', pub(), '--json']);
      assert.equal(r.code, 0, `${args[0]}: ${r.stderr}`);
      assert.equal(JSON.parse(r.stdout).files, added.files.length);
    }
  });

  test('import from the first part gives the same cache as from the joined tar', async () => {
    const fromParts = join(dir, 'cache-parts');
    const fromJoined = join(dir, 'cache-joined');
    assert.equal((await runAirlock(['import', join(media, parts[0]!), '--trusted-keys', pub(), '--cache-dir', fromParts])).code, 0);
    assert.equal((await runAirlock(['import', join(dir, 'joined.tar'), '--trusted-keys', pub(), '--cache-dir', fromJoined])).code, 0);
    assert.deepEqual(await snapshotTree(fromParts), await snapshotTree(fromJoined));
    assert.equal(await readFile(join(fromParts, 'models--acme--tiny-llm', 'refs', 'main'), 'utf8'), added.commit);
  });

  describe('damaged media is named precisely, parts are never modified, the cache is untouched', () => {
    let cache: string;
    before(async () => {
      cache = join(dir, 'guarded');
      await mkdir(cache);
    });
    async function copyMedia(name: string): Promise<string> {
      const d = join(dir, name);
      await mkdir(d);
      for (const n of await readdir(media)) await copyFile(join(media, n), join(d, n));
      return d;
    }
    async function refused(d: string, code: RegExp, names: RegExp) {
      const before = await snapshotTree(cache);
      const partsBefore = await snapshotTree(d);
      const r = await runAirlock(['import', join(d, parts[0]!), '--trusted-keys', pub(), '--cache-dir', cache]);
      assert.equal(r.code, 3, r.stderr);
      assert.match(r.stderr, code);
      assert.match(r.stderr, names);
      assert.deepEqual(await snapshotTree(cache), before);
      assert.deepEqual(await snapshotTree(d), partsBefore, 'parts untouched');
    }

    test('one byte flipped in part 4', async () => {
      const d = await copyMedia('flip');
      const p = join(d, parts[4]!);
      const data = await readFile(p);
      data[1234] = data[1234]! ^ 0x20;
      await writeFile(p, data);
      await refused(d, /E_HASH_MISMATCH/, /tiny\.airlock\.tar\.004/);
    });
    test('a part missing', async () => {
      const d = await copyMedia('missing');
      await rm(join(d, parts[2]!));
      await refused(d, /E_MISSING_ENTRY/, /tiny\.airlock\.tar\.002 is missing/);
    });
    test('a part cut short', async () => {
      const d = await copyMedia('short');
      const p = join(d, parts[1]!);
      await writeFile(p, (await readFile(p)).subarray(0, 1000));
      await refused(d, /E_SIZE_MISMATCH/, /tiny\.airlock\.tar\.001 is 1000 bytes/);
    });
    test('two parts swapped', async () => {
      const d = await copyMedia('swapped');
      await rename(join(d, parts[1]!), join(d, 'tmp'));
      await rename(join(d, parts[2]!), join(d, parts[1]!));
      await rename(join(d, 'tmp'), join(d, parts[2]!));
      await refused(d, /E_HASH_MISMATCH/, /holds the content of tiny\.airlock\.tar\.002/);
    });
    test('an index re-signed by an untrusted key', async () => {
      const d = await copyMedia('mallory');
      const mallory = join(dir, 'mallory');
      assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'Mallory <m@example.org>', '--out-dir', mallory])).code, 0);
      const gnupg = join(dir, 'mallory-gnupg');
      await mkdir(gnupg);
      await chmod(gnupg, 0o700);
      assert.equal((await run('gpg', ['--homedir', gnupg, '--batch', '--import', join(mallory, 'signer.key.asc')])).code, 0);
      await rm(join(d, 'tiny.airlock.parts.json.asc'));
      const sign = await run('gpg', ['--homedir', gnupg, '--batch', '--armor', '--detach-sign', '--output', join(d, 'tiny.airlock.parts.json.asc'), join(d, 'tiny.airlock.parts.json')]);
      assert.equal(sign.code, 0, sign.stderr);
      await run('gpgconf', ['--homedir', gnupg, '--kill', 'gpg-agent']);
      await refused(d, /E_SIGNATURE_UNTRUSTED/, /parts\.json\.asc/);
    });
    test('the index signature missing: the index is not used, the parts verify as one stream (issue 13)', async () => {
      const d = await copyMedia('nosig');
      await rm(join(d, 'tiny.airlock.parts.json.asc'));
      const partsBefore = await snapshotTree(d);
      const r = await runAirlock(['verify', join(d, parts[0]!), '--trusted-keys', pub()]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /tiny\.airlock\.parts\.json has no signature and was not used/);
      assert.deepEqual(await snapshotTree(d), partsBefore, 'parts untouched');
    });
  });
});

describe('export --gpg-sign', () => {
  test('signs through the system gpg; the bundle verifies in airlock and with gpg', async () => {
    const gnupg = join(dir, 'gnupg');
    await mkdir(gnupg);
    await chmod(gnupg, 0o700);
    const gen = await run('gpg', ['--homedir', gnupg, '--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--quick-gen-key', 'Agent Signer <agent@example.org>', 'ed25519', 'sign', 'never']);
    assert.equal(gen.code, 0, gen.stderr);
    const pubFile = join(dir, 'agent.pub.asc');
    assert.equal((await run('gpg', ['--homedir', gnupg, '--batch', '--armor', '--output', pubFile, '--export', 'agent@example.org'])).code, 0);
    const out = join(dir, 'gpg-signed.airlock.tar');
    const r = await runAirlock(['export', 'acme/tiny-llm', '--gpg-sign', 'agent@example.org', '--gpg-homedir', gnupg, '-o', out], { env: { HF_ENDPOINT: hub.endpoint } });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /signed by .*Agent Signer/);
    const v = await runAirlock(['verify', out, '--trusted-keys', pubFile, '--json']);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(JSON.parse(v.stdout).signers[0].userIds[0], 'Agent Signer <agent@example.org>');
    const both = await runAirlock(['export', 'acme/tiny-llm', '--gpg-sign', 'x', '--sign-key', join(keys, 'signer.key.asc'), '-o', join(dir, 'no.tar')], { env: { HF_ENDPOINT: hub.endpoint } });
    assert.equal(both.code, 2);
    await run('gpgconf', ['--homedir', gnupg, '--kill', 'gpg-agent']);
  });
});
