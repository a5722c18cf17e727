/**
 * The exit-code contract and the hints (issue 14), through the real CLI:
 *   - usage errors commander finds (unknown option, missing argument, missing required flag, unknown
 *     command) exit 2 with a hint, and print the JSON error object under --json; `airlock` and
 *     `airlock keys` alone print the help and exit 2 alike; --help exits 0;
 *   - files named by flags (key files, passphrase file, --spec, --have): missing or a directory → exit 2
 *     with a hint naming the flag, never a raw ENOENT/EISDIR; never the file's content;
 *   - a read-only file system is called that (EROFS), not "no such file" (import --cache-dir, keys generate);
 *   - keys generate checks every output before writing, refuses an empty passphrase file, takes --expires
 *     and writes a revocation certificate that, imported with the key (gpg), makes verify refuse the key;
 *   - --require-signatures two; a stale trust-file pin names the trust file; keys list dates are ISO 8601 UTC.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeCliFixture, REPO, type CliFixture } from '../support/cli-fixture.ts';
import { run, runAirlock } from '../support/cli.ts';

let fx: CliFixture;
before(async () => {
  fx = await makeCliFixture('contract');
});
after(async () => {
  await fx?.close();
});

let serial = 0;
const fresh = (name: string): string => join(fx.dir, `${name}-${++serial}`);

function assertUsage(r: { code: number; stderr: string }, message: RegExp): void {
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, message);
  assert.match(r.stderr, /hint: /);
  assert.match(r.stderr, /E_USAGE, exit 2/);
  assert.doesNotMatch(r.stderr, /ENOENT|EISDIR|at .*\.js:\d+/);
}

describe('usage errors from argument parsing', () => {
  test('unknown option, missing argument, missing required flag, unknown command: exit 2 with a hint', async () => {
    assertUsage(await runAirlock(['verify', fx.bundle, '--nope']), /unknown option '--nope'[\s\S]*airlock verify --help/);
    assertUsage(await runAirlock(['verify']), /missing required argument 'bundle'/);
    assertUsage(await runAirlock(['keys', 'generate', '--out-dir', fresh('k')]), /required option '--user-id <uid>' not specified[\s\S]*airlock keys generate --help/);
    assertUsage(await runAirlock(['cache', 'inventory']), /required option '--out <file>'/);
    assertUsage(await runAirlock(['frobnicate']), /unknown command 'frobnicate'/);
    assertUsage(await runAirlock(['export', '--split-size']), /argument missing/);
  });

  test('under --json: the JSON error object on stdout', async () => {
    for (const args of [['verify', fx.bundle, '--json', '--nope'], ['keys', 'generate', '--json'], ['import', '--json']]) {
      const r = await runAirlock(args);
      assert.equal(r.code, 2, r.stderr);
      const json = JSON.parse(r.stdout);
      assert.equal(json.ok, false);
      assert.equal(json.error.code, 'E_USAGE');
      assert.equal(json.error.exitCode, 2);
      assert.match(json.error.hint, /--help/);
    }
  });

  test('`airlock` and `airlock keys` alone: the help on stderr and exit 2, the same for both; --help exits 0', async () => {
    for (const args of [[], ['keys'], ['cache']]) {
      const r = await runAirlock(args);
      assert.equal(r.code, 2, `airlock ${args.join(' ')}`);
      assert.match(r.stderr, /Usage: airlock/);
      assert.match(r.stderr, /needs a command/);
      assert.equal(r.stdout, '');
    }
    for (const args of [['--help'], ['keys', '--help'], ['help', 'verify'], ['--version']]) {
      const r = await runAirlock(args);
      assert.equal(r.code, 0, `airlock ${args.join(' ')}`);
    }
  });
});

describe('files named by flags: one rule', () => {
  test('a missing key file, passphrase file, --spec or --have: exit 2, naming the flag', async () => {
    const missing = join(fx.dir, 'nope.asc');
    assertUsage(await runAirlock(['verify', fx.bundle, '--trusted-keys', missing]), /trusted key file .*nope\.asc does not exist[\s\S]*--trusted-keys/);
    assertUsage(await runAirlock(['export', REPO, '--sign-key', missing, '-o', fresh('o.tar')], { env: fx.env }), /signing key .*nope\.asc does not exist[\s\S]*--sign-key/);
    assertUsage(await runAirlock(['keys', 'list', missing]), /does not exist/);
    assertUsage(await runAirlock(['export', '--spec', join(fx.dir, 'nope.yaml')], { env: fx.env }), /bundle spec .*nope\.yaml does not exist[\s\S]*--spec/);
    assertUsage(await runAirlock(['export', REPO, '--have', join(fx.dir, 'nope.json'), '--sign-key', fx.privateKey, '-o', fresh('o.tar')], { env: fx.env }), /inventory .*nope\.json does not exist[\s\S]*--have/);
    assertUsage(
      await runAirlock(['keys', 'generate', '--user-id', 'X <x@example.org>', '--out-dir', fresh('k'), '--passphrase-file', join(fx.dir, 'nope.txt')]),
      /passphrase file .*nope\.txt does not exist[\s\S]*--passphrase-file/,
    );
  });

  test('a directory passed as a key: exit 2 with a hint', async () => {
    assertUsage(await runAirlock(['verify', fx.bundle, '--trusted-keys', fx.keyDir]), /is a directory, not a file[\s\S]*hint: give --trusted-keys the file itself/);
    assertUsage(await runAirlock(['export', REPO, '--sign-key', fx.keyDir, '-o', fresh('o.tar')], { env: fx.env }), /is a directory/);
  });

  test('--have with a file that is not an inventory never prints its content', async () => {
    const secret = fresh('pass.txt');
    await writeFile(secret, 'sekrit-passphrase-do-not-print\n');
    const r = await runAirlock(['export', REPO, '--have', secret, '--allow-unsigned-have', '--sign-key', fx.privateKey, '-o', fresh('o.tar')], { env: fx.env });
    assert.notEqual(r.code, 0);
    assert.doesNotMatch(r.stderr + r.stdout, /sekrit/);
    assert.match(r.stderr, /pass\.txt/);
  });
});

describe('a read-only file system is called that', () => {
  let ro: string;
  before(async () => {
    ro = await mkdtemp(join(tmpdir(), 'airlock-ro-'));
    const r = await run('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', ro]);
    assert.equal(r.code, 0, `cannot mount a read-only tmpfs at ${ro} (${r.stderr.trim()}): this test needs root, as CI has`);
  });
  after(async () => {
    await run('umount', ['-l', ro]);
    await rmdir(ro);
  });

  test('import --cache-dir /ro/x and keys generate --out-dir /ro/k: "read-only file system", exit 5', async () => {
    const imp = await runAirlock(['import', fx.bundle, '--trusted-keys', fx.publicKey, '--cache-dir', join(ro, 'x')]);
    assert.equal(imp.code, 5, imp.stderr);
    assert.match(imp.stderr, /read-only file system/);
    assert.doesNotMatch(imp.stderr, /no such file/);
    const gen = await runAirlock(['keys', 'generate', '--user-id', 'X <x@example.org>', '--out-dir', join(ro, 'k')]);
    assert.equal(gen.code, 5, gen.stderr);
    assert.match(gen.stderr, /read-only file system/);
    assert.doesNotMatch(gen.stderr, /no such file/);
  });
});

describe('keys generate', () => {
  test('an existing signer.pub.asc: refused before anything is written', async () => {
    const out = fresh('keys');
    await mkdir(out);
    await writeFile(join(out, 'signer.pub.asc'), 'old public key\n');
    const r = await runAirlock(['keys', 'generate', '--user-id', 'X <x@example.org>', '--out-dir', out]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /signer\.pub\.asc already exists/);
    assert.deepEqual(await readdir(out), ['signer.pub.asc']);
    assert.equal(await readFile(join(out, 'signer.pub.asc'), 'utf8'), 'old public key\n');
  });

  test('a user id OpenPGP cannot carry is a usage error naming it (not "a bug in airlock"), nothing written', async () => {
    for (const uid of ['Lab <ops@x>', 'ops@lab.', 'Tab\there <t@example.org>', '<>']) {
      const out = fresh('keys');
      const r = await runAirlock(['keys', 'generate', '--user-id', uid, '--out-dir', out]);
      assertUsage(r, /--user-id/);
      assert.doesNotMatch(r.stderr, /E_INTERNAL|bug in airlock/);
      await assert.rejects(stat(out), 'no directory created');
    }
    const ok = await runAirlock(['keys', 'generate', '--user-id', 'Lab <ops@lab.internal>', '--out-dir', fresh('keys')]);
    assert.equal(ok.code, 0, ok.stderr);
  });

  test('an empty or newline-only --passphrase-file is refused, nothing written, content never echoed', async () => {
    for (const content of ['', '\n', '\r\n\n', '   \n']) {
      const pass = fresh('pass.txt');
      await writeFile(pass, content);
      const out = fresh('keys');
      const r = await runAirlock(['keys', 'generate', '--user-id', 'X <x@example.org>', '--out-dir', out, '--passphrase-file', pass]);
      assertUsage(r, /passphrase file .* is empty/);
      await assert.rejects(stat(out), 'no directory created');
    }
  });

  test('--expires sets the expiry; a bad value is refused', async () => {
    const out = fresh('keys');
    const r = await runAirlock(['keys', 'generate', '--user-id', 'X <x@example.org>', '--out-dir', out, '--expires', '2y', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    const years = (Date.parse(result.expires) - Date.now()) / (365 * 86_400_000);
    assert.ok(years > 1.9 && years < 2.1, result.expires);
    const list = await runAirlock(['keys', 'list', join(out, 'signer.pub.asc'), '--json']);
    assert.equal(JSON.parse(list.stdout).keys[0].expires.slice(0, 16), new Date(Date.parse(result.expires)).toISOString().slice(0, 16));
    assertUsage(await runAirlock(['keys', 'generate', '--user-id', 'X <x@example.org>', '--out-dir', fresh('k'), '--expires', 'two years']), /--expires takes/);
    assertUsage(await runAirlock(['keys', 'generate', '--user-id', 'X <x@example.org>', '--out-dir', fresh('k'), '--expires', '2001-01-01']), /not in the future/);
  });

  test('the revocation certificate revokes the key: imported with it (gpg), verify refuses the bundle', async () => {
    const out = fresh('keys');
    const gen = await runAirlock(['keys', 'generate', '--user-id', 'Rotating <r@example.org>', '--out-dir', out]);
    assert.equal(gen.code, 0, gen.stderr);
    const rev = join(out, 'signer.rev.asc');
    assert.equal((await stat(rev)).mode & 0o777, 0o600);
    const bundle = fresh('r.airlock.tar');
    const exp = await runAirlock(['export', REPO, '--sign-key', join(out, 'signer.key.asc'), '-o', bundle], { env: fx.env });
    assert.equal(exp.code, 0, exp.stderr);
    const home = await mkdtemp(join(tmpdir(), 'airlock-gpg-'));
    try {
      const ring = fresh('revoked.gpg');
      const g = await run('bash', ['-c', 'gpg --batch --quiet --homedir "$1" --import "$2" "$3" && gpg --batch --homedir "$1" --export > "$4"', 'sh', home, join(out, 'signer.pub.asc'), rev, ring]);
      assert.equal(g.code, 0, g.stderr);
      const v = await runAirlock(['verify', bundle, '--trusted-keys', ring]);
      assert.equal(v.code, 3, v.stderr);
      assert.match(v.stderr, /E_SIGNATURE_REVOKED_KEY/);
      const list = await runAirlock(['keys', 'list', ring]);
      assert.match(list.stdout, /\[REVOKED\]/);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});

describe('export --have checks the inventory signature', () => {
  test('signed by a trusted key: accepted; tampered: refused (3); unsigned: refused unless --allow-unsigned-have; signed but no --trusted-keys: 2', async () => {
    const cache = fresh('cache');
    assert.equal((await runAirlock(['import', fx.bundle, '--trusted-keys', fx.publicKey, '--cache-dir', cache])).code, 0);
    const have = fresh('have.json');
    const inv = await runAirlock(['cache', 'inventory', '--cache-dir', cache, '--out', have, '--sign-key', fx.privateKey]);
    assert.equal(inv.code, 0, inv.stderr);
    const exportWith = (extra: string[]) => runAirlock(['export', REPO, '--sign-key', fx.privateKey, '-o', fresh('d.airlock.tar'), ...extra], { env: fx.env });
    const ok = await exportWith(['--have', have, '--trusted-keys', fx.publicKey]);
    assert.equal(ok.code, 0, ok.stderr);
    const noKeys = await exportWith(['--have', have]);
    assertUsage(noKeys, /is signed, but no --trusted-keys/);
    const tampered = fresh('have.json');
    const inventory = JSON.parse(await readFile(have, 'utf8'));
    inventory.repos = [];
    await writeFile(tampered, JSON.stringify(inventory));
    await writeFile(`${tampered}.asc`, await readFile(`${have}.asc`));
    const bad = await exportWith(['--have', tampered, '--trusted-keys', fx.publicKey]);
    assert.equal(bad.code, 3, bad.stderr);
    assert.match(bad.stderr, /E_SIGNATURE_INVALID/);
    const unsigned = fresh('have.json');
    await writeFile(unsigned, await readFile(have));
    const refused = await exportWith(['--have', unsigned]);
    assert.equal(refused.code, 3, refused.stderr);
    assert.match(refused.stderr, /not signed[\s\S]*--allow-unsigned-have/);
    assert.equal((await exportWith(['--have', unsigned, '--allow-unsigned-have'])).code, 0);
  });
});

describe('hints', () => {
  test('--require-signatures two: a clear message, not NaN', async () => {
    const r = await runAirlock(['verify', fx.bundle, '--trusted-keys', fx.publicKey, '--require-signatures', 'two']);
    assertUsage(r, /--require-signatures takes a number of distinct signers \(1, 2, …\), not "two"/);
    assert.doesNotMatch(r.stderr, /NaN/);
  });

  test('a stale pin in the trust file: the refusal names the trust file', async () => {
    const other = fresh('other-keys');
    assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'Old <old@example.org>', '--out-dir', other])).code, 0);
    const oldFpr = JSON.parse((await runAirlock(['keys', 'list', join(other, 'signer.pub.asc'), '--json'])).stdout).keys[0].fingerprint;
    const trustFile = fresh('trusted-fingerprints');
    await writeFile(trustFile, `${oldFpr}\n`, { mode: 0o600 });
    const r = await runAirlock(['verify', fx.bundle, '--trusted-keys', fx.publicKey, '--trusted-keys', join(other, 'signer.pub.asc')], { env: { AIRLOCK_TRUST_FILE: trustFile } });
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, new RegExp(`not pinned \\(not in the trust file ${trustFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\)`));
  });

  test('a wrong endpoint path: names the endpoint to fix, not "run the export again"', async () => {
    const r = await runAirlock(['export', REPO, '--unsigned', '-o', fresh('w.airlock.tar')], { env: { HF_ENDPOINT: `${fx.hub.endpoint}/api` } });
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /no Hugging Face Hub API at .*\/api/);
    assert.match(r.stderr, /hint: check --endpoint \/ HF_ENDPOINT/);
    assert.doesNotMatch(r.stderr, /run the export again/);
  });

  test('keys list: one date format, ISO 8601 UTC', async () => {
    const out = fresh('keys');
    assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'X <x@example.org>', '--out-dir', out, '--expires', '90d'])).code, 0);
    const r = await runAirlock(['keys', 'list', join(out, 'signer.pub.asc')]);
    assert.equal(r.code, 0, r.stderr);
    const dates = [...r.stdout.matchAll(/(created|expires) (\S+)/g)].map((m) => m[2]!);
    assert.ok(dates.length >= 4);
    for (const d of dates) assert.match(d, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
  });
});
