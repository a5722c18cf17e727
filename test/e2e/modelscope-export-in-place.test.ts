/**
 * ModelScope exports at parity with Hugging Face ones (issue 13 item 7): files are fetched by Range
 * straight into their final offsets in `<out>.partial` — no copy in the work dir, so the disk holds
 * the model once — and an export killed anywhere (kill -9) resumes from the partial bundle, fetching
 * again less than 1 % of what it had received, every file still checked against the listing's SHA-256.
 * The ModelScope counterparts of export-in-place.test.ts and export-resilience.test.ts, against the
 * protocol-faithful test ModelScope (API on 127.0.0.1, LFS bytes behind signed URLs on 127.0.0.2).
 *
 * Every wait here is on observable state (what the partial bundle's progress slots say, what the
 * server has served), never on time.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { compareBytes } from '../../src/bundle/format.ts';
import { readPartialProgress } from '../../src/export/bundle-file.ts';
import { airlockBin, cleanEnv, repoRoot, run, runAirlock } from '../support/cli.ts';
import { startModelScopeServer, type ModelScopeServer, type MsAddedCommit, type MsFileInfo, type MsNetwork, type MsRequestRecord } from '../support/modelscope-server.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';
import { tarLayout } from '../support/tar-layout.ts';

const MiB = 1024 * 1024;
let server: ModelScopeServer;
let dir: string;

const env = () => ({ MODELSCOPE_ENDPOINT: server.endpoint, AIRLOCK_RETRY_BASE_MS: '10' });

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-ms-in-place-'));
  server = await startModelScopeServer();
});

after(async () => {
  await server?.close();
  await rm(dir, { recursive: true, force: true });
});

/** Which listed file a download request was for: `FilePath=` on the API, the sha256 on the CDN. */
function fileOf(files: readonly MsFileInfo[], r: MsRequestRecord): MsFileInfo | undefined {
  const [path, query] = r.url.split('?') as [string, string | undefined];
  const oss = /^\/oss\/([0-9a-f]{64})$/.exec(path)?.[1];
  if (oss !== undefined) return files.find((f) => f.sha256 === oss);
  const filePath = new URLSearchParams(query ?? '').get('FilePath');
  return filePath === null ? undefined : files.find((f) => f.path === filePath);
}

/** Content bytes served for `file` since request `from`. */
function servedFor(files: readonly MsFileInfo[], file: MsFileInfo, from = 0): number {
  return server.requests.slice(from).filter((r) => fileOf(files, r) === file).reduce((n, r) => n + r.bodyBytes, 0);
}

/** Per file, the bytes the partial bundle holds (its verified prefix), and whether it is complete. */
async function onDisk(out: string, files: readonly MsFileInfo[]): Promise<Map<string, { kept: number; complete: boolean }>> {
  // one repo: bundle order is path order
  const ordered = [...files].sort((a, b) => compareBytes(a.path, b.path));
  const progress = await readPartialProgress(`${out}.partial`, ordered.length);
  return new Map(ordered.map((f, i) => [f.path, progress[i] ?? { kept: 0, complete: false }]));
}

/** Every regular file under `root`, relative, sorted. */
async function filesUnder(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(root.length + 1)).sort();
}

/**
 * Whether anything but the pinned commit is in the work dir: downloads copied through it (what
 * ModelScope exports did before issue 13). The waits below also end on it, so such a regression fails
 * at once instead of waiting for progress the partial bundle never shows.
 */
async function copiesIn(work: string): Promise<boolean> {
  return (await filesUnder(work)).some((f) => !/\/refs\/[^/]+$/.test(f));
}

/**
 * Starts the CLI with the link stalled at `network.stallAtBytes`, waits until `ready()` holds (state
 * the test can observe), runs `meanwhile`, then kills it (SIGKILL) — or, with `finish`, heals the link
 * and lets it end. Resolves with the exit code (null when killed) and stderr.
 */
async function exportUntil(
  args: string[],
  network: MsNetwork,
  ready: () => Promise<boolean>,
  options: { finish?: boolean; meanwhile?: () => Promise<void> } = {},
): Promise<{ code: number | null; stderr: string }> {
  server.setNetwork(network);
  const child = spawn(process.execPath, [airlockBin, ...args], { cwd: repoRoot, env: cleanEnv(env()), stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let done = false;
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  void exited.then(() => (done = true));
  try {
    while (!done && !(await ready())) await sleep(5);
    assert.ok(!done, `the export ended before the point the test waited for: ${stderr}`);
    await options.meanwhile?.();
    if (options.finish === true) server.setNetwork({});
    else child.kill('SIGKILL');
    return { code: await exited, stderr };
  } finally {
    server.setNetwork({});
  }
}

describe('ModelScope export writes the bundle in place', () => {
  let first: MsAddedCommit;
  let total: number;
  before(() => {
    first = server.addRepo({
      id: 'acme/placed',
      files: [
        { path: 'config.json', data: '{"model_type":"qwen2"}\n' },
        { path: 'tokenizer.json', data: randomBytes(200_000).toString('base64') },
        { path: 'model-00001-of-00002.safetensors', data: safetensorsOf(randomBytes(3 * MiB)) },
        { path: 'model-00002-of-00002.safetensors', data: safetensorsOf(randomBytes(2 * MiB + 17)) },
        { path: 'empty.txt', data: '' },
      ],
    });
    total = first.files.reduce((n, f) => n + f.size, 0);
  });

  test('mid-download the work dir holds only the pinned commit; each byte is fetched once; a standard, verified tar', async () => {
    const out = join(dir, 'placed', 'b.airlock.tar');
    const work = join(dir, 'placed', 'work');
    await mkdir(join(dir, 'placed'), { recursive: true });
    const keys = join(dir, 'keys');
    const k = await runAirlock(['keys', 'generate', '--user-id', 'Ms <ms@example.org>', '--out-dir', keys]);
    assert.equal(k.code, 0, k.stderr);
    const servedBefore = server.contentBytesServed;
    const from = server.requests.length;
    let during: string[] = [];
    const args = ['export', '--source', 'modelscope', 'acme/placed', '--sign-key', join(keys, 'signer.key.asc'), '-o', out, '--work-dir', work, '--keep-work-dir'];
    const half = Math.floor(total / 2);
    const r = await exportUntil(
      args,
      { stallAtBytes: servedBefore + half },
      // the link stalled at half the model, and every byte served is in the partial bundle
      async () => {
        const held = [...(await onDisk(out, first.files)).values()].reduce((n, p) => n + p.kept, 0);
        return (server.contentBytesServed - servedBefore === half && held === half) || (await copiesIn(work));
      },
      {
        finish: true,
        meanwhile: async () => {
          during = await filesUnder(work);
        },
      },
    );
    assert.equal(r.code, 0, r.stderr);
    // before issue 13, ModelScope files streamed into <work>/…/partial/<path> and were copied afterwards
    assert.deepEqual(during, ['models--acme--placed/refs/master'], 'no payload in the work dir while downloading');
    assert.deepEqual(await filesUnder(work), ['models--acme--placed/refs/master'], '--keep-work-dir: no payload was ever written there');
    assert.equal(server.contentBytesServed - servedBefore, total, 'every byte served exactly once');
    assert.ok(!server.requests.slice(from).some((q) => q.url.includes('empty.txt')), 'no request for a zero-byte file');

    // GNU tar lists it, sha256sum -c passes on the extraction, airlock verify checks signature and hashes
    const { stdout } = await run('tar', ['-tf', out]);
    const names = stdout.trim().split('\n');
    assert.deepEqual(names.slice(0, 3), ['SHA256SUMS', 'SHA256SUMS.asc', 'manifest.json']);
    assert.equal(names.length, 3 + first.files.length);
    const x = join(dir, 'placed', 'x');
    await mkdir(x);
    assert.equal((await run('tar', ['-xf', out, '-C', x])).code, 0);
    const sums = await run('sha256sum', ['--strict', '-c', 'SHA256SUMS'], { cwd: x });
    assert.equal(sums.code, 0, sums.stdout + sums.stderr);
    const v = await runAirlock(['verify', out, '--trusted-keys', join(keys, 'signer.pub.asc')]);
    assert.equal(v.code, 0, v.stderr);
    for (const f of first.files) {
      assert.match(await readFile(join(x, 'SHA256SUMS'), 'utf8'), new RegExp(`^${f.sha256}  payload/models/acme/placed/${first.commit}/${f.path.replace(/\./g, '\\.')}$`, 'm'));
    }
  });

  test('a re-run pinned to a commit its branch has left is refused, naming both (files are served by ref name only)', async () => {
    const work = join(dir, 'placed', 'work'); // the first test kept it: pinned to first.commit
    const moved = server.addCommit('acme/placed', [{ path: 'config.json', data: '{"model_type":"qwen3"}\n' }]);
    const out = join(dir, 'placed', 'again.airlock.tar');
    const r = await runAirlock(['export', '--source', 'modelscope', 'acme/placed', '--unsigned', '-o', out, '--work-dir', work], { env: env() });
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, new RegExp(`E_REVISION_NOT_FOUND`));
    assert.match(r.stderr, new RegExp(`acme/placed@master moved on: it is commit ${moved.commit} now, this export is pinned to ${first.commit}`));
    assert.match(r.stderr, /hint: .*delete the work dir/);
    assert.ok(!existsSync(out) && !existsSync(`${out}.partial`), 'nothing written');
  });

  test('a dataset is written in place too: nothing in the work dir, each byte fetched once, the listing hash checked', async () => {
    const ds = server.addRepo({
      id: 'acme/rows',
      type: 'dataset',
      files: [
        { path: 'README.md', data: '# rows\n' },
        { path: 'data/train.parquet', data: randomBytes(700_000), lfs: true },
        { path: 'data/test.jsonl', data: '{"q":1}\n' },
      ],
    });
    const out = join(dir, 'rows', 'rows.airlock.tar');
    const work = join(dir, 'rows', 'work');
    await mkdir(join(dir, 'rows'), { recursive: true });
    const servedBefore = server.contentBytesServed;
    const r = await runAirlock(['export', '--source', 'modelscope', 'datasets/acme/rows', '--unsigned', '-o', out, '--work-dir', work, '--keep-work-dir'], { env: env() });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await filesUnder(work), ['datasets--acme--rows/refs/master']);
    assert.equal(server.contentBytesServed - servedBefore, ds.files.reduce((n, f) => n + f.size, 0));
    const x = join(dir, 'rows', 'x');
    await mkdir(x);
    assert.equal((await run('tar', ['-xf', out, '-C', x])).code, 0);
    const sums = await run('sha256sum', ['--strict', '-c', 'SHA256SUMS'], { cwd: x });
    assert.equal(sums.code, 0, sums.stdout + sums.stderr);

    // bytes that do not match the listing's SHA-256 never make a bundle (3 attempts, as the SDK)
    server.fault('README.md', { kind: 'corrupt', times: 3 });
    const bad = join(dir, 'rows', 'bad.airlock.tar');
    const b = await runAirlock(['export', '--source', 'modelscope', 'datasets/acme/rows', '--unsigned', '-o', bad], { env: env() });
    assert.equal(b.code, 4, b.stderr);
    assert.match(b.stderr, /E_DOWNLOAD_INTEGRITY/);
    assert.match(b.stderr, /README\.md: sha256 mismatch/);
    assert.ok(!existsSync(bad));
  });
});

describe('ModelScope export across runs: killed at random points and resumed', () => {
  let first: MsAddedCommit;
  let reference: string;
  let totalBytes: number;

  before(async () => {
    first = server.addRepo({
      id: 'acme/big',
      files: [
        { path: 'config.json', data: '{"model_type":"qwen2"}\n' },
        { path: 'tokenizer.json', data: randomBytes(300_000).toString('base64') },
        { path: 'model-00001-of-00002.safetensors', data: safetensorsOf(randomBytes(16 * MiB)) },
        { path: 'model-00002-of-00002.safetensors', data: safetensorsOf(randomBytes(8 * MiB + 777)) },
      ],
      tags: ['v1'],
    });
    totalBytes = first.files.reduce((n, f) => n + f.size, 0);
    reference = join(dir, 'reference.airlock.tar');
    const r = await runAirlock(['export', '--source', 'modelscope', 'acme/big', '--unsigned', '-o', reference], { env: env() });
    assert.equal(r.code, 0, r.stderr);
  });

  /** The payload region of a bundle (everything after SHA256SUMS, the signature and the manifest). */
  async function payloadBytes(path: string): Promise<Buffer> {
    const buf = await readFile(path);
    const first = tarLayout(buf).find((e) => e.name.startsWith('payload/'));
    assert.ok(first, 'the bundle has payload entries');
    return buf.subarray(first.headerOffset);
  }

  /** Bytes served, since request `from`, that fall inside what the partial bundle already held. */
  function refetched(from: number, held: Map<string, { kept: number }>): number {
    let total = 0;
    for (const r of server.requests.slice(from)) {
      if (r.bodyBytes === 0) continue;
      const file = fileOf(first.files, r);
      assert.ok(file, `which file is ${r.url}?`);
      const start = Number(/^bytes=(\d+)-/.exec(r.range ?? '')?.[1] ?? 0);
      total += Math.max(0, Math.min(held.get(file.path)?.kept ?? 0, start + r.bodyBytes) - start);
    }
    return total;
  }

  test('the same payload as an uninterrupted export, < 1 % fetched again after three kill -9', { timeout: 180_000 }, async (t) => {
    const out = join(dir, 'resumed.airlock.tar');
    const args = ['export', '--source', 'modelscope', 'acme/big', '--unsigned', '-o', out];
    // Three kills at random points of a slow link (8 MiB/s per connection), the second run also
    // suffering connections cut mid-file that it resumes by itself (Range: bytes=N-).
    const points = [0.1 + Math.random() * 0.15, 0.15 + Math.random() * 0.15, 0.15 + Math.random() * 0.15].map((f) => Math.floor(f * totalBytes));
    const servedBefore = server.contentBytesServed;
    let again = 0;
    let from = server.requests.length;
    let held = await onDisk(out, first.files);
    const heldBytes = (): number => [...held.values()].reduce((n, x) => n + x.kept, 0);
    // Killed once the partial bundle holds `bytes` more (observable state, whatever the load on the
    // machine), while the link still carries up to 2 MiB more: a kill with bytes in flight.
    const killedAfter = async (bytes: number): Promise<void> => {
      const goal = heldBytes() + bytes;
      const network = { bytesPerSecond: 8 * MiB, stallAtBytes: server.contentBytesServed + bytes + 2 * MiB };
      const r = await exportUntil(args, network, async () => [...(await onDisk(out, first.files)).values()].reduce((n, x) => n + x.kept, 0) >= goal || (await copiesIn(`${out}.work`)));
      assert.equal(r.code, null, r.stderr);
      assert.ok(!(await copiesIn(`${out}.work`)), 'downloads go into the partial bundle, not the work dir');
      again += refetched(from, held);
      from = server.requests.length;
      held = await onDisk(out, first.files);
    };
    await killedAfter(points[0]!);
    server.fault('model-00001-of-00002.safetensors', { kind: 'cut', after: 1 * MiB + Math.floor(Math.random() * 2 * MiB) });
    server.fault('model-00002-of-00002.safetensors', { kind: 'cut', after: 1 * MiB + Math.floor(Math.random() * 2 * MiB) });
    await killedAfter(points[1]!);
    await killedAfter(points[2]!);
    const received = heldBytes();
    assert.ok(existsSync(`${out}.partial`), 'the partial bundle was kept');

    const r = await runAirlock([...args, '--json'], { env: env() });
    assert.equal(r.code, 0, r.stderr);
    again += refetched(from, held);
    assert.equal(JSON.parse(r.stdout).repos[0].commit, first.commit);
    assert.ok((await payloadBytes(out)).equals(await payloadBytes(reference)), 'payload byte-identical to the uninterrupted export');
    assert.ok(!existsSync(`${out}.partial`) && !existsSync(`${out}.work`), 'the partial became the bundle; the work dir is gone');

    // "fetched again": bytes served for ranges the partial bundle already held when a run started;
    // "lost in flight": bytes served that never reached the disk of a killed process (any client loses those)
    const share = again / received;
    const lost = server.contentBytesServed - servedBefore - totalBytes - again;
    t.diagnostic(
      `kill points ${points.join(', ')}; held before the final run ${received} B; fetched again ${again} B (${(share * 100).toFixed(3)} %); ` +
        `lost in flight at the kills ${lost} B (${((lost / received) * 100).toFixed(3)} %)`,
    );
    assert.ok(received > totalBytes * 0.3, `the interrupted runs got somewhere (${received} B)`);
    assert.ok(share < 0.01, `fetched again ${again} B = ${(share * 100).toFixed(2)} % of the ${received} B received before`);
  });

  test('--connections-per-file: closed Range requests for the parts, cut and resumed, each byte served once', { timeout: 120_000 }, async () => {
    const out = join(dir, 'parts.airlock.tar');
    const shard = first.files.find((f) => f.path === 'model-00001-of-00002.safetensors')!;
    server.fault(shard.path, { kind: 'cut', after: 2 * MiB });
    const from = server.requests.length;
    const servedBefore = server.contentBytesServed;
    const r = await runAirlock(['export', '--source', 'modelscope', 'acme/big', '--unsigned', '-o', out, '--connections-per-file', '2'], { env: env() });
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await payloadBytes(out)).equals(await payloadBytes(reference)), 'payload byte-identical to the one-connection export');
    assert.equal(server.contentBytesServed - servedBefore, totalBytes, 'nothing fetched twice');
    // 16 MiB in two parts (at least 8 MiB each): a closed range, then an open one, through the API's redirect to the CDN
    const half = Math.floor(shard.size / 2);
    const ranges = server.requests.slice(from).filter((q) => q.host === '127.0.0.2' && fileOf(first.files, q) === shard).map((q) => q.range);
    for (const part of [`bytes=0-${half - 1}`, `bytes=${half}-`]) assert.ok(ranges.includes(part), `${part} in ${ranges.join(', ')}`);
    assert.ok(ranges.length >= 3, `the cut part was resumed: ${ranges.join(', ')}`);
  });

  test('a re-run stays pinned, skips completed files without a request, resumes the partial one from where the disk says', { timeout: 120_000 }, async () => {
    const out = join(dir, 'pinned.airlock.tar');
    const args = ['export', '--source', 'modelscope', 'acme/big', '--revision', 'v1', '--unsigned', '-o', out, '--keep-work-dir', '--concurrency', '1'];
    const config = first.files.find((f) => f.path === 'config.json')!;
    const shard = first.files.find((f) => f.path === 'model-00001-of-00002.safetensors')!;
    const from = server.requests.length;
    // one file at a time, in path order: config.json completes first; kill once the partial bundle
    // says so AND holds every byte served of the first shard (the link stalls a few MiB into it)
    const r = await exportUntil(args, { stallAtBytes: server.contentBytesServed + config.size + 3 * MiB }, async () => {
      const progress = await onDisk(out, first.files);
      const kept = progress.get(shard.path)!.kept;
      return (progress.get(config.path)!.complete && kept > 0 && kept === servedFor(first.files, shard, from)) || (await copiesIn(`${out}.work`));
    });
    assert.equal(r.code, null, r.stderr);
    assert.ok(!(await copiesIn(`${out}.work`)), 'downloads go into the partial bundle, not the work dir');
    const held = await onDisk(out, first.files);
    const pinned = (await readFile(join(`${out}.work`, 'models--acme--big', 'refs', 'v1'), 'utf8')).trim();
    assert.equal(pinned, first.commit);

    const start = server.requests.length;
    const again = await runAirlock(args, { env: env() });
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, new RegExp(`acme/big@v1 stays pinned to commit ${pinned}, resolved by an earlier run`));
    assert.match(again.stderr, /config\.json: already downloaded and verified/);
    assert.match(again.stderr, /model-00001-of-00002\.safetensors: resuming, [\d.]+ [KM]iB of [\d.]+ MiB already here/);
    const later = server.requests.slice(start);
    // one look at the revisions, to check the tag still points at the pinned commit (files are served by ref name)
    assert.equal(later.filter((q) => q.url.includes('/revisions')).length, 1);
    assert.equal(later.filter((q) => fileOf(first.files, q) === config).length, 0, 'a completed file is not fetched again');
    assert.equal(refetched(start, held), 0, 'no byte the partial bundle held was fetched again');
    assert.ok(later.some((q) => q.range === `bytes=${held.get(shard.path)!.kept}-`), 'the shard resumed with an open Range where the disk ended');
  });
});
