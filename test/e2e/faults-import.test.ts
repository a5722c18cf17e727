/**
 * Disk full and I/O errors during an import (issue 7 §5), with real kernel errors, no mocks:
 *
 *   - ENOSPC: a small tmpfs holds the cache. Its inode limit is raised one by one from "the cache as
 *     it is" until the import fits, so the disk runs full at EVERY step that creates something (staging
 *     files, blobs, the snapshot folder and its links, refs); its byte limit is swept likewise while
 *     payload is staged;
 *   - EROFS: the same file system remounted read-only;
 *   - EFBIG: `ulimit -f` (a shell wrapper around the real CLI) stops staging writes;
 *   - EACCES: the CLI runs as an unprivileged user (setpriv) against directories it may not write,
 *     during staging and at each commit phase (blobs, snapshots, refs).
 *
 * Each: the documented code (E_NO_SPACE / E_PERMISSION / E_IO, exit 5 for the CLI), the cache
 * byte-for-byte unchanged, no staging left. Mounting needs root, as CI has on this machine kind: a
 * missing prerequisite FAILS with the reason, never skips.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readdir, rm, rmdir, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { isAirlockError, type ErrorCode } from '../../src/errors.ts';
import { importBundle } from '../../src/import/index.ts';
import { buildBundle, makeTestKey, type BuilderRepo, type TestKey } from '../support/bundle-builder.ts';
import { formatTree, snapshotTree, stagingLeftovers } from '../support/cache-snapshot.ts';
import { airlockBin, repoRoot } from '../support/cli.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';

let dir: string;
let mnt: string;
let key: TestKey;
let bundle: string;
let pub: string;
let residentBundle: string;
const mounted: string[] = [];

const RESIDENT: BuilderRepo = { id: 'acme/disk', revision: 'v0', files: [{ path: 'config.json', data: '{"a": 1}\n' }, { path: 'old.txt', data: 'old\n' }] };
const NEW: BuilderRepo = {
  id: 'acme/disk',
  revision: 'main',
  files: [
    { path: 'config.json', data: '{"a": 1}\n' },
    { path: 'tokenizer.json', data: '{"t": 2}\n' },
    { path: 'sub/dir/vocab.txt', data: 'a\nb\n' },
    { path: 'model.safetensors', data: safetensorsOf(Buffer.alloc(3 * 1024 * 1024, 0x11)), lfs: true },
  ],
};

function sh(command: string, args: readonly string[], env?: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: repoRoot, env: env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

async function mountTmpfs(at: string, options: string): Promise<void> {
  await mkdir(at, { recursive: true });
  const r = await sh('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', at]);
  assert.equal(r.code, 0, `cannot mount a tmpfs at ${at} (${r.stderr.trim()}): these tests need root, as CI has on this machine kind`);
  mounted.push(at);
}
async function remount(at: string, options: string): Promise<void> {
  const r = await sh('mount', ['-o', `remount,${options}`, at]);
  assert.equal(r.code, 0, `remount ${options}: ${r.stderr}`);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-faults-'));
  await chmod(dir, 0o755); // the unprivileged user must reach the bundle and its key
  key = await makeTestKey();
  bundle = join(dir, 'new.airlock.tar');
  await writeFile(bundle, (await buildBundle({ repos: [NEW], signer: key.signer })).bytes);
  residentBundle = join(dir, 'resident.airlock.tar');
  await writeFile(residentBundle, (await buildBundle({ repos: [RESIDENT], signer: key.signer })).bytes);
  pub = join(dir, 'signer.pub.asc');
  await writeFile(pub, key.publicKeyArmored);
  await chmod(bundle, 0o644);
  await chmod(pub, 0o644);
  mnt = join(dir, 'mnt');
});

/**
 * The unprivileged user must run the CLI from wherever CI cloned the repo, which may sit under — or be —
 * a 0700 directory (/root, a mktemp dir). A bind mount keeps its source's mode, so the checkout root
 * itself is not mounted: a world-readable directory of our own gets a read-only bind mount of each
 * top-level entry of the checkout (bin/, dist/, node_modules/, package.json, …), giving the user a path
 * to the same files. It lives outside `dir` and is removed only with rmdir/rm of the empty mount points
 * (never recursively), so a failed unmount can never reach the checkout.
 */
let appMount: string | undefined;
const appEntries: string[] = [];
async function checkoutForNobody(): Promise<string> {
  if (appMount !== undefined) return appMount;
  const base = await mkdtemp(join(tmpdir(), 'airlock-app-'));
  await chmod(base, 0o755);
  const at = join(base, 'checkout');
  await mkdir(at, { mode: 0o755 });
  await chmod(at, 0o755);
  appMount = at;
  for (const entry of await readdir(repoRoot, { withFileTypes: true })) {
    if (entry.name === '.git') continue;
    const target = join(at, entry.name);
    if (entry.isDirectory()) await mkdir(target);
    else if (entry.isFile()) await writeFile(target, '');
    else continue;
    appEntries.push(target);
    const r = await sh('mount', ['--bind', '-o', 'ro', join(repoRoot, entry.name), target]);
    assert.equal(r.code, 0, `cannot bind-mount ${entry.name} of the checkout for the unprivileged user (${r.stderr.trim()}): these tests need root`);
  }
  return at;
}

after(async () => {
  for (const at of mounted.reverse()) await sh('umount', ['-l', at]);
  if (appMount !== undefined) {
    for (const target of appEntries.reverse()) {
      await sh('umount', [target]);
      await rmdir(target).catch(() => rm(target)); // an empty mount point: a directory or an empty file
    }
    await rmdir(appMount);
    await rmdir(dirname(appMount));
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function expectFailure(cache: string, code: ErrorCode, label: string, options: { spaceCheck?: boolean } = {}): Promise<void> {
  const before = formatTree(await snapshotTree(cache, { mtimes: true }));
  try {
    await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache, handleSignals: false, ...options });
    assert.fail(`${label}: the import succeeded`);
  } catch (error) {
    assert.ok(isAirlockError(error), `${label}: ${String(error)}`);
    assert.equal(error.code, code, `${label}: ${error.code}: ${error.message}`);
  }
  assert.equal(formatTree(await snapshotTree(cache, { mtimes: true })), before, `${label}: the cache changed`);
  assert.deepEqual(await stagingLeftovers(cache), [], `${label}: staging left`);
}

describe('disk full (ENOSPC) on a small tmpfs', () => {
  test('out of inodes at every creating step: E_NO_SPACE, cache unchanged, until it fits', async () => {
    const at = join(mnt, 'inodes');
    await mountTmpfs(at, 'size=64m,nr_inodes=10000,mode=0755');
    const cache = join(at, 'hub');
    await importBundle({ bundlePath: residentBundle, trustedKeys: key.trustedKeys, cacheDir: cache, handleSignals: false });
    const fs = await statfs(at);
    const used = fs.files - fs.ffree;
    let extra = 0;
    const steps: string[] = [];
    for (; extra < 60; extra++) {
      await remount(at, `nr_inodes=${used + extra}`);
      try {
        await expectFailure(cache, 'E_NO_SPACE', `${extra} spare inodes`);
        steps.push(String(extra));
      } catch (error) {
        if (/the import succeeded/.test(String(error))) break;
        throw error;
      }
    }
    assert.ok(extra > 5 && extra < 60, `the import fit with ${extra} spare inodes`);
    console.log(`# ENOSPC (inodes): failed cleanly with 0..${extra - 1} spare inodes, fit with ${extra}`);
  });

  test('out of bytes while staging the payload: E_NO_SPACE, cache unchanged', async () => {
    const at = join(mnt, 'bytes');
    await mountTmpfs(at, 'size=16m,mode=0755');
    const cache = join(at, 'hub');
    await importBundle({ bundlePath: residentBundle, trustedKeys: key.trustedKeys, cacheDir: cache, handleSignals: false });
    const fs = await statfs(at);
    const usedKiB = Math.ceil(((fs.blocks - fs.bfree) * fs.bsize) / 1024);
    for (const spareKiB of [4, 64, 1024, 2048, 3000]) {
      await remount(at, `size=${usedKiB + spareKiB}k`);
      // the preflight would refuse first: switched off so that the real ENOSPC path stays tested
      await expectFailure(cache, 'E_NO_SPACE', `${spareKiB} KiB spare`, { spaceCheck: false });
    }
  });

  test('the free-space preflight refuses before the payload is read, with numbers, cache unchanged; --no-space-check goes on', async () => {
    const at = join(mnt, 'preflight');
    await mountTmpfs(at, 'size=16m,mode=0755');
    const cache = join(at, 'hub');
    await importBundle({ bundlePath: residentBundle, trustedKeys: key.trustedKeys, cacheDir: cache, handleSignals: false });
    const fs = await statfs(at);
    const usedKiB = Math.ceil(((fs.blocks - fs.bfree) * fs.bsize) / 1024);
    await remount(at, `size=${usedKiB + 2048}k`);
    const before = formatTree(await snapshotTree(cache, { mtimes: true }));
    const r = await sh(process.execPath, [airlockBin, 'import', bundle, '--trusted-keys', pub, '--cache-dir', cache], { PATH: process.env['PATH'] ?? '', HOME: '/tmp' });
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, /E_NO_SPACE/);
    assert.match(r.stderr, new RegExp(`not enough free space for this import in ${cache}: [0-9.]+ MiB needed \\(3\\.0 MiB of payload in 3 files to write, 9 B already present\\), [0-9.]+ MiB free`));
    assert.match(r.stderr, /--no-space-check/);
    assert.equal(formatTree(await snapshotTree(cache, { mtimes: true })), before, 'the cache changed');
    assert.deepEqual(await stagingLeftovers(cache), []);
    // past the preflight the disk really fills up: still E_NO_SPACE, still unchanged
    const past = await sh(process.execPath, [airlockBin, 'import', bundle, '--trusted-keys', pub, '--cache-dir', cache, '--no-space-check'], { PATH: process.env['PATH'] ?? '', HOME: '/tmp' });
    assert.equal(past.code, 5, past.stderr);
    assert.doesNotMatch(past.stderr, /for this import/);
    assert.equal(formatTree(await snapshotTree(cache, { mtimes: true })), before, 'the cache changed');
    assert.deepEqual(await stagingLeftovers(cache), []);
  });

  test('a read-only file system (EROFS): E_PERMISSION, nothing written', async () => {
    const at = join(mnt, 'ro');
    await mountTmpfs(at, 'size=16m,mode=0755');
    const cache = join(at, 'hub');
    await importBundle({ bundlePath: residentBundle, trustedKeys: key.trustedKeys, cacheDir: cache, handleSignals: false });
    await remount(at, 'ro');
    await expectFailure(cache, 'E_PERMISSION', 'read-only');
    await remount(at, 'rw');
  });
});

describe('I/O errors through the real CLI', () => {
  async function cli(prefix: readonly string[], cache: string): Promise<{ code: number; stdout: string; stderr: string }> {
    const bin = prefix[0] === 'setpriv' ? join(await checkoutForNobody(), 'bin', 'airlock.js') : airlockBin;
    return sh(prefix[0]!, [...prefix.slice(1), process.execPath, bin, 'import', bundle, '--trusted-keys', pub, '--cache-dir', cache], {
      PATH: process.env['PATH'] ?? '',
      HOME: '/tmp',
    });
  }
  async function residentCache(name: string): Promise<string> {
    const cache = join(dir, name);
    await importBundle({ bundlePath: residentBundle, trustedKeys: key.trustedKeys, cacheDir: cache, handleSignals: false });
    return cache;
  }

  test('ulimit -f (EFBIG) while staging → E_IO, exit 5, cache unchanged, staging removed', async () => {
    const cache = await residentCache('efbig');
    const before = formatTree(await snapshotTree(cache, { mtimes: true }));
    const r = await cli(['bash', '-c', 'ulimit -f 1024; exec "$@"', 'ulimit'], cache);
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, /E_IO/);
    assert.match(r.stderr, /file too large/i);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    assert.equal(formatTree(await snapshotTree(cache, { mtimes: true })), before);
    assert.deepEqual(await stagingLeftovers(cache), []);
  });

  // as an unprivileged user (root ignores modes): which directory it may not write decides the phase
  const nobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
  const phases: Array<{ name: string; lock: (cache: string) => string[] }> = [
    { name: 'staging (.locks)', lock: () => ['.', '.locks'] },
    { name: 'commit of blobs', lock: () => ['models--acme--disk/blobs'] },
    { name: 'commit of the snapshot folder', lock: () => ['models--acme--disk/snapshots'] },
    { name: 'commit of refs', lock: () => ['models--acme--disk/refs'] },
  ];
  for (const phase of phases) {
    test(`EACCES during ${phase.name} → E_PERMISSION, exit 5, rolled back, staging removed`, async () => {
      const cache = await residentCache(`eacces-${phase.name.replace(/\W+/g, '-')}`);
      await mkdir(join(cache, 'models--acme--disk', 'refs'), { recursive: true });
      await mkdir(join(cache, '.locks'), { recursive: true });
      // everything belongs to the unprivileged user, except the one directory of this phase
      await sh('chown', ['-R', '65534:65534', cache]);
      for (const path of phase.lock(cache)) {
        await chown(join(cache, path), 0, 0);
        await chmod(join(cache, path), 0o755);
      }
      const before = formatTree(await snapshotTree(cache, { mtimes: true }));
      const r = await cli(nobody, cache);
      assert.equal(r.code, 5, `${r.stdout}\n${r.stderr}`);
      assert.match(r.stderr, /E_PERMISSION/);
      assert.match(r.stderr, /permission denied/);
      assert.equal(formatTree(await snapshotTree(cache, { mtimes: true })), before);
      assert.deepEqual(await stagingLeftovers(cache), []);
    });
  }
});


