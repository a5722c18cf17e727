/**
 * Concurrency (issue 7 §6):
 *   - two real CLI imports of overlapping bundles (shared blobs, one repo in both, one ref each) into
 *     ONE cache at the same moment, several rounds: both succeed, and the cache ends exactly as if they
 *     had run one after the other; huggingface_hub's scan_cache_dir() reports nothing;
 *   - imports that move `main` through several commits while the REAL huggingface_hub reads the same
 *     repo in a tight loop (snapshot_download + reading every file + scan_cache_dir): the reader never
 *     sees a partial snapshot, a partial or wrong file, or a scanner warning;
 *   - the commit lock: a dead owner's lock is taken over, a live one waited for, the wait abortable.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { lstat, mkdir, mkdtemp, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { importBundle } from '../../src/import/index.ts';
import { COMMIT_LOCK } from '../../src/cache/hf-hub.ts';
import { isAirlockError } from '../../src/errors.ts';
import { hostTag } from '../../src/fs/owner.ts';
import { buildBundle, commitOf, makeTestKey, type BuilderRepo, type TestKey } from '../support/bundle-builder.ts';
import { formatTree, snapshotTree, stagingLeftovers, type TreeEntry } from '../support/cache-snapshot.ts';
import { runAirlock } from '../support/cli.ts';
import { assertVenv, runPython } from '../support/python.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';

let dir: string;
let key: TestKey;
let pub: string;
before(async () => {
  assertVenv();
  dir = await mkdtemp(join(tmpdir(), 'airlock-concurrency-'));
  key = await makeTestKey();
  pub = join(dir, 'signer.pub.asc');
  await writeFile(pub, key.publicKeyArmored);
});
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const shared = { path: 'config.json', data: '{"model_type": "llama"}\n' };
const weights = { path: 'model.safetensors', data: safetensorsOf(Buffer.alloc(1_500_000, 0x21)), lfs: true };
const A: BuilderRepo[] = [
  { id: 'acme/x', revision: 'main', files: [shared, weights, { path: 'a.txt', data: 'only in A\n' }] },
  { id: 'acme/common', revision: 'main', files: [shared, { path: 'sub/dir/v.txt', data: 'common\n' }] },
];
const B: BuilderRepo[] = [
  { id: 'acme/x', revision: 'v2', files: [shared, weights, { path: 'b.txt', data: 'only in B\n' }] },
  { id: 'acme/common', revision: 'main', files: [shared, { path: 'sub/dir/v.txt', data: 'common\n' }] },
];

function stripLocks(tree: TreeEntry[] | null): string {
  return formatTree((tree ?? []).filter((e) => e.path !== '.locks' && !e.path.startsWith('.locks/')));
}

async function scanClean(caches: readonly string[]): Promise<void> {
  const result = await runPython(
    `
import json, os
from huggingface_hub import scan_cache_dir
print(json.dumps({c: [str(w) for w in scan_cache_dir(c).warnings] for c in json.loads(os.environ["CACHES"])}))
`,
    { HF_HUB_OFFLINE: '1', CACHES: JSON.stringify(caches) },
  );
  assert.equal(result.code, 0, result.stderr);
  for (const [cache, warnings] of Object.entries(JSON.parse(result.stdout) as Record<string, string[]>)) assert.deepEqual(warnings, [], cache);
}

describe('two imports of overlapping bundles into one cache at once', () => {
  test('both succeed, every round; the cache equals the one-after-the-other result', async () => {
    const a = join(dir, 'a.airlock.tar');
    const b = join(dir, 'b.airlock.tar');
    await writeFile(a, (await buildBundle({ repos: A, signer: key.signer })).bytes);
    await writeFile(b, (await buildBundle({ repos: B, signer: key.signer })).bytes);
    const sequential = join(dir, 'sequential');
    await importBundle({ bundlePath: a, trustedKeys: key.trustedKeys, cacheDir: sequential, handleSignals: false });
    await importBundle({ bundlePath: b, trustedKeys: key.trustedKeys, cacheDir: sequential, handleSignals: false });
    const expected = stripLocks(await snapshotTree(sequential));

    const caches: string[] = [];
    for (let round = 0; round < 6; round++) {
      const cache = join(dir, `together-${round}`);
      caches.push(cache);
      const [ra, rb] = await Promise.all([
        runAirlock(['import', a, '--trusted-keys', pub, '--cache-dir', cache]),
        runAirlock(['import', b, '--trusted-keys', pub, '--cache-dir', cache]),
      ]);
      assert.equal(ra.code, 0, `round ${round}, A: ${ra.stderr}`);
      assert.equal(rb.code, 0, `round ${round}, B: ${rb.stderr}`);
      assert.equal(stripLocks(await snapshotTree(cache)), expected, `round ${round}`);
      assert.deepEqual(await stagingLeftovers(cache), []);
    }
    await scanClean(caches);
  });
});

describe('the commit lock', () => {
  const repo: BuilderRepo = { id: 'acme/locked', files: [{ path: 'config.json', data: '{}\n' }] };
  async function lockedCache(name: string, holder: string): Promise<{ cache: string; bundle: string; lock: string }> {
    const cache = join(dir, name);
    await mkdir(join(cache, '.locks'), { recursive: true });
    const lock = join(cache, '.locks', COMMIT_LOCK);
    await symlink(holder, lock);
    const bundle = join(dir, `${name}.airlock.tar`);
    await writeFile(bundle, (await buildBundle({ repos: [repo], signer: key.signer })).bytes);
    return { cache, bundle, lock };
  }

  test('a lock left by a dead process (kill -9) is taken over', async () => {
    const dead = spawnSync(process.execPath, ['-e', 'process.exit(0)']).pid;
    const { cache, bundle, lock } = await lockedCache('lock-dead', `${hostTag()}-${dead}-abcdef`);
    await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache, handleSignals: false });
    assert.equal(existsSync(join(cache, 'models--acme--locked', 'refs', 'main')), true);
    await assert.rejects(lstat(lock), 'the lock is released');
  });

  test('a live lock is waited for; the import commits once it is released', async () => {
    const { cache, bundle, lock } = await lockedCache('lock-live', `${hostTag()}-${process.pid}-abcdef`);
    const started = Date.now();
    setTimeout(() => void unlink(lock), 400);
    await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache, handleSignals: false });
    assert.ok(Date.now() - started >= 350, 'it waited for the lock');
    assert.equal(existsSync(join(cache, 'models--acme--locked', 'refs', 'main')), true);
  });

  test('waiting for a lock is interruptible: E_INTERRUPTED, nothing committed, staging removed', async () => {
    const { cache, bundle } = await lockedCache('lock-abort', `${hostTag()}-${process.pid}-abcdef`);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 300);
    await assert.rejects(importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache, signal: controller.signal, handleSignals: false }), (e: unknown) => isAirlockError(e, 'E_INTERRUPTED'));
    assert.equal(existsSync(join(cache, 'models--acme--locked')), false);
    assert.deepEqual(await stagingLeftovers(cache), []);
  });
});

describe('an import while huggingface_hub reads the same repo', () => {
  test('the reader never sees a partial snapshot, a partial file or a scanner warning', async () => {
    const cache = join(dir, 'live');
    await mkdir(cache); // the scanner wants the root to exist
    const revisions: BuilderRepo[] = Array.from({ length: 6 }, (_, i) => ({
      id: 'acme/live',
      revision: 'main',
      commit: createHash('sha1').update(`live-${i}`).digest('hex'),
      files: [
        { path: 'config.json', data: `{"generation": ${i}}\n` },
        { path: 'model.safetensors', data: safetensorsOf(Buffer.alloc(1_000_000 + i * 4096, i + 1)), lfs: true },
        { path: 'sub/dir/vocab.txt', data: `v${i}\n`.repeat(100) },
      ],
    }));
    const expected: Record<string, Record<string, string>> = {};
    for (const r of revisions) {
      expected[commitOf(r)] = Object.fromEntries(r.files.map((f) => [f.path, createHash('sha256').update(Buffer.from(f.data)).digest('hex')]));
    }
    const bundles: string[] = [];
    for (const [i, r] of revisions.entries()) {
      const path = join(dir, `live-${i}.airlock.tar`);
      await writeFile(path, (await buildBundle({ repos: [r], signer: key.signer })).bytes);
      bundles.push(path);
    }
    const ready = join(dir, 'reader-ready');
    const stop = join(dir, 'reader-stop');
    const reader = runPython(
      `
import hashlib, json, os, time
from huggingface_hub import scan_cache_dir, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
expected = json.loads(os.environ["EXPECTED"])
stats = {"loops": 0, "complete_reads": 0, "not_yet": 0, "problems": []}
open(os.environ["READY"], "w").close()
deadline = time.time() + 60
while time.time() < deadline:
    done = os.path.exists(os.environ["STOP"])
    stats["loops"] += 1
    try:
        path = snapshot_download("acme/live", local_files_only=True)
    except LocalEntryNotFoundError:
        stats["not_yet"] += 1
        path = None
    if path is not None:
        commit = os.path.basename(path)
        want = expected.get(commit)
        if want is None:
            stats["problems"].append("unknown commit " + commit)
        else:
            got = {}
            for root, _, files in os.walk(path):
                for f in files:
                    full = os.path.join(root, f)
                    with open(full, "rb") as fh:
                        got[os.path.relpath(full, path)] = hashlib.sha256(fh.read()).hexdigest()
            if got != want:
                stats["problems"].append({"commit": commit, "got": got})
            else:
                stats["complete_reads"] += 1
    warnings = [str(w) for w in scan_cache_dir().warnings]
    if warnings:
        stats["problems"].append({"scan": warnings})
    if done:
        break
print(json.dumps(stats))
`,
      { HF_HUB_OFFLINE: '1', HF_HUB_CACHE: cache, EXPECTED: JSON.stringify(expected), READY: ready, STOP: stop },
      { timeoutMs: 120_000 },
    );
    const started = Date.now();
    while (!existsSync(ready)) {
      assert.ok(Date.now() - started < 60_000, 'the Python reader did not start');
      await new Promise((r) => setTimeout(r, 20));
    }
    // move main through every commit, twice over (the second pass re-imports: no-op writes, ref moves)
    for (let pass = 0; pass < 2; pass++) {
      for (const bundle of bundles) {
        await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache, handleSignals: false });
      }
    }
    await writeFile(stop, '');
    const result = await reader;
    assert.equal(result.code, 0, result.stderr);
    const stats = JSON.parse(result.stdout) as { loops: number; complete_reads: number; problems: unknown[] };
    assert.deepEqual(stats.problems, []);
    assert.ok(stats.complete_reads > 0, `the reader never read a snapshot (${JSON.stringify(stats)})`);
    console.log(`# concurrent reader: ${stats.loops} loops, ${stats.complete_reads} complete snapshot reads, 0 partial`);
  });
});
