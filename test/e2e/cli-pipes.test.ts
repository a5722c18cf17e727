/**
 * The CLI and pipes (issue 14, items 2 and 8), with real pipes and real signals:
 *   - `airlock … | head -1`: a reader that goes away never crashes the CLI with an EPIPE stack trace,
 *     and the exit status is the work's (an import still commits; a bad bundle still exits 3);
 *   - `import` reads a bundle from standard input (`-`), `/dev/stdin`, `<(cat b.tar)` and a named FIFO,
 *     in one pass like verify;
 *   - SIGINT/SIGTERM stop an import that waits on a FIFO (no writer yet, or a writer gone silent):
 *     E_INTERRUPTED, exit 130, the JSON error object, and the cache untouched.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import { copyFile, open, readdir, readFile, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { cachedRepos, exited, importedConfig, makeCliFixture, REPO, spawnAirlock, type CliFixture } from '../support/cli-fixture.ts';
import { run } from '../support/cli.ts';

let fx: CliFixture;
before(async () => {
  fx = await makeCliFixture('pipes');
});
after(async () => {
  await fx?.close();
});

let serial = 0;
const fresh = (name: string): string => join(fx.dir, `${name}-${++serial}`);

/**
 * The write end of a real pipe (a FIFO) whose reader has already gone away — what `| head -1` leaves
 * once head exited. Every write to it fails with EPIPE, from the first byte on.
 */
function pipeWithoutReader(): number {
  const fifo = fresh('closed.fifo');
  execFileSync('mkfifo', [fifo]);
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const writer = openSync(fifo, constants.O_WRONLY);
  closeSync(reader);
  return writer;
}

async function withClosedStdout(args: string[], env: Record<string, string> = {}, closeStderr = false) {
  const stdout = pipeWithoutReader();
  const stderr = closeStderr ? pipeWithoutReader() : 'pipe';
  const child = spawnAirlock(args, ['ignore', stdout, stderr], env);
  closeSync(stdout);
  if (typeof stderr === 'number') closeSync(stderr);
  return exited(child);
}

function assertNoCrash(stderr: string): void {
  assert.doesNotMatch(stderr, /EPIPE|Unhandled|node:events|at .*\.js:\d+/, `no stack trace: ${stderr}`);
}

describe('a reader that goes away (| head -1)', () => {
  test('verify, inspect and keys list finish with exit 0 and no stack trace', async () => {
    for (const args of [
      ['verify', fx.bundle, '--trusted-keys', fx.publicKey],
      ['verify', fx.bundle, '--trusted-keys', fx.publicKey, '--json'],
      ['inspect', fx.bundle],
      ['keys', 'list', fx.publicKey, fx.privateKey],
    ]) {
      const r = await withClosedStdout(args);
      assertNoCrash(r.stderr);
      assert.equal(r.signal, null, args.join(' '));
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    }
  });

  test('import still commits and exits 0, with stdout and stderr both gone', async () => {
    const cache = fresh('cache');
    const r = await withClosedStdout(['import', fx.bundle, '--trusted-keys', fx.publicKey, '--cache-dir', cache], {}, true);
    assert.equal(r.code, 0);
    assert.match(await importedConfig(cache), /model_type/);
  });

  test('the exit status is the work’s: a damaged bundle still exits 3', async () => {
    const damaged = fresh('damaged.airlock.tar');
    await copyFile(fx.bundle, damaged);
    await truncate(damaged, (await stat(damaged)).size - 5000);
    const r = await withClosedStdout(['verify', damaged, '--trusted-keys', fx.publicKey]);
    assertNoCrash(r.stderr);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /E_/);
  });

  test('export writes its bundle and exits 0', async () => {
    const out = fresh('exported.airlock.tar');
    const r = await withClosedStdout(['export', REPO, '--sign-key', fx.privateKey, '-o', out], fx.env, true);
    assert.equal(r.code, 0);
    assert.ok((await stat(out)).size > 0);
  });

  test('a real shell pipeline: airlock keys list … | head -1', async () => {
    const r = await run('bash', ['-c', `node bin/airlock.js keys list "$1" "$2" | head -1; exit "\${PIPESTATUS[0]}"`, 'sh', fx.publicKey, fx.privateKey]);
    assertNoCrash(r.stderr);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^(pub|sec) /);
  });
});

describe('import from a pipe', () => {
  const trust = (): string[] => ['--trusted-keys', fx.publicKey];

  test('`-`: the bundle piped into standard input', async () => {
    const cache = fresh('cache');
    const child = spawnAirlock(['import', '-', ...trust(), '--cache-dir', cache, '--json'], ['pipe', 'pipe', 'pipe']);
    child.stdin!.end(await readFile(fx.bundle));
    const r = await exited(child);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).ok, true);
    assert.match(await importedConfig(cache), /model_type/);
  });

  test('`cat b.tar | airlock import /dev/stdin`, `import <(cat b.tar)`, `import - < b.tar` (real shell pipes)', async () => {
    for (const [label, script] of [
      ['/dev/stdin', 'cat "$1" | node bin/airlock.js import /dev/stdin --trusted-keys "$2" --cache-dir "$3"'],
      ['process substitution', 'node bin/airlock.js import <(cat "$1") --trusted-keys "$2" --cache-dir "$3"'],
      ['- from a pipe', 'cat "$1" | node bin/airlock.js import - --trusted-keys "$2" --cache-dir "$3"'],
      ['- from a redirected file', 'node bin/airlock.js import - --trusted-keys "$2" --cache-dir "$3" < "$1"'],
    ] as const) {
      const cache = fresh('cache');
      const r = await run('bash', ['-c', script, 'sh', fx.bundle, fx.publicKey, cache]);
      assert.equal(r.code, 0, `${label}: ${r.stderr}`);
      assert.match(await importedConfig(cache), /model_type/, label);
    }
  });

  test('a named FIFO, opened before the writer comes', async () => {
    const fifo = fresh('bundle.fifo');
    execFileSync('mkfifo', [fifo]);
    const cache = fresh('cache');
    const child = spawnAirlock(['import', fifo, ...trust(), '--cache-dir', cache], ['ignore', 'pipe', 'pipe']);
    const done = exited(child);
    // the writer's open returns once the import opened the FIFO for reading
    const writer = await open(fifo, 'w');
    await writer.writeFile(await readFile(fx.bundle));
    await writer.close();
    const r = await done;
    assert.equal(r.code, 0, r.stderr);
    assert.match(await importedConfig(cache), /model_type/);
  });

  test('--report from a pipe: the record is written, with the sha256 of what was read', async () => {
    const cache = fresh('cache');
    const report = fresh('report.json');
    const r = await run('bash', ['-c', 'cat "$1" | node bin/airlock.js import - --trusted-keys "$2" --cache-dir "$3" --report "$4"', 'sh', fx.bundle, fx.publicKey, cache, report]);
    assert.equal(r.code, 0, r.stderr);
    const record = JSON.parse(await readFile(report, 'utf8'));
    const sha = execFileSync('sha256sum', [fx.bundle], { encoding: 'utf8' }).split(' ')[0];
    assert.equal(record.bundle.sha256, sha);
    assert.equal(record.cacheDir, cache);
  });
});

/** Whether a thread of `pid` sleeps in the kernel's FIFO open, waiting for a writer. */
async function waitsForWriter(pid: number): Promise<boolean> {
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  for (const task of tasks) {
    const wchan = await readFile(`/proc/${pid}/task/${task}/wchan`, 'utf8').catch(() => '');
    if (wchan.includes('wait_for_partner')) return true;
  }
  return false;
}

describe('signals while import waits on a FIFO', () => {
  test('SIGINT while no writer has come yet: E_INTERRUPTED, exit 130, JSON error, nothing created', async () => {
    const fifo = fresh('silent.fifo');
    execFileSync('mkfifo', [fifo]);
    const cache = fresh('cache');
    const child = spawnAirlock(['import', fifo, '--trusted-keys', fx.publicKey, '--cache-dir', cache, '--json'], ['ignore', 'pipe', 'pipe']);
    const done = exited(child);
    // synchronise on the kernel's own state: the import is blocked opening the FIFO
    while (!(await waitsForWriter(child.pid!))) await new Promise((resolve) => setImmediate(resolve));
    child.kill('SIGINT');
    const r = await done;
    assert.equal(r.signal, null, 'handled, not killed by the signal');
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /E_INTERRUPTED/);
    assert.equal(JSON.parse(r.stdout).error.code, 'E_INTERRUPTED');
    assert.deepEqual(await cachedRepos(cache), []);
  });

  test('verify too: SIGTERM while waiting for a writer → E_INTERRUPTED, exit 130', async () => {
    const fifo = fresh('verify.fifo');
    execFileSync('mkfifo', [fifo]);
    const child = spawnAirlock(['verify', fifo, '--trusted-keys', fx.publicKey, '--json'], ['ignore', 'pipe', 'pipe']);
    const done = exited(child);
    while (!(await waitsForWriter(child.pid!))) await new Promise((resolve) => setImmediate(resolve));
    child.kill('SIGTERM');
    const r = await done;
    assert.equal(r.signal, null, 'handled, not killed by the signal');
    assert.equal(r.code, 130, r.stderr);
    assert.equal(JSON.parse(r.stdout).error.code, 'E_INTERRUPTED');
  });

  test('SIGTERM while the writer is connected but silent: E_INTERRUPTED, exit 130, cache untouched', async () => {
    const fifo = fresh('stalled.fifo');
    execFileSync('mkfifo', [fifo]);
    const cache = fresh('cache');
    const child = spawnAirlock(['import', fifo, '--trusted-keys', fx.publicKey, '--cache-dir', cache], ['ignore', 'pipe', 'pipe']);
    const done = exited(child);
    const writer = await open(fifo, 'w'); // returns once the import is reading the FIFO
    try {
      await writer.write((await readFile(fx.bundle)).subarray(0, 10_000)); // the start, then silence
      child.kill('SIGTERM');
      const r = await done;
      assert.equal(r.signal, null, 'handled, not killed by the signal');
      assert.equal(r.code, 130, r.stderr);
      assert.match(r.stderr, /interrupted \(SIGTERM\)/);
      assert.deepEqual(await cachedRepos(cache), []);
    } finally {
      await writer.close();
    }
  });
});
