/**
 * `airlock resign`: replace or add a signature without rewriting the payload (byte-identical), only
 * after the existing signature verified under the caller's trust (or with --force, hashes only), and
 * never leaving a half-written file: a refused resign leaves the bundle exactly as it was.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runAirlock } from '../support/cli.ts';
import { buildBundle, entryName, makeTestKey, tamper, writeBundleFile, type BuilderRepo, type TestKey } from '../support/bundle-builder.ts';
import { tarLayout } from '../support/tar-layout.ts';
import { verifyBundle } from '../../src/import/index.ts';

let dir: string;
let alice: TestKey;
let bob: TestKey;
const REPO: BuilderRepo = { id: 'acme/tiny', files: [{ path: 'a.txt', data: 'a\n' }, { path: 'big.bin', data: Buffer.alloc(3 * 1024 * 1024 + 17, 9), lfs: true }] };

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-resign-'));
  [alice, bob] = await Promise.all([makeTestKey('Alice <alice@example.org>'), makeTestKey('Bob <bob@example.org>')]);
  await writeFile(join(dir, 'alice.pub.asc'), alice.publicKeyArmored);
  await writeFile(join(dir, 'bob.pub.asc'), bob.publicKeyArmored);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A key pair on disk from `airlock keys generate`, for --sign-key (the builder's keys live in memory). */
async function keyFile(name: string): Promise<{ key: string; pub: string; fingerprint: string }> {
  const r = await runAirlock(['keys', 'generate', '--user-id', `${name} <${name.toLowerCase()}@example.org>`, '--out-dir', join(dir, name)]);
  assert.equal(r.code, 0, r.stderr);
  return { key: join(dir, name, 'signer.key.asc'), pub: join(dir, name, 'signer.pub.asc'), fingerprint: /([0-9A-F]{4}( [0-9A-F]{4}){9})/.exec(r.stdout)![1]!.replace(/ /g, '') };
}

function payloadRegion(buf: Buffer): Buffer {
  return buf.subarray(tarLayout(buf)[3]!.headerOffset);
}

describe('resign', () => {
  test('replace: the new key verifies, the old one no longer does, payload bytes identical, in place', async () => {
    const carol = await keyFile('Carol');
    const bundle = join(dir, 'replace.airlock.tar');
    await writeBundleFile(bundle, { repos: [REPO], signer: alice.signer });
    const before = await readFile(bundle);
    const r = await runAirlock(['resign', bundle, '--sign-key', carol.key, '--trusted-keys', join(dir, 'alice.pub.asc'), '--trusted-fingerprint', alice.fingerprint, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const after = await readFile(bundle);
    assert.ok(payloadRegion(before).equals(payloadRegion(after)), 'payload region byte-identical');
    assert.deepEqual(tarLayout(after).map((e) => e.name).slice(0, 3), ['SHA256SUMS', 'SHA256SUMS.asc', 'manifest.json']);
    assert.equal(JSON.parse(r.stdout).previousSigners[0].fingerprint, alice.fingerprint);
    assert.equal((await runAirlock(['verify', bundle, '--trusted-keys', carol.pub])).code, 0);
    const old = await runAirlock(['verify', bundle, '--trusted-keys', join(dir, 'alice.pub.asc')]);
    assert.equal(old.code, 3);
    assert.match(old.stderr, /E_SIGNATURE_UNTRUSTED/);
    assert.deepEqual((await readdir(dir)).filter((n) => n.endsWith('.tmp')), [], 'no temp file left');
  });

  test('add: two signatures, the two-person rule holds; the same key cannot sign twice', async () => {
    const dave = await keyFile('Dave');
    const bundle = join(dir, 'add.airlock.tar');
    const out = join(dir, 'add2.airlock.tar');
    await writeBundleFile(bundle, { repos: [REPO], signer: alice.signer });
    const r = await runAirlock(['resign', bundle, '--add', '--sign-key', dave.key, '--trusted-keys', join(dir, 'alice.pub.asc'), '-o', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(payloadRegion(await readFile(bundle)).equals(payloadRegion(await readFile(out))));
    const both = await runAirlock(['verify', out, '--trusted-keys', join(dir, 'alice.pub.asc'), '--trusted-keys', dave.pub, '--require-signatures', '2']);
    assert.equal(both.code, 0, both.stderr);
    const one = await runAirlock(['verify', out, '--trusted-keys', dave.pub, '--require-signatures', '2']);
    assert.equal(one.code, 3);
    assert.match(one.stderr, /E_NOT_ENOUGH_SIGNATURES/);
    const again = await runAirlock(['resign', out, '--add', '--sign-key', dave.key, '--trusted-keys', dave.pub]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already carries a signature/);
  });

  test('refuses when the existing signature is not trusted; the bundle is left untouched', async () => {
    const erin = await keyFile('Erin');
    const bundle = join(dir, 'untrusted.airlock.tar');
    await writeBundleFile(bundle, { repos: [REPO], signer: bob.signer });
    const before = await readFile(bundle);
    const r = await runAirlock(['resign', bundle, '--sign-key', erin.key, '--trusted-keys', join(dir, 'alice.pub.asc')]);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /E_SIGNATURE_UNTRUSTED/);
    assert.ok((await readFile(bundle)).equals(before));
    const none = await runAirlock(['resign', bundle, '--sign-key', erin.key]);
    assert.equal(none.code, 2, 'no trusted keys and no --force is a usage error');
    const forced = await runAirlock(['resign', bundle, '--sign-key', erin.key, '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.ok(payloadRegion(before).equals(payloadRegion(await readFile(bundle))));
    assert.equal((await runAirlock(['verify', bundle, '--trusted-keys', erin.pub])).code, 0);
  });

  test('--force still checks every payload hash: a tampered bundle is refused and left as it was', async () => {
    const frank = await keyFile('Frank');
    const bundle = join(dir, 'tampered.airlock.tar');
    await writeBundleFile(bundle, { repos: [REPO], signer: alice.signer, editEntries: tamper.flipByte(entryName(REPO, 'big.bin')) });
    const before = await readFile(bundle);
    const r = await runAirlock(['resign', bundle, '--sign-key', frank.key, '--force']);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /E_HASH_MISMATCH/);
    assert.ok((await readFile(bundle)).equals(before));
    assert.deepEqual((await readdir(dir)).filter((n) => n.endsWith('.tmp')), []);
  });

  test('an unsigned bundle needs --force, then verifies', async () => {
    const grace = await keyFile('Grace');
    const bundle = join(dir, 'unsigned.airlock.tar');
    await writeBundleFile(bundle, { repos: [REPO], signer: undefined });
    const r = await runAirlock(['resign', bundle, '--sign-key', grace.key, '--trusted-keys', grace.pub]);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /E_UNSIGNED/);
    assert.equal((await runAirlock(['resign', bundle, '--sign-key', grace.key, '--force'])).code, 0);
    const keys = (await import('../../src/signing/verify.ts')).readPublicKeys;
    const result = await verifyBundle({ bundlePath: bundle, trust: { keys: await keys(await readFile(grace.pub), 'grace'), pins: [{ fingerprint: grace.fingerprint, source: 'test' }] } });
    assert.equal(result.files, 2);
  });

  test("export's fallback layout (leading entries without slack): the payload moves as a whole, split volumes are re-cut and re-indexed", async () => {
    const heidi = await keyFile('Heidi');
    // what export writes when the leading entries outgrew their reserve: an unpadded leading block
    // (the identity edit packs entry by entry, exactly as that copy does)
    const plain = (await buildBundle({ repos: [REPO], signer: alice.signer, editEntries: (e) => e })).bytes;
    const single = join(dir, 'fallback.airlock.tar');
    await writeFile(single, plain);
    const r = await runAirlock(['resign', single, '--add', '--sign-key', heidi.key, '--trusted-keys', join(dir, 'alice.pub.asc'), '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).payloadInPlace, false);
    assert.ok(payloadRegion(await readFile(single)).equals(payloadRegion(plain)), 'payload bytes identical, at a new offset');

    // the same tar as volumes without an index: resign cuts the new tar at the same part size and writes the index
    const media = join(dir, 'fallback-media');
    await mkdir(media);
    const partSize = 1024 * 1024;
    for (let i = 0; i * partSize < plain.length; i++) await writeFile(join(media, `f.tar.${String(i).padStart(3, '0')}`), plain.subarray(i * partSize, (i + 1) * partSize));
    const s = await runAirlock(['resign', join(media, 'f.tar.000'), '--add', '--sign-key', heidi.key, '--trusted-keys', join(dir, 'alice.pub.asc')]);
    assert.equal(s.code, 0, s.stderr);
    assert.match(s.stdout, /moved behind the larger leading entries/);
    const index = JSON.parse(await readFile(join(media, 'f.parts.json'), 'utf8'));
    assert.equal(index.partSize, partSize);
    const joined = Buffer.concat(await Promise.all(index.parts.map((p: { name: string }) => readFile(join(media, p.name)))));
    assert.ok(payloadRegion(joined).equals(payloadRegion(plain)));
    const v = await runAirlock(['verify', join(media, 'f.tar.000'), '--trusted-keys', join(dir, 'alice.pub.asc'), '--trusted-keys', heidi.pub, '--require-signatures', '2']);
    assert.equal(v.code, 0, v.stderr);
    assert.doesNotMatch(v.stdout, /split volumes:/, 'the new signed index is used');
  });
});
