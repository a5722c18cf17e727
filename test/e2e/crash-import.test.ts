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
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildBundle, makeTestKey, type BuilderRepo, type TestKey } from '../support/bundle-builder.ts';
import { formatTree, snapshotTree, stagingLeftovers, type TreeEntry } from '../support/cache-snapshot.ts';
import { assertConsistent, evidenceStrays, inParallel, killPoints, pythonCheck, runKillable, waitFor, withoutLocks, writeRunner } from '../support/crash-sweep.ts';
import { assertVenv } from '../support/python.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';

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

function runChild(cache: string, env: Record<string, string>): ReturnType<typeof runKillable> {
  const args = ['import', bundle, '--trusted-keys', pub, '--cache-dir', cache, '--json'];
  return runKillable(runner, env['AIRLOCK_ARGS'] === undefined ? args : JSON.parse(env['AIRLOCK_ARGS']) as string[], env);
}

async function freshCache(name: string, scenario: Scenario = scenarios[0]!): Promise<string> {
  const cache = join(dir, name);
  await cp(scenario.resident, cache, { recursive: true, verbatimSymlinks: true });
  return cache;
}

/** What a kill of this scenario's import may leave: the resident cache, plus the new revision whole or not at all. */
function expectation(scenario: Scenario, residentTree: TreeEntry[]) {
  return { residentTree, folder: 'models--acme--crashy', ref: 'main', oldCommit: scenario.oldCommit, newCommit: NEW.commit!, newFiles: NEW.files, oldFiles: OLD.files };
}

before(async () => {
  assertVenv(); // a missing venv fails (with the command that creates it); never skips
  dir = await mkdtemp(join(tmpdir(), 'airlock-crash-'));
  key = await makeTestKey();
  runner = await writeRunner(dir);
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
    const { points, totalBytes, phases } = await killPoints(traceFile);
    for (const phase of ['staging', 'blobs', 'snapshot', 'refs']) assert.ok(phases.get(phase), `no kill point in phase ${phase}`);

    const residentTree = withoutLocks(await snapshotTree(scenario.resident));
    const caches = await inParallel(points, 4, async (point) => {
      const cache = await freshCache(`kill-${index}-${points.indexOf(point)}`, scenario);
      const killed = await runChild(cache, point.env);
      assert.equal(killed.signal, 'SIGKILL', `${point.label}: the child was not killed (exit ${killed.code}): ${killed.stderr}`);
      await assertConsistent(cache, expectation(scenario, residentTree), point.label);
      return cache;
    });
    const afterKill = await pythonCheck(caches, 'acme/crashy', NEW.commit!, NEW.files);
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
      assert.deepEqual(await evidenceStrays(cache), [], `${label}: stray files next to the evidence records`);
    });
    const afterRerun = await pythonCheck(caches, 'acme/crashy', NEW.commit!, NEW.files);
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
