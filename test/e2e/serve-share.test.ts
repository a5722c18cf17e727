/**
 * `airlock serve` shares one hash pass between concurrent downloads of a file (src/serve/shared-chunks.ts).
 * What a user must still see: every client gets exactly the file's bytes, whatever its pace or range; and
 * a blob that no longer matches its name reaches none of several concurrent clients as a complete file.
 * The files are larger than the sharing window (32 chunks of 1 MiB), exported and imported by the real CLI.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, readlink, rm } from 'node:fs/promises';
import { get, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startHubServer, type AddedCommit, type HubServer } from '../support/hub-server.ts';
import { run, runAirlock } from '../support/cli.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';
import { startServe, type ServeProcess } from '../support/serve-process.ts';

const MiB = 1024 * 1024;
let hub: HubServer;
let dir: string;
let cache: string;
let serve: ServeProcess;
let big: Buffer;
let flipped: AddedCommit;
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-serve-share-'));
  cache = join(dir, 'hub');
  const keys = join(dir, 'keys');
  hub = await startHubServer();
  // 40 MiB and 20 MiB: more chunks than the window; odd sizes, so the last chunk is partial
  big = safetensorsOf(randomBytes(40 * MiB + 4099));
  await hub.addRepo({ id: 'acme/big', files: [{ path: 'model.safetensors', data: big }] });
  flipped = await hub.addRepo({ id: 'acme/flipped', files: [{ path: 'model.safetensors', data: safetensorsOf(randomBytes(20 * MiB + 77)) }] });
  assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'ML Platform <mlops@example.org>', '--out-dir', keys])).code, 0);
  const bundle = join(dir, 'big.airlock.tar');
  const exp = await runAirlock(['export', 'acme/big', 'acme/flipped', '--sign-key', join(keys, 'signer.key.asc'), '-o', bundle], { env: { HF_ENDPOINT: hub.endpoint } });
  assert.equal(exp.code, 0, exp.stderr);
  const imp = await runAirlock(['import', bundle, '--trusted-keys', join(keys, 'signer.pub.asc')], { env: { HF_HUB_CACHE: cache } });
  assert.equal(imp.code, 0, imp.stderr);
  serve = await startServe(['--cache-dir', cache]);
});

after(async () => {
  await serve?.stop();
  await hub?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** curl into sha256sum: the digest of what the client received, and curl's exit code. */
async function curlDigest(url: string, range?: string): Promise<{ code: number | null; digest: string; stderr: string }> {
  const header = range === undefined ? '' : `-H 'Range: ${range}'`;
  const r = await run('bash', ['-c', `set -o pipefail; curl -sSf --noproxy '*' ${header} '${url}' | sha256sum`]);
  return { code: r.code, digest: r.stdout.split(' ')[0] ?? '', stderr: r.stderr };
}

/** A GET whose response is held paused once its headers arrive; `drain()` then reads it to the end. */
function pausedGet(url: string): Promise<{ res: IncomingMessage; drain: () => Promise<{ bytes: Buffer; complete: boolean }> }> {
  return new Promise((resolve, reject) => {
    const req = get(url, (res) => {
      res.pause();
      const chunks: Buffer[] = [];
      const drain = () =>
        new Promise<{ bytes: Buffer; complete: boolean }>((done) => {
          res.on('data', (d: Buffer) => chunks.push(d));
          // a connection cut short of Content-Length: 'aborted'/'error', then 'close' with complete false
          res.on('error', () => undefined);
          res.on('close', () => done({ bytes: Buffer.concat(chunks), complete: res.complete }));
          res.resume();
        });
      resolve({ res, drain });
    });
    req.on('error', reject);
  });
}

describe('one hash pass shared by concurrent clients', () => {
  test('many concurrent clients of one large file, full and ranged, all receive the exact bytes', { timeout: 180_000 }, async () => {
    const url = `${serve.url}/acme/big/resolve/main/model.safetensors`;
    const size = big.length;
    const ranges: Array<[string, Buffer]> = [
      [`bytes=${MiB + 12345}-`, big.subarray(MiB + 12345)], // starts inside a chunk, ends at the last byte
      [`bytes=${3 * MiB}-`, big.subarray(3 * MiB)], // starts on a chunk boundary
      [`bytes=${5 * MiB + 1}-${20 * MiB - 2}`, big.subarray(5 * MiB + 1, 20 * MiB - 1)], // stops before the end
      [`bytes=-100`, big.subarray(size - 100)], // the last bytes only (the whole file is walked)
      [`bytes=${size - MiB - 3}-${size - 1}`, big.subarray(size - MiB - 3)], // across the last chunk boundary
    ];
    const results = await Promise.all([
      ...Array.from({ length: 10 }, () => curlDigest(url).then((r) => ({ ...r, want: sha256(big), what: 'whole file' }))),
      ...ranges.map(([range, bytes]) => curlDigest(url, range).then((r) => ({ ...r, want: sha256(bytes), what: range }))),
    ]);
    for (const r of results) {
      assert.equal(r.code, 0, `${r.what}: ${r.stderr}`);
      assert.equal(r.digest, r.want, `${r.what}: wrong bytes`);
    }
  });

  test('a client left far behind (paused while others finish) still gets the exact bytes', { timeout: 180_000 }, async () => {
    const url = `${serve.url}/acme/big/resolve/main/model.safetensors`;
    const slow = await pausedGet(url);
    assert.equal(slow.res.statusCode, 200);
    // the others run to the end of the file while the slow one reads nothing
    const fast = await Promise.all(Array.from({ length: 4 }, () => curlDigest(url)));
    for (const r of fast) assert.deepEqual([r.code, r.digest], [0, sha256(big)], r.stderr);
    const got = await slow.drain();
    assert.ok(got.complete);
    assert.equal(got.bytes.length, big.length);
    assert.equal(sha256(got.bytes), sha256(big));
  });

  test('a flipped byte while several clients download at once: none gets a complete file, the blob is refused afterwards', { timeout: 180_000 }, async () => {
    const link = join(cache, 'models--acme--flipped', 'snapshots', flipped.commit, 'model.safetensors');
    const blob = join(dirname(link), await readlink(link));
    const handle = await open(blob, 'r+');
    const one = Buffer.alloc(1);
    const at = 11 * MiB + 5;
    await handle.read(one, 0, 1, at);
    one[0] = one[0]! ^ 0x40;
    await handle.write(one, 0, 1, at);
    await handle.close();
    const size = flipped.files[0]!.size;
    const url = `${serve.url}/acme/flipped/resolve/main/model.safetensors`;

    // four clients that all hold a 200 before any of them reads on, and four curls started at once
    const held = await Promise.all(Array.from({ length: 4 }, () => pausedGet(url)));
    for (const h of held) assert.equal(h.res.statusCode, 200);
    const [drained, curls] = await Promise.all([
      Promise.all(held.map((h) => h.drain())),
      Promise.all(Array.from({ length: 4 }, () => run('curl', ['-sSf', '--noproxy', '*', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', url]))),
    ]);
    for (const d of drained) {
      assert.equal(d.complete, false, 'the connection must be cut short');
      assert.ok(d.bytes.length < size, `got ${d.bytes.length} of ${size} bytes`);
    }
    for (const c of curls) {
      // 18: cut short of Content-Length; 22: the blob was already known bad (422)
      assert.ok(c.code === 18 || c.code === 22, `curl exit ${c.code}: ${c.stdout} ${c.stderr}`);
      assert.ok(Number(c.stdout.split(' ')[1]) < size);
    }
    assert.match(serve.stderr(), /"event":"integrity-failure".*acme\/flipped/);
    const head = await run('curl', ['-s', '--noproxy', '*', '-o', '/dev/null', '-w', '%{http_code}', '-I', url]);
    assert.equal(head.stdout, '422');
  });
});
