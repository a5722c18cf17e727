/**
 * `airlock export` keeps its word (issue 14): one export per output at a time (two real processes),
 * split sizes checked before any download, part names that `cat NAME.tar.*` joins in order past 1,000
 * parts, no stale parts after a resume with another --split-size, `-o DIR/`, every output path checked
 * before the first download, and Ctrl-C / SIGTERM reported as E_INTERRUPTED with exit 130.
 *
 * Everything is synchronised on observable state — the lock file, the partial bundle's progress slots,
 * the hub's request log — never on time: the hub is held still with its `stallAtBytes` hook wherever a
 * process must be caught mid-download.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHubServer, type HubServer } from '../support/hub-server.ts';
import { airlockBin, cleanEnv, repoRoot, run, runAirlock } from '../support/cli.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';
import { readPartialProgress } from '../../src/export/bundle-file.ts';
import { exportBundle, outputLockPath } from '../../src/export/exporter.ts';
import { createHuggingFaceClient } from '../../src/hub/huggingface/client.ts';
import { isAirlockError } from '../../src/errors.ts';

const MiB = 1024 * 1024;
let hub: HubServer;
let dir: string;

const env = () => ({ HF_ENDPOINT: hub.endpoint, AIRLOCK_RETRY_BASE_MS: '10' });
/** Requests that fetch file content (resolve on the hub, or the CDN). */
const contentRequests = (from: number) => hub.requests.slice(from).filter((r) => r.url.includes('/resolve/') || r.url.includes('/resolve-cache/') || r.host === '127.0.0.2');

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-export-cli-'));
  hub = await startHubServer();
  await hub.addRepo({
    id: 'acme/big',
    files: [
      { path: 'config.json', data: '{"model_type":"llama"}\n' },
      { path: 'model.safetensors', data: safetensorsOf(randomBytes(6 * MiB)) },
    ],
  });
  await hub.addRepo({ id: 'acme/tiny', files: [{ path: 'config.json', data: '{"tiny":true}\n' }, { path: 'weights.bin', data: randomBytes(20_000) }] });
});

after(async () => {
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

interface Running {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
  signal: () => NodeJS.Signals | null;
  done: () => boolean;
}

function start(args: string[]): Running {
  const child = spawn(process.execPath, [airlockBin, ...args], { cwd: repoRoot, env: cleanEnv(env()), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let finished = false;
  let signal: NodeJS.Signals | null = null;
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code, sig) => {
      finished = true;
      signal = sig;
      resolve(code);
    }),
  );
  return { child, stdout: () => stdout, stderr: () => stderr, exited, signal: () => signal, done: () => finished };
}

/** Polls `condition` (observable state) until it holds; fails if the process ended first. */
async function until(running: Running, what: string, condition: () => Promise<boolean>): Promise<void> {
  while (!(await condition())) {
    assert.ok(!running.done(), `the export ended before ${what}: ${running.stderr()}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Whether the lock (a symlink whose target is the owner's tag, not a file) is there. */
async function locked(out: string): Promise<boolean> {
  return lstat(outputLockPath(out)).then(() => true, () => false);
}

/** Bytes the partial bundle holds (its progress slots), summed over entries. */
async function keptIn(partial: string, entries: number): Promise<number> {
  return (await readPartialProgress(partial, entries)).reduce((n, e) => n + e.kept, 0);
}

/**
 * An export of acme/big held mid-download: the hub stalls after 1 MiB of content, and the shard
 * (model.safetensors, entry 1 in bundle order) has bytes on disk.
 */
async function startHeld(args: string[], partial: string): Promise<Running> {
  hub.setFaults({ stallAtBytes: hub.contentBytesServed + 1 * MiB });
  const running = start(args);
  await until(running, 'shard bytes reached the partial bundle', async () => ((await readPartialProgress(partial, 2))[1]?.kept ?? 0) > 0);
  return running;
}

describe('one export per output at a time', () => {
  test('a second export to the same -o is refused with the first one\'s pid; the first finishes a good bundle', async () => {
    const out = join(dir, 'cy.tar');
    const args = ['export', 'acme/big', '--unsigned', '-o', out];
    let first: Running | undefined;
    try {
      first = await startHeld(args, `${out}.partial`);
      const holder = await readlink(outputLockPath(out));
      assert.match(holder, new RegExp(`^[0-9a-f]{8}-${first.child.pid}-`), 'the lock names the first process');
      const from = hub.requests.length;
      const second = await runAirlock(args, { env: env() });
      assert.equal(second.code, 5, second.stderr);
      assert.match(second.stderr, new RegExp(`another export \\(pid ${first.child.pid}\\) is writing ${out.replace(/[.]/g, '\\.')}`));
      assert.match(second.stderr, /hint: wait for it to finish, or choose another -o/);
      assert.match(second.stderr, /\(E_OUTPUT_BUSY, exit 5\)/);
      assert.equal(hub.requests.length, from, 'the second export asked the hub nothing');
      // identical arguments but --force: still refused, never a rename race
      const forced = await runAirlock([...args, '--force', '--json'], { env: env() });
      assert.equal(forced.code, 5);
      assert.equal(JSON.parse(forced.stdout).error.code, 'E_OUTPUT_BUSY');
    } finally {
      hub.setFaults({});
    }
    assert.equal(await first.exited, 0, first.stderr());
    assert.match(first.stdout(), /Wrote .*cy\.tar/);
    assert.ok(!(await locked(out)), 'the lock is gone after the export');
    const verify = await runAirlock(['verify', out, '--allow-unsigned']);
    assert.equal(verify.code, 0, verify.stderr);
  });

  test('two exports sharing a --work-dir: the second is refused, naming the work dir', async () => {
    const work = join(dir, 'shared-work');
    let first: Running | undefined;
    try {
      first = await startHeld(['export', 'acme/big', '--unsigned', '-o', join(dir, 'w1.tar'), '--work-dir', work], join(dir, 'w1.tar.partial'));
      const second = await runAirlock(['export', 'acme/big', '--unsigned', '-o', join(dir, 'w2.tar'), '--work-dir', work], { env: env() });
      assert.equal(second.code, 5, second.stderr);
      assert.match(second.stderr, new RegExp(`another export \\(pid ${first.child.pid}\\) is using the work dir ${work}`));
      assert.ok(!existsSync(join(dir, 'w2.tar.partial')), 'the refused export wrote nothing');
    } finally {
      hub.setFaults({});
    }
    assert.equal(await first.exited, 0, first.stderr());
  });

  test('a lock left by a process that died (kill -9) is taken over', async () => {
    const out = join(dir, 'after-kill.tar');
    const args = ['export', 'acme/tiny', '--unsigned', '-o', out];
    hub.setFaults({ stallAtBytes: hub.contentBytesServed });
    try {
      const victim = start(args);
      await until(victim, 'the lock was taken', async () => (await locked(out)) && existsSync(`${out}.partial`));
      victim.child.kill('SIGKILL');
      await victim.exited;
    } finally {
      hub.setFaults({});
    }
    assert.ok(await locked(out), 'kill -9 left the lock behind');
    const r = await runAirlock(args, { env: env() });
    assert.equal(r.code, 0, r.stderr);
  });
});

describe('split sizes and part names', () => {
  test('--split-size below 1 MiB is refused at once (exit 2, hint), before asking the hub anything', async () => {
    for (const size of ['1', '1000KB']) {
      const from = hub.requests.length;
      const r = await runAirlock(['export', 'acme/tiny', '--unsigned', '--split-size', size, '-o', join(dir, 'tiny-split.tar')], { env: env() });
      assert.equal(r.code, 2, `${size}: ${r.stderr}`);
      assert.match(r.stderr, /--split-size must be at least 1 MiB \(1048576 bytes\)/);
      assert.match(r.stderr, /hint: .*3\.9GiB/);
      assert.equal(hub.requests.length, from, 'nothing was asked of the hub');
    }
    const ok = await runAirlock(['export', 'acme/tiny', '--unsigned', '--split-size', '1MiB', '-o', join(dir, 'tiny-split.tar')], { env: env() });
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(existsSync(join(dir, 'tiny-split.tar.000')));
    // the same rule in a spec file
    const spec = join(dir, 'small-split.yaml');
    await writeFile(spec, ['splitSize: 65536', 'repos:', '  - id: acme/tiny', ''].join('\n'));
    const fromSpec = await runAirlock(['export', '--spec', spec, '--unsigned', '-o', join(dir, 'spec-split.tar')], { env: env() });
    assert.equal(fromSpec.code, 2, fromSpec.stderr);
    assert.match(fromSpec.stderr, /splitSize/);
  });

  test('more parts than 10,000 is refused once the sizes are known, before the first download', async () => {
    const client = createHuggingFaceClient({ endpoint: hub.endpoint });
    const from = hub.requests.length;
    await assert.rejects(
      exportBundle({ client, repos: [{ type: 'model', id: 'acme/big', revision: 'main' }], include: [], exclude: [], outPath: join(dir, 'many.tar'), workDir: join(dir, 'many.tar.work'), signer: undefined, splitSize: 512 }),
      (e: unknown) => {
        assert.ok(isAirlockError(e, 'E_USAGE'), String(e));
        assert.match(e.message, /--split-size 512 would cut this \d+-byte bundle into \d+ parts, more than the 10000 allowed/);
        assert.match(e.hint ?? '', /at least \d+ bytes/);
        return true;
      },
    );
    assert.equal(contentRequests(from).length, 0, 'no file was downloaded');
    assert.ok(!existsSync(join(dir, 'many.tar.000.partial')), 'no part was created');
  });

  test('more than 1,000 parts: fixed-width names, `cat NAME.tar.*` joins them in order, verify reads them from .0000', async () => {
    // 4 KiB parts (below the CLI's 1 MiB minimum, which applies to what users type) keep this fast:
    // acme/big's 6 MiB bundle gives > 1,500 parts, written by the real in-place writer.
    const out = join(dir, 'wide', 'wide.airlock.tar');
    await mkdir(join(dir, 'wide'));
    const client = createHuggingFaceClient({ endpoint: hub.endpoint });
    const result = await exportBundle({ client, repos: [{ type: 'model', id: 'acme/big', revision: 'main' }], include: [], exclude: [], outPath: out, workDir: `${out}.work`, signer: undefined, splitSize: 4096 });
    const index = result.bundle.parts!;
    assert.ok(index.parts.length > 1000, `${index.parts.length} parts`);
    const names = (await readdir(join(dir, 'wide'))).filter((n) => n.startsWith('wide.airlock.tar.'));
    assert.equal(names.length, index.parts.length);
    assert.ok(names.every((n) => /\.tar\.\d{4}$/.test(n)), 'every name has 4 digits');
    assert.deepEqual(index.parts.map((p) => p.name), [...names].sort());
    assert.equal(index.parts[0]!.name, 'wide.airlock.tar.0000');
    // the documented join, through a real shell glob
    const cat = await run('sh', ['-c', 'cat wide.airlock.tar.* | sha256sum'], { cwd: join(dir, 'wide') });
    assert.equal(cat.code, 0, cat.stderr);
    assert.equal(cat.stdout.split(' ')[0], index.sha256, 'the glob joins the parts in order');
    for (const first of [join(dir, 'wide', 'wide.airlock.tar.0000'), join(dir, 'wide', 'wide.airlock.parts.json'), join(dir, 'wide')]) {
      const verify = await runAirlock(['verify', first, '--allow-unsigned']);
      assert.equal(verify.code, 0, `${first}: ${verify.stderr}`);
    }
  });

  test('a resume with another --split-size leaves no stale parts for the glob to pick up', async () => {
    const out = join(dir, 'resplit', 'r.airlock.tar');
    await mkdir(join(dir, 'resplit'));
    let first: Running | undefined;
    try {
      first = await startHeld(['export', 'acme/big', '--unsigned', '--split-size', '1MiB', '-o', out], `${out}.000.partial`);
      first.child.kill('SIGKILL');
      await first.exited;
    } finally {
      hub.setFaults({});
    }
    const before = (await readdir(join(dir, 'resplit'))).filter((n) => n.endsWith('.partial'));
    assert.ok(before.includes('r.airlock.tar.006.partial'), `the killed run left 7 partial parts: ${before.join(' ')}`);
    const r = await runAirlock(['export', 'acme/big', '--unsigned', '--split-size', '4MiB', '-o', out], { env: env() });
    assert.equal(r.code, 0, r.stderr);
    const names = (await readdir(join(dir, 'resplit'))).sort();
    assert.deepEqual(names.filter((n) => n.includes('partial')), [], 'no partial part is left');
    assert.deepEqual(names.filter((n) => n.startsWith('r.airlock.tar.')), ['r.airlock.tar.000', 'r.airlock.tar.001']);
    const index = JSON.parse(await readFile(join(dir, 'resplit', 'r.airlock.parts.json'), 'utf8'));
    const cat = await run('sh', ['-c', 'cat r.airlock.tar.* | sha256sum'], { cwd: join(dir, 'resplit') });
    assert.equal(cat.stdout.split(' ')[0], index.sha256);
    const verify = await runAirlock(['verify', out + '.000', '--allow-unsigned']);
    assert.equal(verify.code, 0, verify.stderr);
  });
});

describe('-o: folders and output paths', () => {
  test('-o naming an existing folder, or DIR/, writes <name>.airlock.tar inside it; a missing parent is created', async () => {
    const existing = join(dir, 'out-existing');
    await mkdir(existing);
    const a = await runAirlock(['export', 'acme/tiny', '--unsigned', '-o', existing], { env: env() });
    assert.equal(a.code, 0, a.stderr);
    assert.ok((await lstat(join(existing, 'tiny.airlock.tar'))).isFile());
    // --force on an existing folder: the same (it used to download everything, then fail with EISDIR)
    const forced = await runAirlock(['export', 'acme/tiny', '--unsigned', '--force', '-o', existing], { env: env() });
    assert.equal(forced.code, 0, forced.stderr);
    const slash = await runAirlock(['export', 'acme/tiny', '--unsigned', '-o', `${join(dir, 'new-folder')}/`], { env: env() });
    assert.equal(slash.code, 0, slash.stderr);
    assert.ok(existsSync(join(dir, 'new-folder', 'tiny.airlock.tar')));
    const deep = await runAirlock(['export', 'acme/tiny', '--unsigned', '-o', join(dir, 'not', 'yet', 'x.tar')], { env: env() });
    assert.equal(deep.code, 0, deep.stderr);
    assert.ok(existsSync(join(dir, 'not', 'yet', 'x.tar')));
  });

  test("a spec's `output: out/…` is created next to the spec (the docs' own example)", async () => {
    const specDir = join(dir, 'spec-out');
    await mkdir(specDir);
    await writeFile(join(specDir, 'airlock.yaml'), ['output: out/bundle.airlock.tar', 'repos:', '  - id: acme/tiny', ''].join('\n'));
    const r = await runAirlock(['export', '--spec', join(specDir, 'airlock.yaml'), '--unsigned'], { env: env() });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(existsSync(join(specDir, 'out', 'bundle.airlock.tar')));
  });

  test('an output path that is a folder is refused before the first download, even with --force, and nothing is left', async () => {
    const place = join(dir, 'blocked');
    await mkdir(join(place, 'b.airlock.parts.json'), { recursive: true });
    await writeFile(join(place, 'b.airlock.tar.000'), 'old part');
    const from = hub.requests.length;
    const r = await runAirlock(['export', 'acme/tiny', '--unsigned', '--force', '--split-size', '1MiB', '-o', join(place, 'b.airlock.tar')], { env: env() });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /b\.airlock\.parts\.json exists and is not a regular file/);
    assert.equal(contentRequests(from).length, 0, 'nothing was downloaded');
    assert.deepEqual((await readdir(place)).sort(), ['b.airlock.parts.json', 'b.airlock.tar.000']);
  });
});

describe('signals: Ctrl-C and SIGTERM as documented', () => {
  for (const [signal, json] of [['SIGINT', false], ['SIGTERM', false], ['SIGINT', true]] as const) {
    test(`${signal}${json ? ' with --json' : ''} mid-download: E_INTERRUPTED, exit 130; a re-run resumes`, async () => {
      const out = join(dir, `sig-${signal}-${json}.tar`);
      const args = ['export', 'acme/big', '--unsigned', '-o', out, ...(json ? ['--json'] : [])];
      let running: Running | undefined;
      try {
        running = await startHeld(args, `${out}.partial`);
        running.child.kill(signal);
        assert.equal(await running.exited, 130, running.stderr());
      } finally {
        hub.setFaults({});
      }
      assert.equal(running.signal(), null, 'exited by itself, not killed by the signal');
      assert.match(running.stderr(), new RegExp(`airlock: error: interrupted \\(${signal}\\)`));
      assert.match(running.stderr(), /hint: the partial bundle .*\.partial\) keeps what was downloaded: run the same export again to resume/);
      assert.match(running.stderr(), /\(E_INTERRUPTED, exit 130\)/);
      if (json) {
        const parsed = JSON.parse(running.stdout());
        assert.equal(parsed.ok, false);
        assert.equal(parsed.error.code, 'E_INTERRUPTED');
        assert.equal(parsed.error.exitCode, 130);
      }
      assert.ok(!(await locked(out)), 'the lock was released');
      const kept = await keptIn(`${out}.partial`, 2);
      assert.ok(kept > 0, 'the partial bundle keeps what arrived');
      const again = await runAirlock(args.filter((a) => a !== '--json'), { env: env() });
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stderr, /resuming, /);
      const verify = await runAirlock(['verify', out, '--allow-unsigned']);
      assert.equal(verify.code, 0, verify.stderr);
    });
  }
});
