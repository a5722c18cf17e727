/**
 * What the CLI writes, and where (issue 14, "one voice"):
 *   - files it writes at a named path (cache inventory --out, verify/import --report): an existing file
 *     is refused unless --force, `-` means standard output, and --report is checked BEFORE the verify;
 *   - a machine with no cache yet: cache list/verify say "nothing imported yet", inventory is empty and valid;
 *   - progress for verify/import on a real terminal (script(1)'s pseudo-terminal), none when piped,
 *     and --quiet prints nothing at all on success;
 *   - inspect names the signer by the full fingerprint (the form --trusted-fingerprint takes).
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeCliFixture, type CliFixture } from '../support/cli-fixture.ts';
import { run, runAirlock, runAirlockOnTerminal } from '../support/cli.ts';

let fx: CliFixture;
let fingerprint: string;
before(async () => {
  fx = await makeCliFixture('output');
  fingerprint = JSON.parse((await runAirlock(['keys', 'list', fx.publicKey, '--json'])).stdout).keys[0].fingerprint;
});
after(async () => {
  await fx?.close();
});

let serial = 0;
const fresh = (name: string): string => join(fx.dir, `${name}-${++serial}`);
const trust = (): string[] => ['--trusted-keys', fx.publicKey];

describe('files written at a named path: one rule', () => {
  test('cache inventory --out: an existing file is refused (untouched) unless --force; - is standard output', async () => {
    const cache = fresh('cache');
    assert.equal((await runAirlock(['import', fx.bundle, ...trust(), '--cache-dir', cache])).code, 0);
    const have = fresh('have.json');
    await writeFile(have, 'precious\n');
    const refused = await runAirlock(['cache', 'inventory', '--cache-dir', cache, '--out', have]);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /already exists[\s\S]*--force/);
    assert.equal(await readFile(have, 'utf8'), 'precious\n');
    const forced = await runAirlock(['cache', 'inventory', '--cache-dir', cache, '--out', have, '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal(JSON.parse(await readFile(have, 'utf8')).repos[0].id, 'acme/tiny-llm');
    const stdout = await runAirlock(['cache', 'inventory', '--cache-dir', cache, '--out', '-'], { cwd: fx.dir });
    assert.equal(stdout.code, 0, stdout.stderr);
    assert.equal(JSON.parse(stdout.stdout).format, 'model-airlock-inventory');
    assert.equal((await run('ls', [fx.dir])).stdout.split('\n').includes('-'), false, 'no file named -');
  });

  test('--report: checked before the verify (a missing folder, an existing file); - is standard output', async () => {
    const nowhere = join(fx.dir, 'no-such-folder', 'r.json');
    const r = await runAirlock(['verify', fx.bundle, ...trust(), '--report', nowhere]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--report .*no-such-folder/);
    assert.doesNotMatch(r.stdout, /Verified/, 'refused before the bundle was read');
    const existing = fresh('r.json');
    await writeFile(existing, 'old evidence\n');
    const again = await runAirlock(['import', fx.bundle, ...trust(), '--cache-dir', fresh('cache'), '--report', existing]);
    assert.equal(again.code, 2, again.stderr);
    assert.match(again.stderr, /already exists/);
    assert.equal(await readFile(existing, 'utf8'), 'old evidence\n');
    const forced = await runAirlock(['verify', fx.bundle, ...trust(), '--report', existing, '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal(JSON.parse(await readFile(existing, 'utf8')).result, 'verified');
    const dash = await runAirlock(['verify', fx.bundle, ...trust(), '--report', '-']);
    assert.equal(dash.code, 0, dash.stderr);
    assert.equal(JSON.parse(dash.stdout).record, 'model-airlock-verification');
    assert.match(dash.stderr, /Verified/, 'the human summary moves to stderr');
  });
});

describe('no cache yet', () => {
  test('cache list / verify say "nothing imported yet"; inventory is empty and valid, and a delta export accepts it', async () => {
    const none = join(fx.dir, 'never-imported');
    const list = await runAirlock(['cache', 'list', '--cache-dir', none]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /nothing imported yet/);
    const verify = await runAirlock(['cache', 'verify', '--cache-dir', none]);
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stdout, /nothing imported yet/);
    const have = fresh('have.json');
    const inv = await runAirlock(['cache', 'inventory', '--cache-dir', none, '--out', have]);
    assert.equal(inv.code, 0, inv.stderr);
    assert.match(inv.stdout, /nothing imported yet/);
    assert.deepEqual(JSON.parse(await readFile(have, 'utf8')).repos, []);
    const delta = await runAirlock(['export', 'acme/tiny-llm', '--have', have, '--allow-unsigned-have', '--sign-key', fx.privateKey, '-o', fresh('d.airlock.tar')], { env: fx.env });
    assert.equal(delta.code, 0, delta.stderr);
  });
});

describe('progress and --quiet', () => {

  test('on a terminal: verify and import show bytes, files, rate and ETA', async () => {
    for (const args of [['verify', fx.bundle, ...trust()], ['import', fx.bundle, ...trust(), '--cache-dir', fresh('cache')]]) {
      const r = await runAirlockOnTerminal(args);
      assert.equal(r.code, 0, r.text);
      assert.match(r.text, /total [\d.]+ \S+ \/ [\d.]+ KiB \(\d+%\)\s+\d+\/8 files\s+\S+ \S+\/s\s+ETA/, `${args[0]}: ${r.text}`);
      assert.match(r.text, /\x1b\[\d+A\x1b\[0J/, 'redrawn in place');
    }
  });

  test('piped: no progress; --quiet: the one verdict line and nothing else, also on a terminal', async () => {
    const piped = await runAirlock(['verify', fx.bundle, ...trust()]);
    assert.equal(piped.code, 0);
    assert.doesNotMatch(piped.stderr, /total .* files/);
    const quiet = await runAirlock(['verify', fx.bundle, ...trust(), '--quiet']);
    assert.equal(quiet.code, 0);
    assert.equal(quiet.stderr, '');
    assert.match(quiet.stdout, new RegExp(`^Verified \\S+: 8 files, [\\d.]+ KiB, signed by ${fingerprint}\\n$`));
    const quietImport = await runAirlock(['import', fx.bundle, ...trust(), '--cache-dir', fresh('cache'), '--quiet']);
    assert.equal(quietImport.code, 0);
    assert.equal(quietImport.stderr, '');
    assert.match(quietImport.stdout, /^Imported \S+ into \S+: 8 files, [\d.]+ KiB\n$/);
    const quietTty = await runAirlockOnTerminal(['verify', fx.bundle, ...trust(), '--quiet']);
    assert.equal(quietTty.code, 0);
    assert.match(quietTty.text, /^Verified \S+: 8 files, [^\n]*\r?\n$/, JSON.stringify(quietTty.text));
  });
});

describe('one fingerprint format', () => {
  test('inspect shows the full fingerprint, which --trusted-fingerprint accepts', async () => {
    const r = await runAirlock(['inspect', fx.bundle]);
    assert.equal(r.code, 0, r.stderr);
    const spaced = fingerprint.replace(/(.{4})/g, '$1 ').trim();
    assert.ok(r.stdout.includes(`signed by ${spaced}`), r.stdout);
    const v = await runAirlock(['verify', fx.bundle, ...trust(), '--trusted-fingerprint', spaced.replace(/ /g, '')]);
    assert.equal(v.code, 0, v.stderr);
  });
});
