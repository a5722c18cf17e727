/**
 * Crash safety of `airlock import` (issue 7 §4), with the real CLI code (dist/) in a child process:
 *
 *   - kill -9 before EVERY file-system mutation the import makes (staging, blobs, the snapshot folder,
 *     refs, cleanup), found by tracing a clean run, and at several points by bytes staged;
 *   - after each kill: the files that were there are untouched, `refs/main` names the old or the new
 *     commit, a new snapshot folder is either absent or complete, and the REAL huggingface_hub
 *     `scan_cache_dir()` reports nothing, while `snapshot_download(local_files_only=True)` of the new
 *     commit either fails cleanly or returns every file;
 *   - a re-run then completes, removes the dead import's staging, and gives exactly the tree a clean
 *     import gives;
 *   - SIGINT / SIGTERM (during staging and during the commit) → exit 130 with a clear message, the cache
 *     unchanged and the staging directory removed.
 *
 * The child patches node:fs/promises (syncBuiltinESMExports) to count mutations; it never changes what
 * the import does, only when the process dies. (Export-side kill/resume is covered by the export tests.)
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildBundle, makeTestKey, manifestFile, type BuilderRepo, type TestKey } from '../support/bundle-builder.ts';
import { formatTree, snapshotTree, stagingLeftovers, type TreeEntry } from '../support/cache-snapshot.ts';
import { assertVenv, runPython } from '../support/python.ts';
import { repoRoot } from '../support/cli.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';

const DIST_MAIN = join(repoRoot, 'dist', 'cli', 'main.js');

/** The child: patches fs mutations to count (and die at) them, then runs the CLI's main(). */
const RUNNER = `
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { appendFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
const require = createRequire(import.meta.url);
const fsp = require('node:fs/promises');
const env = process.env;
const killAt = Number(env.KILL_AT_OP || 0);
const pauseAt = Number(env.PAUSE_AT_OP || 0);
const killAtBytes = Number(env.KILL_AT_BYTES || 0);
const slowWrites = Number(env.SLOW_WRITES_MS || 0);
let ops = 0;
let bytes = 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function op(name, args) {
  ops += 1;
  const paths = args.slice(0, name === 'writeFile' ? 1 : 2).filter((a) => typeof a === 'string' || a instanceof URL);
  const what = name + '\\t' + paths.map((a) => String(a).replace(/[\\t\\n]/g, ' ')).join(' -> ');
  if (env.TRACE_FILE) appendFileSync(env.TRACE_FILE, ops + '\\t' + what + '\\n');
  if (ops === killAt) process.kill(process.pid, 'SIGKILL');
  if (ops === pauseAt) {
    writeFileSync(env.PAUSE_FILE, what);
    // held until a signal arrives (the importer's own handlers see it too)
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 60_000);
      for (const s of ['SIGINT', 'SIGTERM']) process.once(s, () => { clearTimeout(timer); setImmediate(resolve); });
    });
  }
}
for (const name of ['mkdir', 'rename', 'symlink', 'link', 'unlink', 'rmdir', 'rm', 'writeFile']) {
  const original = fsp[name];
  fsp[name] = async function (...args) {
    await op(name, args);
    return original.apply(this, args);
  };
}
const open = fsp.open;
fsp.open = async function (path, flags, mode) {
  if (typeof flags === 'string' && /[wax+]/.test(flags)) await op('open', [String(path)]);
  return open.call(this, path, flags, mode);
};
syncBuiltinESMExports();
const probe = await open(process.argv[1], 'r');
const FileHandle = Object.getPrototypeOf(probe);
await probe.close();
const write = FileHandle.write;
FileHandle.write = async function (buffer, offset, length, ...rest) {
  if (Buffer.isBuffer(buffer)) {
    const n = typeof length === 'number' ? length : buffer.byteLength - (offset || 0);
    if (killAtBytes > 0 && bytes + n >= killAtBytes) process.kill(process.pid, 'SIGKILL');
    bytes += n;
    if (env.TRACE_FILE) appendFileSync(env.TRACE_FILE, 'bytes\\t' + bytes + '\\n');
    if (slowWrites > 0) {
      if (env.PAUSE_FILE) writeFileSync(env.PAUSE_FILE, 'staging');
      await sleep(slowWrites);
    }
  }
  return write.call(this, buffer, offset, length, ...rest);
};
const { main } = await import(pathToFileURL(env.AIRLOCK_MAIN).href);
process.exitCode = await main(process.argv.slice(0, 2).concat(JSON.parse(env.AIRLOCK_ARGS)));
`;

let dir: string;
let key: TestKey;
let runner: string;
let bundle: string;
let pub: string;
interface Scenario {
  name: string;
  repos: BuilderRepo[];
  /** the commit refs/main names before the import, if any */
  oldCommit: string | undefined;
  resident: string;
  cleanTree: string;
}
const scenarios: Scenario[] = [];

const OLD: BuilderRepo = {
  id: 'acme/crashy',
  revision: 'main',
  commit: '1111111111111111111111111111111111111111',
  files: [
    { path: 'config.json', data: '{"model_type": "llama"}\n' },
    { path: 'old.txt', data: 'the old revision\n' },
  ],
};
const NEW: BuilderRepo = {
  id: 'acme/crashy',
  revision: 'main',
  commit: '2222222222222222222222222222222222222222',
  files: [
    { path: 'config.json', data: '{"model_type": "llama"}\n' }, // shared blob with OLD
    { path: 'tokenizer.json', data: '{"version": "2"}\n' },
    { path: 'sub/dir/vocab.txt', data: 'hello\nworld\n' },
    { path: 'model.safetensors', data: safetensorsOf(Buffer.alloc(2_500_000, 0x42)), lfs: true },
    { path: 'shard-2.safetensors', data: safetensorsOf(Buffer.alloc(1_500_000, 0x43)), lfs: true },
  ],
};
const OTHER: BuilderRepo = { id: 'acme/bystander', files: [{ path: 'config.json', data: '{"other": 1}\n' }] };

function runChild(cache: string, env: Record<string, string>): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> & { child: ReturnType<typeof spawn> } {
  const args = ['import', bundle, '--trusted-keys', pub, '--cache-dir', cache, '--json'];
  const child = spawn(process.execPath, [runner], {
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '/tmp', AIRLOCK_MAIN: DIST_MAIN, AIRLOCK_ARGS: JSON.stringify(args), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return Object.assign(done, { child });
}

async function freshCache(name: string, scenario: Scenario = scenarios[0]!): Promise<string> {
  const cache = join(dir, name);
  await cp(scenario.resident, cache, { recursive: true, verbatimSymlinks: true });
  return cache;
}

/** Without .locks (which holds staging and, after a kill, nothing the scanner reads). */
function withoutLocks(tree: TreeEntry[] | null): TreeEntry[] {
  return (tree ?? []).filter((e) => e.path !== '.locks' && !e.path.startsWith('.locks/'));
}

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

/** The invariants that must hold whenever the importer died, whatever the moment. */
async function assertConsistent(cache: string, residentTree: TreeEntry[], oldCommit: string | undefined, label: string): Promise<void> {
  const tree = withoutLocks(await snapshotTree(cache));
  // 1. everything that was there is byte-for-byte still there (only additions are allowed)
  for (const before of residentTree) {
    if (before.type === 'dir') continue;
    const now = tree.find((e) => e.path === before.path);
    if (before.path.endsWith('/refs/main')) continue; // checked below: old or new
    assert.deepEqual(now, before, `${label}: ${before.path} changed`);
  }
  const folder = join(cache, 'models--acme--crashy');
  // 2. refs/main names the old or the new commit, nothing else
  const ref = await readFile(join(folder, 'refs', 'main'), 'latin1').catch(() => undefined);
  assert.ok(ref === oldCommit || ref === NEW.commit, `${label}: refs/main = ${JSON.stringify(ref)}`);
  // 3. a new snapshot folder is absent or complete, with the verified bytes
  const snap = join(folder, 'snapshots', NEW.commit!);
  if (ref === NEW.commit) assert.ok(existsSync(snap), `${label}: refs/main names a missing snapshot`);
  if (existsSync(snap)) {
    for (const file of NEW.files) {
      const content = await readFile(join(snap, file.path)).catch(() => undefined);
      assert.ok(content !== undefined, `${label}: the snapshot folder exists but lacks ${file.path}`);
      assert.equal(sha256(content), sha256(Buffer.from(file.data)), `${label}: ${file.path} has other bytes`);
    }
  }
  // 4. a blob is either absent or complete (staged bytes never appear under blobs/ unverified)
  for (const entry of tree.filter((e) => e.type === 'file' && e.path.startsWith('models--acme--crashy/blobs/'))) {
    const etag = entry.path.split('/').pop()!;
    const file = NEW.files.concat(OLD.files).map(manifestFile).find((f) => f.etag === etag);
    assert.ok(file, `${label}: unexpected blob ${entry.path}`);
    assert.equal(entry.sha256, file.sha256, `${label}: blob ${etag} is not complete`);
  }
}

/** One Python process scans every cache: no warnings, and the new commit loads whole or not at all. */
async function pythonCheck(caches: readonly string[]): Promise<Record<string, { warnings: string[]; snapshot: string }>> {
  const code = `
import json, os, sys
from huggingface_hub import scan_cache_dir, snapshot_download
out = {}
for cache in json.loads(sys.argv[1] if len(sys.argv) > 1 else os.environ["CACHES"]):
    info = scan_cache_dir(cache)
    try:
        path = snapshot_download("acme/crashy", revision="${NEW.commit}", cache_dir=cache, local_files_only=True)
        files = sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)
        snap = "complete" if files == sorted(${JSON.stringify(NEW.files.map((f) => f.path))}) else "PARTIAL " + repr(files)
    except Exception as e:
        snap = "absent (" + type(e).__name__ + ")"
    out[cache] = {"warnings": [str(w) for w in info.warnings], "snapshot": snap}
print(json.dumps(out))
`;
  const result = await runPython(code, { HF_HUB_OFFLINE: '1', CACHES: JSON.stringify(caches) }, { timeoutMs: 300_000 });
  assert.equal(result.code, 0, `python failed:\n${result.stderr}`);
  return JSON.parse(result.stdout) as Record<string, { warnings: string[]; snapshot: string }>;
}

async function inParallel<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

before(async () => {
  assertVenv(); // a missing venv fails (with the command that creates it); never skips
  assert.ok(existsSync(DIST_MAIN), `${DIST_MAIN} is missing: run \`npm run build\` (npm test does)`);
  dir = await mkdtemp(join(tmpdir(), 'airlock-crash-'));
  key = await makeTestKey();
  runner = join(dir, 'runner.mjs');
  await writeFile(runner, RUNNER);
  pub = join(dir, 'signer.pub.asc');
  await writeFile(pub, key.publicKeyArmored);
  bundle = join(dir, 'new.airlock.tar');
  await writeFile(bundle, (await buildBundle({ repos: [NEW], signer: key.signer })).bytes);
  // the resident caches: the old revision on main and a bystander repo; or only the bystander
  for (const [name, repos, oldCommit] of [
    ['over an older revision of the repo', [OLD, OTHER], OLD.commit],
    ['into a cache without the repo', [OTHER], undefined],
  ] as const) {
    const resident = join(dir, `resident-${scenarios.length}`);
    const old = join(dir, `resident-${scenarios.length}.airlock.tar`);
    await writeFile(old, (await buildBundle({ repos: [...repos], signer: key.signer })).bytes);
    const first = await runChild(resident, { AIRLOCK_ARGS: JSON.stringify(['import', old, '--trusted-keys', pub, '--cache-dir', resident]) });
    assert.equal(first.code, 0, first.stderr);
    const scenario: Scenario = { name, repos: [...repos], oldCommit, resident, cleanTree: '' };
    // what a clean import makes of it
    const clean = await freshCache(`clean-${scenarios.length}`, scenario);
    const r = await runChild(clean, {});
    assert.equal(r.code, 0, r.stderr);
    scenario.cleanTree = formatTree(withoutLocks(await snapshotTree(clean)));
    scenarios.push(scenario);
  }
});

after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('kill -9 at every step of an import', () => {
  for (const index of [0, 1]) test(`${['over an older revision of the repo', 'into a cache without the repo'][index]}: consistent (scan_cache_dir clean) at every kill point; a re-run completes`, async () => {
    const scenario = scenarios[index]!;
    // trace a clean run: every mutation, in order, and the bytes staged
    const traced = await freshCache(`traced-${index}`, scenario);
    const traceFile = join(dir, `trace-${index}.tsv`);
    const r = await runChild(traced, { TRACE_FILE: traceFile });
    assert.equal(r.code, 0, r.stderr);
    const trace = (await readFile(traceFile, 'utf8')).trim().split('\n');
    const ops = trace.filter((l) => !l.startsWith('bytes\t')).map((l) => l.split('\t'));
    const totalBytes = Math.max(...trace.filter((l) => l.startsWith('bytes\t')).map((l) => Number(l.split('\t')[1])));
    const phaseOf = (what: string): string => {
      if (/\/refs\//.test(what)) return 'refs';
      if (/\/snapshots(\/|$)/.test(what.split(' -> ').pop()!)) return 'snapshot';
      if (/\/blobs(\/|$)/.test(what.split(' -> ').pop()!)) return 'blobs';
      if (/^rm\t/.test(what)) return 'cleanup';
      if (/airlock-staging-[^/]+\/\d+-snapshot/.test(what)) return 'snapshot-build';
      return 'staging';
    };
    const points: Array<{ label: string; env: Record<string, string> }> = [
      ...ops.map(([n, name, what]) => ({ label: `op ${n} ${phaseOf(`${name}\t${what}`)} ${name}`, env: { KILL_AT_OP: n! } })),
      ...[1, 0.1, 0.25, 0.5, 0.75, 0.99].map((f) => {
        const at = Math.max(1, Math.floor(totalBytes * f));
        return { label: `staged byte ${at}/${totalBytes}`, env: { KILL_AT_BYTES: String(at) } };
      }),
    ];
    const phases = new Map<string, number>();
    for (const p of points) {
      const phase = p.label.startsWith('staged') ? 'staging (bytes)' : p.label.split(' ')[2]!;
      phases.set(phase, (phases.get(phase) ?? 0) + 1);
    }
    for (const phase of ['staging', 'blobs', 'snapshot', 'refs']) assert.ok(phases.get(phase), `no kill point in phase ${phase}`);

    const residentTree = withoutLocks(await snapshotTree(scenario.resident));
    const caches = await inParallel(points, 4, async (point) => {
      const cache = await freshCache(`kill-${index}-${points.indexOf(point)}`, scenario);
      const killed = await runChild(cache, point.env);
      assert.equal(killed.signal, 'SIGKILL', `${point.label}: the child was not killed (exit ${killed.code}): ${killed.stderr}`);
      await assertConsistent(cache, residentTree, scenario.oldCommit, point.label);
      return cache;
    });
    const afterKill = await pythonCheck(caches);
    for (const [i, cache] of caches.entries()) {
      assert.deepEqual(afterKill[cache]!.warnings, [], `${points[i]!.label}: scan_cache_dir warnings`);
      assert.match(afterKill[cache]!.snapshot, /^(complete|absent)/, `${points[i]!.label}: ${afterKill[cache]!.snapshot}`);
    }

    // re-run each: completes, sweeps the dead import's staging, ends exactly like a clean import
    await inParallel(caches, 4, async (cache) => {
      const label = points[caches.indexOf(cache)]!.label;
      const again = await runChild(cache, {});
      assert.equal(again.code, 0, `${label}: re-run failed: ${again.stderr}`);
      assert.equal(formatTree(withoutLocks(await snapshotTree(cache))), scenario.cleanTree, `${label}: re-run differs from a clean import`);
      assert.deepEqual(await stagingLeftovers(cache), [], `${label}: the dead import's staging was not swept`);
    });
    const afterRerun = await pythonCheck(caches);
    for (const cache of caches) {
      assert.deepEqual(afterRerun[cache]!.warnings, []);
      assert.equal(afterRerun[cache]!.snapshot, 'complete');
    }
    console.log(`# crash sweep (${scenario.name}): ${points.length} kill points (${[...phases].map(([p, n]) => `${p}=${n}`).join(', ')}), ${totalBytes} bytes staged per run`);
  });
});

describe('SIGINT and SIGTERM', () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    test(`${signal} while staging → exit 130, clear message, cache unchanged, staging removed`, async () => {
      const cache = await freshCache(`sig-stage-${signal}`);
      const before = formatTree(await snapshotTree(cache, { mtimes: true }));
      const pauseFile = join(dir, `pause-stage-${signal}`);
      const running = runChild(cache, { SLOW_WRITES_MS: '200', PAUSE_FILE: pauseFile });
      await waitFor(() => existsSync(pauseFile));
      running.child.kill(signal);
      const r = await running;
      assert.equal(r.code, 130, r.stderr);
      assert.match(r.stderr + r.stdout, /E_INTERRUPTED/);
      assert.match(r.stderr + r.stdout, /interrupted \(SIG(INT|TERM)\)/);
      assert.match(r.stderr + r.stdout, /nothing was changed/);
      assert.equal(formatTree(await snapshotTree(cache, { mtimes: true })), before);
      assert.deepEqual(await stagingLeftovers(cache), []);
    });

    test(`${signal} in the middle of the commit → exit 130, rolled back, staging removed`, async () => {
      // pause right before the snapshot folder is renamed into place (blobs are already moved in)
      const traceFile = join(dir, `trace-${signal}.tsv`);
      const t = await runChild(await freshCache(`sig-trace-${signal}`), { TRACE_FILE: traceFile });
      assert.equal(t.code, 0, t.stderr);
      const line = (await readFile(traceFile, 'utf8')).split('\n').find((l) => /\trename\t.*-> .*\/snapshots\/2{40}$/.test(l));
      assert.ok(line, 'the trace has the snapshot rename');
      const cache = await freshCache(`sig-commit-${signal}`);
      const before = formatTree(await snapshotTree(cache, { mtimes: true }));
      const pauseFile = join(dir, `pause-commit-${signal}`);
      const running = runChild(cache, { PAUSE_AT_OP: line.split('\t')[0]!, PAUSE_FILE: pauseFile });
      await waitFor(() => existsSync(pauseFile));
      // blobs were moved in already: the rollback must take them out again
      assert.notEqual(formatTree(await snapshotTree(cache, { mtimes: true })), before);
      running.child.kill(signal);
      const r = await running;
      assert.equal(r.code, 130, r.stderr);
      assert.match(r.stderr + r.stdout, /E_INTERRUPTED/);
      assert.equal(formatTree(await snapshotTree(cache, { mtimes: true })), before);
      assert.deepEqual(await stagingLeftovers(cache), []);
    });
  }
});

async function waitFor(ready: () => boolean, timeoutMs = 20_000): Promise<void> {
  const started = Date.now();
  while (!ready()) {
    if (Date.now() - started > timeoutMs) throw new Error('timed out waiting for the child');
    await new Promise((r) => setTimeout(r, 10));
  }
}
