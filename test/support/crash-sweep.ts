/**
 * The kill -9 sweep shared by `import` (test/e2e/crash-import.test.ts) and `pull`
 * (test/e2e/oci-crash.test.ts): the real CLI code (dist/) runs in a child that patches node:fs/promises
 * (syncBuiltinESMExports) to count every file-system mutation and the bytes written through file handles,
 * and kills itself with SIGKILL at the N-th mutation or the N-th staged byte — synchronised on what the
 * command does, never on time. A traced clean run lists the mutations; `killPoints` turns the trace into
 * one kill point per mutation plus points by bytes staged. After each kill `assertConsistent` and
 * `pythonCheck` (the REAL huggingface_hub) tell whether the cache is still valid.
 *
 * The child never changes what the command does, only when the process dies (or pauses, for signals).
 */
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { snapshotTree, type TreeEntry } from './cache-snapshot.ts';
import { repoRoot } from './cli.ts';
import { runPython } from './python.ts';

export const DIST_MAIN = join(repoRoot, 'dist', 'cli', 'main.js');

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

/** Writes the child script into `dir`; its path is what `runKillable` runs. */
export async function writeRunner(dir: string): Promise<string> {
  assert.ok(existsSync(DIST_MAIN), `${DIST_MAIN} is missing: run \`npm run build\` (npm test does)`);
  const runner = join(dir, 'runner.mjs');
  await writeFile(runner, RUNNER);
  return runner;
}

export interface ChildOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `airlock ARGS` in the patched child. `env`: KILL_AT_OP, KILL_AT_BYTES, TRACE_FILE, PAUSE_AT_OP +
 * PAUSE_FILE, SLOW_WRITES_MS (+ whatever the command needs); nothing of the caller's environment but PATH
 * and HOME leaks in.
 */
export function runKillable(runner: string, args: readonly string[], env: Record<string, string>): Promise<ChildOutcome> & { child: ReturnType<typeof spawn> } {
  const child = spawn(process.execPath, [runner], {
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '/tmp', AIRLOCK_MAIN: DIST_MAIN, AIRLOCK_ARGS: JSON.stringify(args), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<ChildOutcome>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return Object.assign(done, { child });
}

export interface KillPoint {
  label: string;
  /** The phase the point falls in (`staging (bytes)` for points by bytes). */
  phase: string;
  env: Record<string, string>;
}

/** Which part of a commit into the hub cache a traced mutation belongs to. */
export function phaseOf(name: string, what: string): string {
  const last = what.split(' -> ').pop()!;
  if (/\.airlock\/evidence(\/|$)/.test(last)) return 'evidence';
  if (/\/refs\//.test(what)) return 'refs';
  if (/\/snapshots(\/|$)/.test(last)) return 'snapshot';
  if (/\/blobs(\/|$)/.test(last)) return 'blobs';
  if (/\/\.locks\/airlock-commit\.lock(\.stale-[^/]*)?$/.test(last)) return 'lock';
  if (name === 'rm') return 'cleanup';
  if (/airlock-staging-[^/]+\/\d+-snapshot/.test(what)) return 'snapshot-build';
  return 'staging';
}

/** Every traced mutation, and points at fractions of the bytes staged, as kill points. */
export async function killPoints(traceFile: string, byteFractions: readonly number[] = [1, 0.1, 0.25, 0.5, 0.75, 0.99]): Promise<{ points: KillPoint[]; totalBytes: number; phases: Map<string, number> }> {
  const trace = (await readFile(traceFile, 'utf8')).trim().split('\n');
  const ops = trace.filter((l) => !l.startsWith('bytes\t')).map((l) => l.split('\t'));
  const totalBytes = Math.max(0, ...trace.filter((l) => l.startsWith('bytes\t')).map((l) => Number(l.split('\t')[1])));
  const points: KillPoint[] = ops.map(([n, name, what]) => {
    const phase = phaseOf(name!, what ?? '');
    return { label: `op ${n} ${phase} ${name}`, phase, env: { KILL_AT_OP: n! } };
  });
  if (totalBytes > 0) {
    for (const at of new Set(byteFractions.map((f) => Math.max(1, Math.floor(totalBytes * f))))) {
      points.push({ label: `staged byte ${at}/${totalBytes}`, phase: 'staging (bytes)', env: { KILL_AT_BYTES: String(at) } });
    }
  }
  const phases = new Map<string, number>();
  for (const p of points) phases.set(p.phase, (phases.get(p.phase) ?? 0) + 1);
  return { points, totalBytes, phases };
}

/** Without .locks (which holds staging and the commit lock; checked separately). */
export function withoutLocks(tree: TreeEntry[] | null): TreeEntry[] {
  return (tree ?? []).filter((e) => e.path !== '.locks' && !e.path.startsWith('.locks/'));
}

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');
const gitBlobId = (data: Buffer): string => createHash('sha1').update(`blob ${data.byteLength}\0`).update(data).digest('hex');

export interface SweepFile {
  path: string;
  data: Buffer | string;
}

export interface ConsistencyExpectation {
  /** The cache before the killed command ran (without .locks). */
  residentTree: TreeEntry[];
  /** The repo folder the command writes, e.g. `models--acme--tiny-llm`. */
  folder: string;
  /** The ref it moves (`main`) and the commits it may name: the old one (if any) or the new one. */
  ref: string;
  oldCommit: string | undefined;
  newCommit: string;
  newFiles: readonly SweepFile[];
  /** Files of the older revision (their blobs may be there too). */
  oldFiles?: readonly SweepFile[];
}

/**
 * The invariants that must hold whenever the command died, whatever the moment: what was there is
 * byte-for-byte still there, the ref names the old or the new commit, a new snapshot folder is absent or
 * complete with the verified bytes, and every blob is one of the known files, complete.
 */
export async function assertConsistent(cache: string, expect: ConsistencyExpectation, label: string): Promise<void> {
  const tree = withoutLocks(await snapshotTree(cache));
  const refPath = `${expect.folder}/refs/${expect.ref}`;
  // 1. everything that was there is byte-for-byte still there (only additions are allowed)
  for (const before of expect.residentTree) {
    if (before.type === 'dir') continue;
    if (before.path === refPath) continue; // checked below: old or new
    const now = tree.find((e) => e.path === before.path);
    assert.deepEqual(now, before, `${label}: ${before.path} changed`);
  }
  const folder = join(cache, expect.folder);
  // 2. the ref names the old or the new commit, nothing else
  const ref = await readFile(join(folder, 'refs', expect.ref), 'latin1').catch(() => undefined);
  assert.ok(ref === expect.oldCommit || ref === expect.newCommit, `${label}: refs/${expect.ref} = ${JSON.stringify(ref)}`);
  // 3. a new snapshot folder is absent or complete, with the verified bytes
  const snap = join(folder, 'snapshots', expect.newCommit);
  if (ref === expect.newCommit) assert.ok(existsSync(snap), `${label}: refs/${expect.ref} names a missing snapshot`);
  if (existsSync(snap)) {
    for (const file of expect.newFiles) {
      const content = await readFile(join(snap, file.path)).catch(() => undefined);
      assert.ok(content !== undefined, `${label}: the snapshot folder exists but lacks ${file.path}`);
      assert.equal(sha256(content), sha256(Buffer.from(file.data)), `${label}: ${file.path} has other bytes`);
    }
  }
  // 4. a blob is either absent or complete (staged bytes never appear under blobs/ unverified)
  const known = new Map<string, string>();
  for (const file of [...expect.newFiles, ...(expect.oldFiles ?? [])]) {
    const data = Buffer.from(file.data);
    known.set(sha256(data), sha256(data)); // LFS files: etag = sha256
    known.set(gitBlobId(data), sha256(data)); // the others: etag = git blob id
  }
  for (const entry of tree.filter((e) => e.type === 'file' && e.path.startsWith(`${expect.folder}/blobs/`))) {
    const etag = entry.path.split('/').pop()!;
    assert.ok(known.has(etag), `${label}: unexpected blob ${entry.path}`);
    assert.equal(entry.sha256, known.get(etag), `${label}: blob ${etag} is not complete`);
  }
  // 5. nothing else appeared in the repo folder: blobs, snapshots, refs (no temp files left beside them)
  for (const entry of tree.filter((e) => e.path.startsWith(`${expect.folder}/`))) {
    const rest = entry.path.slice(expect.folder.length + 1);
    assert.match(rest, /^(blobs|snapshots|refs)(\/|$)/, `${label}: stray ${entry.path}`);
    assert.doesNotMatch(rest, /\.(tmp|incomplete|partial)$|airlock-/, `${label}: stray ${entry.path}`);
  }
}

/** One Python process scans every cache: scan_cache_dir warnings, and whether the new commit loads whole. */
export async function pythonCheck(caches: readonly string[], repoId: string, commit: string, files: readonly SweepFile[]): Promise<Record<string, { warnings: string[]; snapshot: string }>> {
  const code = `
import json, os, sys
from huggingface_hub import scan_cache_dir, snapshot_download
out = {}
for cache in json.loads(os.environ["CACHES"]):
    info = scan_cache_dir(cache)
    try:
        path = snapshot_download(os.environ["REPO_ID"], revision=os.environ["COMMIT"], cache_dir=cache, local_files_only=True)
        files = sorted(os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs)
        snap = "complete" if files == sorted(json.loads(os.environ["FILES"])) else "PARTIAL " + repr(files)
    except Exception as e:
        snap = "absent (" + type(e).__name__ + ")"
    out[cache] = {"warnings": [str(w) for w in info.warnings], "snapshot": snap}
print(json.dumps(out))
`;
  const env = { HF_HUB_OFFLINE: '1', CACHES: JSON.stringify(caches), REPO_ID: repoId, COMMIT: commit, FILES: JSON.stringify(files.map((f) => f.path)) };
  const result = await runPython(code, env, { timeoutMs: 300_000 });
  assert.equal(result.code, 0, `python failed:\n${result.stderr}`);
  return JSON.parse(result.stdout.trim().split('\n').pop()!) as Record<string, { warnings: string[]; snapshot: string }>;
}

/** Files in the evidence folder beside the cache (`<cache>.airlock`) that are not records: a dead writer's temp file, say. */
export async function evidenceStrays(cache: string): Promise<string[]> {
  const root = `${cache}.airlock`;
  const out: string[] = [];
  const walk = async (at: string): Promise<void> => {
    for (const entry of await readdir(at, { withFileTypes: true }).catch(() => [])) {
      const path = join(at, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (!/^[0-9a-f]{40}\.json$/.test(entry.name)) out.push(path.slice(root.length + 1));
    }
  };
  await walk(root);
  return out;
}

export async function inParallel<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
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

export async function waitFor(ready: () => boolean, timeoutMs = 20_000): Promise<void> {
  const started = Date.now();
  while (!ready()) {
    if (Date.now() - started > timeoutMs) throw new Error('timed out waiting for the child');
    await new Promise((r) => setTimeout(r, 10));
  }
}
