/**
 * Interop with a real GnuPG (a missing gpg FAILS these tests, it never skips them), in a throw-away
 * GNUPGHOME: ed25519 and RSA-4096 keys made by gpg sign bundles through `--gpg-sign` and verify in
 * airlock; bundles signed by airlock (openpgp.js) verify with `gpg --verify`, `gpgv` and `sha256sum -c`,
 * including a two-signature SHA256SUMS.asc; `--trusted-keys` takes a binary gpg keyring; `keys list`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, runAirlock } from '../support/cli.ts';
import { makeTestKey, writeBundleFile, type BuilderRepo, type TestKey } from '../support/bundle-builder.ts';
import { tarLayout } from '../support/tar-layout.ts';
import { gpgSigner } from '../../src/signing/gpg.ts';
import { verifyBundle } from '../../src/import/index.ts';
import { readPublicKeys } from '../../src/signing/verify.ts';

let dir: string;
let home: string;
let airlockKey: TestKey;
const fpr: Record<'ed' | 'rsa', string> = { ed: '', rsa: '' };

async function gpg(args: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  if (input !== undefined) {
    const file = join(dir, `stdin-${Math.random().toString(16).slice(2)}`);
    await writeFile(file, input);
    args = [...args, file];
  }
  return run('gpg', ['--homedir', home, '--batch', '--pinentry-mode', 'loopback', '--passphrase', '', ...args]);
}

async function fingerprintOf(uid: string): Promise<string> {
  const r = await gpg(['--with-colons', '--list-keys', uid]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split('\n').find((l) => l.startsWith('fpr:'))!.split(':')[9]!;
}

const REPO: BuilderRepo = {
  id: 'acme/tiny',
  files: [
    { path: 'config.json', data: '{"a": 1}\n' },
    { path: 'model.safetensors', data: Buffer.alloc(100_000, 7), lfs: true },
  ],
};

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-gpg-'));
  home = join(dir, 'gnupg');
  await mkdir(home);
  await chmod(home, 0o700);
  const version = await run('gpg', ['--version']).catch((error: unknown) => ({ code: -1, stdout: '', stderr: String(error) }));
  assert.equal(version.code, 0, `GnuPG is required for these tests: ${version.stderr}`);
  for (const [uid, algo] of [['Ed Signer <ed@example.org>', 'ed25519'], ['Rsa Signer <rsa@example.org>', 'rsa4096']] as const) {
    const r = await gpg(['--quick-gen-key', uid, algo, 'sign', 'never']);
    assert.equal(r.code, 0, r.stderr);
  }
  fpr.ed = await fingerprintOf('ed@example.org');
  fpr.rsa = await fingerprintOf('rsa@example.org');
  for (const [name, f] of Object.entries(fpr)) {
    const r = await gpg(['--armor', '--output', join(dir, `${name}.pub.asc`), '--export', f]);
    assert.equal(r.code, 0, r.stderr);
  }
  airlockKey = await makeTestKey('Airlock Signer <airlock@example.org>');
  await writeFile(join(dir, 'airlock.pub.asc'), airlockKey.publicKeyArmored);
});

after(async () => {
  await run('gpgconf', ['--homedir', home, '--kill', 'gpg-agent']).catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

async function extract(bundle: string): Promise<string> {
  const out = join(dir, `x-${Math.random().toString(16).slice(2)}`);
  await mkdir(out);
  const r = await run('tar', ['-xf', bundle, '-C', out]);
  assert.equal(r.code, 0, r.stderr);
  return out;
}

describe('gpg → airlock', () => {
  for (const kind of ['ed', 'rsa'] as const) {
    test(`a bundle signed through --gpg-sign with a gpg ${kind === 'ed' ? 'ed25519' : 'RSA-4096'} key verifies in airlock`, async () => {
      // the Signer library call, as export uses it
      const signer = await gpgSigner({ keyId: fpr[kind], homedir: home });
      assert.equal(signer.fingerprint, fpr[kind]);
      const bundle = join(dir, `gpg-${kind}.airlock.tar`);
      await writeBundleFile(bundle, { repos: [REPO], signer });
      const keys = await readPublicKeys(await readFile(join(dir, `${kind}.pub.asc`)), `${kind}.pub.asc`);
      const result = await verifyBundle({ bundlePath: bundle, trust: { keys, pins: [{ fingerprint: fpr[kind], source: 'test' }] } });
      assert.equal(result.signers[0]!.fingerprint, fpr[kind]);

      // and through the CLI: resign an airlock-signed bundle with gpg, then verify it
      const original = join(dir, `airlock-for-${kind}.airlock.tar`);
      await writeBundleFile(original, { repos: [REPO], signer: airlockKey.signer });
      const resigned = join(dir, `resigned-${kind}.airlock.tar`);
      const r = await runAirlock([
        'resign', original, '--gpg-sign', fpr[kind], '--gpg-homedir', home,
        '--trusted-keys', join(dir, 'airlock.pub.asc'), '-o', resigned,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const v = await runAirlock(['verify', resigned, '--trusted-keys', join(dir, `${kind}.pub.asc`), '--trusted-fingerprint', fpr[kind]]);
      assert.equal(v.code, 0, v.stderr);
      assert.match(v.stdout, new RegExp(`signed by: +${fpr[kind].replace(/(.{4})/g, '$1 ').trim()}`));
      // the signature is gpg's, binary mode (sig class 00)
      const x = await extract(resigned);
      const packets = await run('gpg', ['--list-packets', join(x, 'SHA256SUMS.asc')]);
      assert.match(packets.stdout, /sigclass 0x00/);
    });
  }

  test('a signature made by `gpg --detach-sign` by hand also verifies', async () => {
    const bundle = join(dir, 'hand.airlock.tar');
    await writeBundleFile(bundle, { repos: [REPO], signer: undefined });
    const x = await extract(bundle);
    const s = await gpg(['--detach-sign', '--armor', '--local-user', fpr.rsa, '--output', join(x, 'SHA256SUMS.asc'), join(x, 'SHA256SUMS')]);
    assert.equal(s.code, 0, s.stderr);
    const { verifyDetachedSignature } = await import('../../src/signing/verify.ts');
    const keys = await readPublicKeys(await readFile(join(dir, 'rsa.pub.asc')), 'rsa.pub.asc');
    const signers = await verifyDetachedSignature(await readFile(join(x, 'SHA256SUMS')), await readFile(join(x, 'SHA256SUMS.asc'), 'utf8'), { keys });
    assert.equal(signers[0]!.fingerprint, fpr.rsa);
  });

  test('an unknown gpg key is a usage error naming it (E_GPG)', async () => {
    const bundle = join(dir, 'e-gpg.airlock.tar');
    await writeBundleFile(bundle, { repos: [REPO], signer: airlockKey.signer });
    const r = await runAirlock(['resign', bundle, '--gpg-sign', 'nobody@example.org', '--gpg-homedir', home, '--force']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /E_GPG/);
    assert.match(r.stderr, /nobody@example\.org/);
  });
});

describe('airlock → gpg', () => {
  let bundle: string;
  before(async () => {
    bundle = join(dir, 'airlock-signed.airlock.tar');
    await writeBundleFile(bundle, { repos: [REPO], signer: airlockKey.signer });
  });

  test('gpg --verify, gpgv (dearmored keyring) and sha256sum -c accept an airlock bundle', async () => {
    const x = await extract(bundle);
    assert.equal((await gpg(['--import', join(dir, 'airlock.pub.asc')])).code, 0);
    const v = await gpg(['--status-fd', '1', '--verify', join(x, 'SHA256SUMS.asc'), join(x, 'SHA256SUMS')]);
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, new RegExp(`\\[GNUPG:\\] VALIDSIG ${airlockKey.fingerprint}`));
    const ring = join(dir, 'airlock.gpg');
    const d = await run('gpg', ['--homedir', home, '--batch', '--yes', '--output', ring, '--dearmor', join(dir, 'airlock.pub.asc')]);
    assert.equal(d.code, 0, d.stderr);
    const gv = await run('gpgv', ['--homedir', home, '--keyring', ring, join(x, 'SHA256SUMS.asc'), join(x, 'SHA256SUMS')]);
    assert.equal(gv.code, 0, gv.stderr);
    const sums = await run('sha256sum', ['--strict', '-c', 'SHA256SUMS'], { cwd: x });
    assert.equal(sums.code, 0, sums.stdout + sums.stderr);
  });

  test('a two-signature SHA256SUMS.asc (resign --add): gpg reports both good signatures; payload untouched', async () => {
    const two = join(dir, 'two.airlock.tar');
    const r = await runAirlock([
      'resign', bundle, '--add', '--gpg-sign', fpr.ed, '--gpg-homedir', home,
      '--trusted-keys', join(dir, 'airlock.pub.asc'), '-o', two,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const a = await readFile(bundle);
    const b = await readFile(two);
    const start = (buf: Buffer) => tarLayout(buf)[3]!.headerOffset;
    assert.ok(a.subarray(start(a)).equals(b.subarray(start(b))), 'payload region is byte-identical');
    const x = await extract(two);
    const v = await gpg(['--status-fd', '1', '--verify', join(x, 'SHA256SUMS.asc'), join(x, 'SHA256SUMS')]);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stdout.match(/\[GNUPG:\] GOODSIG/g)?.length, 2, v.stdout);
    assert.match(v.stdout, new RegExp(`VALIDSIG ${fpr.ed}`));
    assert.match(v.stdout, new RegExp(`VALIDSIG ${airlockKey.fingerprint}`));
    // two-person rule in airlock: both keys from ONE binary gpg keyring
    const ring = join(dir, 'both.gpg');
    const e = await run('gpg', ['--homedir', home, '--batch', '--yes', '--output', ring, '--export', fpr.ed, airlockKey.fingerprint]);
    assert.equal(e.code, 0, e.stderr);
    const ok = await runAirlock(['verify', two, '--trusted-keys', ring, '--require-signatures', '2', '--json']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout).signers.map((s: { fingerprint: string }) => s.fingerprint).sort(), [fpr.ed, airlockKey.fingerprint].sort());
  });
});

describe('keys list', () => {
  test('shows fingerprints, user ids, algorithms and expiry of gpg and airlock keys', async () => {
    const r = await runAirlock(['keys', 'list', join(dir, 'ed.pub.asc'), join(dir, 'rsa.pub.asc'), join(dir, 'airlock.pub.asc')]);
    assert.equal(r.code, 0, r.stderr);
    for (const f of [fpr.ed, fpr.rsa, airlockKey.fingerprint]) assert.ok(r.stdout.includes(f.replace(/(.{4})/g, '$1 ').trim()), f);
    assert.match(r.stdout, /uid {2}Ed Signer <ed@example\.org>/);
    assert.match(r.stdout, /rsa\w*4096/i);
    assert.match(r.stdout, /expires never/);
    const j = await runAirlock(['keys', 'list', join(dir, 'rsa.pub.asc'), '--json']);
    const keys = JSON.parse(j.stdout).keys;
    assert.equal(keys[0].fingerprint, fpr.rsa);
    assert.deepEqual(keys[0].userIds, ['Rsa Signer <rsa@example.org>']);
    assert.equal(keys[0].expires, null);
  });
});
