/**
 * Trust on the offline side, with real gpg keys (a missing gpg FAILS): unpinned, expired-at-signing-time,
 * revoked and wrong-subkey signatures refused with their codes and a message naming the key; subkeys;
 * the two-person rule; the trust file; the --report evidence record and the auditor summary.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as openpgp from 'openpgp';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, runAirlock } from '../support/cli.ts';
import { makeTestKey, writeBundleFile, type BuilderRepo, type TestKey } from '../support/bundle-builder.ts';
import { isAirlockError, type ErrorCode } from '../../src/errors.ts';
import { verifyBundle } from '../../src/import/index.ts';
import { gpgSigner } from '../../src/signing/gpg.ts';
import type { Signer } from '../../src/signing/sign.ts';
import { mergeSignatures, readPublicKeys, type TrustedKey } from '../../src/signing/verify.ts';

let dir: string;
let home: string;
let alice: TestKey;
let bob: TestKey;

const REPO: BuilderRepo = { id: 'acme/tiny', files: [{ path: 'config.json', data: '{"a": 1}\n' }, { path: 'w.bin', data: Buffer.alloc(5000, 3), lfs: true }] };

async function gpg(args: string[], faked?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return run('gpg', ['--homedir', home, '--batch', '--pinentry-mode', 'loopback', '--passphrase', '', ...(faked ? ['--faked-system-time', faked] : []), ...args]);
}
async function ok(args: string[], faked?: string): Promise<string> {
  const r = await gpg(args, faked);
  assert.equal(r.code, 0, `gpg ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}
async function fprs(uid: string): Promise<string[]> {
  return (await ok(['--with-colons', '--list-keys', uid])).split('\n').filter((l) => l.startsWith('fpr:')).map((l) => l.split(':')[9]!);
}
async function exported(f: string): Promise<TrustedKey[]> {
  const path = join(dir, `${f}.pub.asc`);
  await ok(['--yes', '--armor', '--output', path, '--export', f]);
  return readPublicKeys(await readFile(path), path);
}
/** A Signer producing a gpg signature at a faked time (gpg's own clock), by an exact (sub)key. */
function gpgAt(keySpec: string, faked: string): Signer {
  return {
    fingerprint: keySpec,
    userIds: [],
    async sign(data: Uint8Array): Promise<string> {
      const input = join(dir, `in-${Math.random().toString(16).slice(2)}`);
      await writeFile(input, data);
      return ok(['--detach-sign', '--armor', '--local-user', keySpec, '--output', '-', input], faked);
    },
  };
}
async function bundleSignedBy(signer: Signer | undefined): Promise<string> {
  const path = join(dir, `b-${Math.random().toString(16).slice(2)}.airlock.tar`);
  await writeBundleFile(path, { repos: [REPO], signer });
  return path;
}
async function refused(promise: Promise<unknown>, code: ErrorCode, names?: string): Promise<void> {
  try {
    await promise;
  } catch (error) {
    assert.ok(isAirlockError(error), String(error));
    assert.equal(error.code, code, error.message);
    if (names !== undefined) assert.ok(error.message.includes(names.replace(/(.{4})/g, '$1 ').trim()), `${error.message} names ${names}`);
    return;
  }
  assert.fail(`expected ${code}`);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-trust-'));
  home = join(dir, 'gnupg');
  await mkdir(home);
  await chmod(home, 0o700);
  assert.equal((await run('gpg', ['--version'])).code, 0, 'GnuPG is required');
  [alice, bob] = await Promise.all([makeTestKey('Alice <alice@example.org>'), makeTestKey('Bob <bob@example.org>')]);
  await writeFile(join(dir, 'alice.pub.asc'), alice.publicKeyArmored);
  await writeFile(join(dir, 'both.pub.asc'), alice.publicKeyArmored + bob.publicKeyArmored);
});
after(async () => {
  await run('gpgconf', ['--homedir', home, '--kill', 'gpg-agent']).catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

describe('pinning', () => {
  test('a key in the key file but not pinned is refused, naming the key (E_SIGNATURE_UNTRUSTED)', async () => {
    const keys = [...alice.trustedKeys, ...bob.trustedKeys];
    const bundle = await bundleSignedBy(bob.signer);
    await refused(verifyBundle({ bundlePath: bundle, trust: { keys, pins: [{ fingerprint: alice.fingerprint, source: 'test' }] } }), 'E_SIGNATURE_UNTRUSTED', bob.fingerprint);
    const good = await verifyBundle({ bundlePath: bundle, trust: { keys, pins: [{ fingerprint: bob.fingerprint, source: 'test' }] } });
    assert.equal(good.signers[0]!.fingerprint, bob.fingerprint);
  });

  test('the trust file pins keys; --trusted-fingerprint replaces it; a group-writable trust file is refused', async () => {
    const trustFile = join(dir, 'trusted-fingerprints');
    await writeFile(trustFile, `# release key\n${alice.fingerprint.replace(/(.{4})/g, '$1 ')}  # Alice\n`, { mode: 0o644 });
    await chmod(trustFile, 0o644);
    const env = { AIRLOCK_TRUST_FILE: trustFile };
    const byBob = await bundleSignedBy(bob.signer);
    const byAlice = await bundleSignedBy(alice.signer);
    const refusedRun = await runAirlock(['verify', byBob, '--trusted-keys', join(dir, 'both.pub.asc')], { env });
    assert.equal(refusedRun.code, 3, refusedRun.stderr);
    assert.match(refusedRun.stderr, /E_SIGNATURE_UNTRUSTED/);
    assert.match(refusedRun.stderr, /Bob <bob@example\.org>/);
    assert.equal((await runAirlock(['verify', byAlice, '--trusted-keys', join(dir, 'both.pub.asc')], { env })).code, 0);
    const override = await runAirlock(['verify', byBob, '--trusted-keys', join(dir, 'both.pub.asc'), '--trusted-fingerprint', bob.fingerprint.toLowerCase()], { env });
    assert.equal(override.code, 0, override.stderr);
    // XDG location
    const xdg = join(dir, 'xdg');
    await mkdir(join(xdg, 'airlock'), { recursive: true });
    await writeFile(join(xdg, 'airlock', 'trusted-fingerprints'), `${alice.fingerprint}\n`);
    assert.equal((await runAirlock(['verify', byBob, '--trusted-keys', join(dir, 'both.pub.asc')], { env: { XDG_CONFIG_HOME: xdg } })).code, 3);
    await chmod(trustFile, 0o666);
    const insecure = await runAirlock(['verify', byAlice, '--trusted-keys', join(dir, 'both.pub.asc')], { env });
    assert.equal(insecure.code, 2, insecure.stderr);
    assert.match(insecure.stderr, /writable by group or others/);
  });
});

describe('gpg keys: expiry at signing time, revocation, subkeys', () => {
  test('a key that expired AFTER signing is fine; a signature made after expiry is refused (E_SIGNATURE_EXPIRED_KEY)', async () => {
    await ok(['--quick-gen-key', 'Old <old@example.org>', 'ed25519', 'sign', 'never'], '20200101T000000');
    const [f] = await fprs('old@example.org');
    const early = await bundleSignedBy(gpgAt(f!, '20200101T120000'));
    const late = await bundleSignedBy(gpgAt(f!, '20200110T000000'));
    // now the key gets an expiry of one day (2020-01-02T06:00Z): before `late` was made
    await ok(['--quick-set-expire', f!, '1d'], '20200101T060000');
    const keys = await exported(f!);
    const good = await verifyBundle({ bundlePath: early, trust: { keys } });
    assert.equal(good.signers[0]!.signedAt, '2020-01-01T12:00:00.000Z');
    await refused(verifyBundle({ bundlePath: late, trust: { keys } }), 'E_SIGNATURE_EXPIRED_KEY', f);
  });

  test('a revoked key is refused, whatever the signature date (E_SIGNATURE_REVOKED_KEY)', async () => {
    await ok(['--quick-gen-key', 'Revoked <revoked@example.org>', 'ed25519', 'sign', 'never']);
    const [f] = await fprs('revoked@example.org');
    const bundle = await bundleSignedBy(await gpgSigner({ keyId: f!, homedir: home }));
    assert.equal((await verifyBundle({ bundlePath: bundle, trust: { keys: await exported(f!) } })).signers.length, 1);
    const cert = (await readFile(join(home, 'openpgp-revocs.d', `${f}.rev`), 'utf8')).replace(/^:/m, '');
    await writeFile(join(dir, 'rev.asc'), cert);
    await ok(['--import', join(dir, 'rev.asc')]);
    const revoked = await exported(f!);
    await refused(verifyBundle({ bundlePath: bundle, trust: { keys: revoked } }), 'E_SIGNATURE_REVOKED_KEY', f);
    const cli = await runAirlock(['verify', bundle, '--trusted-keys', join(dir, `${f}.pub.asc`)]);
    assert.equal(cli.code, 3);
    assert.match(cli.stderr, /E_SIGNATURE_REVOKED_KEY/);
    assert.match(cli.stderr, /Revoked <revoked@example\.org>/);
  });

  test('signing subkeys work; pinning one subkey refuses the other (E_SIGNATURE_WRONG_SUBKEY)', async () => {
    await ok(['--quick-gen-key', 'Sub <sub@example.org>', 'ed25519', 'cert', 'never']);
    const [primary] = await fprs('sub@example.org');
    await ok(['--quick-add-key', primary!, 'ed25519', 'sign', 'never']);
    await ok(['--quick-add-key', primary!, 'rsa3072', 'sign', 'never']);
    const [, subA, subB] = await fprs('sub@example.org');
    const keys = await exported(primary!);
    const bySubA = await bundleSignedBy(gpgAt(`${subA}!`, ''));
    const good = await verifyBundle({ bundlePath: bySubA, trust: { keys, pins: [{ fingerprint: primary!, source: 'test' }] } });
    assert.equal(good.signers[0]!.fingerprint, primary);
    assert.equal(good.signers[0]!.signingKeyFingerprint, subA);
    assert.equal((await verifyBundle({ bundlePath: bySubA, trust: { keys, pins: [{ fingerprint: subA!, source: 'test' }] } })).signers.length, 1);
    await refused(verifyBundle({ bundlePath: bySubA, trust: { keys, pins: [{ fingerprint: subB!, source: 'test' }] } }), 'E_SIGNATURE_WRONG_SUBKEY', primary);
  });

  test('a subkey grafted onto a trusted key without a valid binding is refused (E_SIGNATURE_WRONG_SUBKEY)', async () => {
    const { privateKey } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'Mallory' }], subkeys: [{ sign: true }], format: 'object' });
    const mallorySub = privateKey.getSubkeys()[0]!;
    // Alice's public key + Mallory's signing subkey with Mallory's binding signature
    const grafted = new openpgp.PacketList<openpgp.AnyPacket>();
    // Mallory's packets: primary key, user id, self-signature, then the subkey and its binding
    grafted.push(...alice.trustedKeys[0]!.key.toPacketList(), ...privateKey.toPublic().toPacketList().slice(3));
    const key = new openpgp.PublicKey(grafted);
    assert.ok(key.getKeys(mallorySub.getKeyID()).length > 0, 'the grafted subkey is listed under Alice');
    const signer: Signer = {
      fingerprint: 'mallory',
      userIds: [],
      sign: async (data) => openpgp.sign({ message: await openpgp.createMessage({ binary: data }), signingKeys: privateKey, detached: true, format: 'armored' }),
    };
    const bundle = await bundleSignedBy(signer);
    await refused(verifyBundle({ bundlePath: bundle, trust: { keys: [{ key, source: 'grafted' }] } }), 'E_SIGNATURE_WRONG_SUBKEY', alice.fingerprint);
  });
});

describe('two-person rule', () => {
  test('--require-signatures counts distinct trusted keys', async () => {
    const keys = [...alice.trustedKeys, ...bob.trustedKeys];
    const single = await bundleSignedBy(alice.signer);
    await refused(verifyBundle({ bundlePath: single, trust: { keys, requireSignatures: 2 } }), 'E_NOT_ENOUGH_SIGNATURES', alice.fingerprint);
    const both: Signer = { fingerprint: 'both', userIds: [], sign: async (d) => mergeSignatures([await alice.signer.sign(d), await bob.signer.sign(d)]) };
    const twice: Signer = { fingerprint: 'twice', userIds: [], sign: async (d) => mergeSignatures([await alice.signer.sign(d), await alice.signer.sign(d)]) };
    const two = await bundleSignedBy(both);
    assert.equal((await verifyBundle({ bundlePath: two, trust: { keys, requireSignatures: 2 } })).signers.length, 2);
    await refused(verifyBundle({ bundlePath: two, trust: { keys: alice.trustedKeys, requireSignatures: 2 } }), 'E_NOT_ENOUGH_SIGNATURES');
    await refused(verifyBundle({ bundlePath: await bundleSignedBy(twice), trust: { keys, requireSignatures: 2 } }), 'E_NOT_ENOUGH_SIGNATURES');
    // one good signature is enough by default, even next to one by an unknown key
    assert.equal((await verifyBundle({ bundlePath: two, trust: { keys: bob.trustedKeys } })).signers[0]!.fingerprint, bob.fingerprint);
    const cli = await runAirlock(['import', single, '--trusted-keys', join(dir, 'both.pub.asc'), '--require-signatures', '2', '--cache-dir', join(dir, 'cache2')]);
    assert.equal(cli.code, 3);
    assert.match(cli.stderr, /E_NOT_ENOUGH_SIGNATURES/);
  });
});

describe('evidence', () => {
  test('verify --report writes the record; the human summary is pasteable; a refusal is recorded too', async () => {
    const bundle = await bundleSignedBy(alice.signer);
    const report = join(dir, 'report.json');
    const r = await runAirlock(['verify', bundle, '--trusted-keys', join(dir, 'alice.pub.asc'), '--trusted-fingerprint', alice.fingerprint, '--report', report]);
    assert.equal(r.code, 0, r.stderr);
    const sha = createHash('sha256').update(await readFile(bundle)).digest('hex');
    const rec = JSON.parse(await readFile(report, 'utf8'));
    assert.equal(rec.result, 'verified');
    assert.equal(rec.bundle.sha256, sha);
    assert.equal(rec.signers[0].fingerprint, alice.fingerprint);
    assert.equal(rec.signers[0].userIds[0], 'Alice <alice@example.org>');
    assert.match(rec.signers[0].signedAt, /^\d{4}-/);
    assert.equal(rec.repos[0].id, 'acme/tiny');
    assert.equal(rec.repos[0].commit.length, 40);
    assert.equal(rec.files, 2);
    assert.equal(rec.bytes, 5009);
    assert.equal(rec.tool.name, 'model-airlock');
    assert.ok(rec.finishedAt && rec.trust.pins[0].fingerprint === alice.fingerprint);
    assert.match(r.stdout, new RegExp(`bundle sha256: +${sha}`));
    assert.match(r.stdout, /signed by: +[0-9A-F ]+ Alice <alice@example\.org>/);
    assert.match(r.stdout, /repo: +model acme\/tiny @ main = commit [0-9a-f]{40}/);

    const bad = await bundleSignedBy(bob.signer);
    const refusedRun = await runAirlock(['import', bad, '--trusted-keys', join(dir, 'alice.pub.asc'), '--report', report, '--force', '--cache-dir', join(dir, 'cache')]);
    assert.equal(refusedRun.code, 3);
    const rec2 = JSON.parse(await readFile(report, 'utf8'));
    assert.equal(rec2.result, 'refused');
    assert.equal(rec2.command, 'import');
    assert.equal(rec2.error.code, 'E_SIGNATURE_UNTRUSTED');
    assert.equal(rec2.bundle.sha256, createHash('sha256').update(await readFile(bad)).digest('hex'));

    const imp = await runAirlock(['import', bundle, '--trusted-keys', join(dir, 'alice.pub.asc'), '--report', report, '--force', '--cache-dir', join(dir, 'cache')]);
    assert.equal(imp.code, 0, imp.stderr);
    assert.equal(JSON.parse(await readFile(report, 'utf8')).result, 'imported');
  });

  test("the whole bundle's sha256 is a second hash pass: made with --sha256 (or --report), not by default", async () => {
    const bundle = await bundleSignedBy(alice.signer);
    const sha = createHash('sha256').update(await readFile(bundle)).digest('hex');
    const keyArgs = ['--trusted-keys', join(dir, 'alice.pub.asc')];
    const plain = await runAirlock(['verify', bundle, ...keyArgs]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.doesNotMatch(plain.stdout, new RegExp(sha));
    assert.match(plain.stdout, /bundle sha256: +not computed \(add --sha256\)/);
    assert.match(plain.stdout, /every hash matches the signed SHA256SUMS/);

    const asked = await runAirlock(['verify', bundle, ...keyArgs, '--sha256']);
    assert.equal(asked.code, 0, asked.stderr);
    assert.match(asked.stdout, new RegExp(`^  bundle sha256 ${sha}$`, 'm'));
    assert.match(asked.stdout, new RegExp(`bundle sha256: +${sha}`));
    const json = await runAirlock(['verify', bundle, ...keyArgs, '--sha256', '--json']);
    assert.equal(JSON.parse(json.stdout).bundleSha256, sha);

    const imported = await runAirlock(['import', bundle, ...keyArgs, '--sha256', '--cache-dir', join(dir, 'cache-sha')]);
    assert.equal(imported.code, 0, imported.stderr);
    assert.match(imported.stdout, new RegExp(`^  bundle sha256 ${sha}$`, 'm'));
    const quiet = await runAirlock(['import', bundle, ...keyArgs, '--cache-dir', join(dir, 'cache-sha')]);
    assert.equal(quiet.code, 0, quiet.stderr);
    assert.doesNotMatch(quiet.stdout, /bundle sha256/);
  });
});
