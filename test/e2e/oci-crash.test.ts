/**
 * Crash safety of `airlock pull` (issue 15: "kill -9 at points during pull → cache valid, same checks as
 * the crash sweep"), against the real registry (Debian's docker-registry) with the real CLI code (dist/)
 * in a child process — the same sweep as test/e2e/crash-import.test.ts (test/support/crash-sweep.ts):
 *
 *   - a traced clean pull lists every file-system mutation; the child is killed with SIGKILL before each
 *     one and at several points by bytes staged. That covers the whole pull: the first mutation comes after
 *     the manifest and the trust layers were fetched and checked (before any layer byte); mid-layer while
 *     staging; all layers staged, before the commit lock is taken; inside the commit (blobs, snapshot,
 *     refs, with the lock held); after the commit, while the evidence record is written; the cleanup.
 *   - after each kill: what was in the cache is untouched, `refs/main` names the old or the new commit,
 *     the new snapshot is absent or complete, no blob is partial and nothing stray is in the repo folder;
 *     the REAL huggingface_hub `scan_cache_dir()` reports nothing and the new commit loads whole or not
 *     at all (HF_HUB_OFFLINE=1);
 *   - a re-run of the same pull takes over the dead pull's commit lock, completes, sweeps its staging and
 *     ends exactly like a clean pull; huggingface_hub then loads every file.
 *
 * The kills are synchronised on what the pull does (the N-th mutation, the N-th byte), never on time.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, lstat, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHubServer, type AddedCommit, type HubServer } from '../support/hub-server.ts';
import { runAirlock } from '../support/cli.ts';
import { assertVenv } from '../support/python.ts';
import { sampleModelFiles } from '../support/sample-model.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';
import { formatTree, snapshotTree, stagingLeftovers } from '../support/cache-snapshot.ts';
import { assertConsistent, evidenceStrays, inParallel, killPoints, pythonCheck, runKillable, withoutLocks, writeRunner, type SweepFile } from '../support/crash-sweep.ts';
import { startRegistry, type TestRegistry } from '../support/registry.ts';

let hub: HubServer;
let registry: TestRegistry;
let dir: string;
let keys: string;
let runner: string;
let oldCommit: AddedCommit;
let newCommit: AddedCommit;

const OLD_FILES: SweepFile[] = [
  // shared with the new revision: already in the cache, not downloaded again
  sampleModelFiles().find((f) => f.path === 'config.json')!,
  { path: 'old.txt', data: Buffer.from('the old revision\n') },
];
// plus a 2.5 MB shard: staged in several 1 MiB writes, so kill points by bytes fall inside one layer
const SHARD = { path: 'model-2.safetensors', data: safetensorsOf(Buffer.alloc(2_500_000, 0x42)) };
const NEW_FILES: SweepFile[] = [...sampleModelFiles(), SHARD];
const FOLDER = 'models--acme--tiny-llm';
const LOCK = join('.locks', 'airlock-commit.lock');

interface Scenario {
  name: string;
  resident: string;
  oldCommit: string | undefined;
}
const scenarios: Scenario[] = [];

const pub = (): string => join(keys, 'signer.pub.asc');
const pullArgs = (cache: string): string[] => ['pull', `oci://${registry.host}/models/acme/tiny-llm:main`, '--trusted-keys', pub(), '--plain-http', '--cache-dir', cache, '--json'];

async function exportBundle(args: string[], out: string): Promise<void> {
  const r = await runAirlock(['export', ...args, '--sign-key', join(keys, 'signer.key.asc'), '-o', out], { env: { HF_ENDPOINT: hub.endpoint } });
  assert.equal(r.code, 0, r.stderr);
}

async function importInto(cache: string, bundle: string): Promise<void> {
  const r = await runAirlock(['import', bundle, '--trusted-keys', pub(), '--cache-dir', cache]);
  assert.equal(r.code, 0, r.stderr);
}

async function lockLeft(cache: string): Promise<boolean> {
  return lstat(join(cache, LOCK)).then(
    () => true,
    () => false,
  );
}

/** Whether the dead pull's staging holds a file cut short: written in part, not the size of any file. */
async function partiallyStaged(cache: string): Promise<boolean> {
  const sizes = new Set(NEW_FILES.map((f) => Buffer.byteLength(f.data)));
  for (const name of await stagingLeftovers(cache)) {
    for (const entry of (await snapshotTree(join(cache, '.locks', name))) ?? []) {
      if (entry.type === 'file' && entry.size! > 0 && !sizes.has(entry.size!)) return true;
    }
  }
  return false;
}

before(async () => {
  assertVenv(); // a missing venv fails (with the command that creates it); never skips
  dir = await mkdtemp(join(tmpdir(), 'airlock-oci-crash-'));
  runner = await writeRunner(dir);
  hub = await startHubServer();
  keys = join(dir, 'keys');
  assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'ML Platform <mlops@example.org>', '--out-dir', keys])).code, 0);
  // an older revision of the model and a bystander repo: what a node's cache held before this pull
  oldCommit = await hub.addRepo({ id: 'acme/tiny-llm', files: OLD_FILES.map((f) => ({ path: f.path, data: Buffer.from(f.data) })) });
  const oldBundle = join(dir, 'old.airlock.tar');
  await exportBundle(['acme/tiny-llm', '--revision', 'main'], oldBundle); // main is the old commit still
  await hub.addRepo({ id: 'acme/bystander', files: [{ path: 'config.json', data: Buffer.from('{"bystander": true}\n') }] });
  const bystander = join(dir, 'bystander.airlock.tar');
  await exportBundle(['acme/bystander'], bystander);
  newCommit = await hub.addCommit({ id: 'acme/tiny-llm' }, [...sampleModelFiles(), SHARD]);
  const bundle = join(dir, 'new.airlock.tar');
  await exportBundle(['acme/tiny-llm', '--revision', 'main'], bundle);
  registry = await startRegistry();
  const published = await runAirlock(['publish', bundle, '--to', `oci://${registry.host}/models`, '--trusted-keys', pub(), '--plain-http']);
  assert.equal(published.code, 0, published.stderr);

  for (const [name, bundles, old] of [
    ['over an older revision of the model', [oldBundle, bystander], oldCommit.commit],
    ['into a cache without the model', [bystander], undefined],
  ] as const) {
    const resident = join(dir, `resident-${scenarios.length}`);
    for (const b of bundles) await importInto(resident, b);
    // the old revision is what refs/main names before the pull
    scenarios.push({ name, resident, oldCommit: old });
  }
});

after(async () => {
  await registry?.close();
  await hub?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('kill -9 at every step of a pull', () => {
  for (const index of [0, 1]) {
    test(`${['over an older revision of the model', 'into a cache without the model'][index]}: consistent (scan_cache_dir clean) at every kill point; a re-run takes the lock over and completes`, { timeout: 600_000 }, async () => {
      const scenario = scenarios[index]!;
      const fresh = async (name: string): Promise<string> => {
        const cache = join(dir, name);
        await cp(scenario.resident, cache, { recursive: true, verbatimSymlinks: true });
        return cache;
      };
      // trace a clean pull: every mutation in order, and the bytes staged; its result is what a re-run must give
      const traced = await fresh(`traced-${index}`);
      const traceFile = join(dir, `trace-${index}.tsv`);
      const clean = await runKillable(runner, pullArgs(traced), { TRACE_FILE: traceFile });
      assert.equal(clean.code, 0, clean.stderr);
      const cleanTree = formatTree(withoutLocks(await snapshotTree(traced)));
      const { points, totalBytes, phases } = await killPoints(traceFile);
      // the whole pull is covered: staging, mid-layer, the commit under its lock, the evidence record
      for (const phase of ['staging', 'staging (bytes)', 'lock', 'blobs', 'snapshot', 'refs', 'evidence']) assert.ok(phases.get(phase), `no kill point in phase ${phase}: ${JSON.stringify([...phases])}`);
      // the first mutation comes after the manifest and trust layers were checked, before any layer byte
      assert.equal(points[0]!.phase, 'staging', points[0]!.label);

      const residentTree = withoutLocks(await snapshotTree(scenario.resident));
      const expect = { residentTree, folder: FOLDER, ref: 'main', oldCommit: scenario.oldCommit, newCommit: newCommit.commit, newFiles: NEW_FILES, oldFiles: OLD_FILES };
      const killed = await inParallel(points, 3, async (point) => {
        const cache = await fresh(`kill-${index}-${points.indexOf(point)}`);
        const r = await runKillable(runner, pullArgs(cache), point.env);
        assert.equal(r.signal, 'SIGKILL', `${point.label}: the child was not killed (exit ${r.code}): ${r.stderr}`);
        await assertConsistent(cache, expect, point.label);
        return { cache, point, locked: await lockLeft(cache), partial: await partiallyStaged(cache) };
      });
      const caches = killed.map((k) => k.cache);
      const afterKill = await pythonCheck(caches, 'acme/tiny-llm', newCommit.commit, NEW_FILES);
      for (const { cache, point } of killed) {
        assert.deepEqual(afterKill[cache]!.warnings, [], `${point.label}: scan_cache_dir warnings`);
        assert.match(afterKill[cache]!.snapshot, /^(complete|absent)/, `${point.label}: ${afterKill[cache]!.snapshot}`);
      }
      // some kills by bytes hit a layer half-written into staging (the re-run must not take it for done)
      assert.ok(killed.some((k) => k.partial), 'no kill point fell inside a layer');
      // kills inside the commit leave its lock behind, owned by a dead process: the re-run must take it over
      const lockedPoints = killed.filter((k) => k.locked);
      assert.ok(lockedPoints.length > 0, 'no kill point left the commit lock behind');

      // re-run each: completes, sweeps the dead pull's staging and lock, ends exactly like a clean pull
      await inParallel(killed, 3, async ({ cache, point }) => {
        const again = await runKillable(runner, pullArgs(cache), {});
        assert.equal(again.code, 0, `${point.label}: re-run failed: ${again.stderr}`);
        assert.equal(JSON.parse(again.stdout).ok, true);
        assert.equal(formatTree(withoutLocks(await snapshotTree(cache))), cleanTree, `${point.label}: re-run differs from a clean pull`);
        assert.deepEqual(await stagingLeftovers(cache), [], `${point.label}: the dead pull's staging was not swept`);
        assert.equal(await lockLeft(cache), false, `${point.label}: the commit lock is still there`);
        assert.deepEqual(await evidenceStrays(cache), [], `${point.label}: stray files next to the evidence records`);
      });
      const afterRerun = await pythonCheck(caches, 'acme/tiny-llm', newCommit.commit, NEW_FILES);
      for (const { cache, point } of killed) {
        assert.deepEqual(afterRerun[cache]!.warnings, [], point.label);
        assert.equal(afterRerun[cache]!.snapshot, 'complete', point.label);
      }
      console.log(`# pull crash sweep (${scenario.name}): ${points.length} kill points (${[...phases].map(([p, n]) => `${p}=${n}`).join(', ')}), ${totalBytes} bytes staged per run, ${lockedPoints.length} left the lock`);
    });
  }
});
