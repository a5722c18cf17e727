/**
 * publish reads each blob into two reused buffers and refills one only after the socket flushed it. These
 * tests make the socket slow (a relay that takes the request body a little at a time, so writes stay
 * pending while the next piece is read) and use weights of several buffers, from a split bundle whose
 * parts cut through the file: a buffer refilled too early, or a read across a part boundary that went
 * wrong, changes the bytes, the registry refuses the digest, and pull would not get the signed file.
 * And a publish of many small files keeps its few connections, and asks the registry once per blob
 * whether it has it (a mount POST that opens the upload when not).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { startHubServer, type AddedCommit, type HubServer } from '../support/hub-server.ts';
import { airlockBin, cleanEnv, runAirlock } from '../support/cli.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';
import { forwardTo, listenOnLoopback, startRegistry, type TestRegistry } from '../support/registry.ts';
import { tarLayout } from '../support/tar-layout.ts';
import { RegistryClient, type BlobReader } from '../../src/registry/client.ts';
import { AirlockError } from '../../src/errors.ts';
import { heldAtMost, HoldExpired, publishBundle } from '../../src/registry/publish.ts';
import { readPublicKeys } from '../../src/signing/verify.ts';
import { NO_RETRY } from '../../src/hub/retry.ts';

const MiB = 1024 * 1024;
let hub: HubServer;
let registry: TestRegistry;
let dir: string;
let model: AddedCommit;
const weights = safetensorsOf(randomBytes(5 * MiB + 12_345));
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Relays to the registry; request bodies are read 16 KiB at a time with a pause (ms) between reads. */
async function startSlowRelay(target: string, pauseMs = 1): Promise<{ host: string; bodyBytes: () => number; connections: () => number; close(): Promise<void> }> {
  let bodyBytes = 0;
  let connections = 0;
  const server: Server = createServer((req, res) => {
    const upstream = forwardTo(target, req, res);
    void (async () => {
      for await (const chunk of req.iterator({ destroyOnReturn: true })) {
        const data = chunk as Buffer;
        for (let at = 0; at < data.length; at += 16 * 1024) {
          bodyBytes += Math.min(16 * 1024, data.length - at);
          if (!upstream.write(data.subarray(at, at + 16 * 1024))) await new Promise((resolve) => upstream.once('drain', resolve));
          await sleep(pauseMs);
        }
      }
      upstream.end();
    })().catch(() => upstream.destroy());
  });
  server.on('connection', () => (connections += 1));
  return { ...(await listenOnLoopback(server)), bodyBytes: () => bodyBytes, connections: () => connections };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-oci-upload-'));
  hub = await startHubServer();
  model = await hub.addRepo({ id: 'acme/big-weights', files: [{ path: 'config.json', data: '{"model_type": "llama"}\n' }, { path: 'model.safetensors', data: weights }] });
  registry = await startRegistry();
  assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'ML Platform <mlops@example.org>', '--out-dir', join(dir, 'keys')])).code, 0);
});

after(async () => {
  await registry?.close();
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

test('a multi-MiB file from split volumes, uploaded over a slow socket, lands byte for byte (registry digest check, then pull)', { timeout: 300_000 }, async () => {
  const out = join(dir, 'split');
  const exp = await runAirlock(['export', 'acme/big-weights', '--sign-key', join(dir, 'keys', 'signer.key.asc'), '-o', join(out, 'big.airlock.tar'), '--split-size', '1MiB'], {
    env: { HF_ENDPOINT: hub.endpoint },
  });
  assert.equal(exp.code, 0, exp.stderr);
  const names = await readdir(out);
  const parts = names.filter((n) => /\.tar\.\d+$/.test(n));
  assert.ok(parts.length >= 5, `the weights span several parts: ${names.join(', ')}`);
  const index = names.find((n) => n.endsWith('.parts.json'));
  assert.ok(index !== undefined, names.join(', '));

  const relay = await startSlowRelay(registry.host);
  try {
    const published = await runAirlock(['publish', join(out, index), '--to', `oci://${relay.host}/slow`, '--trusted-keys', join(dir, 'keys', 'signer.pub.asc'), '--plain-http', '--json']);
    assert.equal(published.code, 0, published.stderr);
    const result = JSON.parse(published.stdout) as { bytesUploaded: number };
    assert.ok(result.bytesUploaded >= weights.length, published.stdout);
    assert.ok(relay.bodyBytes() >= weights.length, 'the weights went through the slow relay');
  } finally {
    await relay.close();
  }

  const cache = join(dir, 'cache');
  const pulled = await runAirlock(['pull', `oci://${registry.host}/slow/acme/big-weights:main`, '--trusted-keys', join(dir, 'keys', 'signer.pub.asc'), '--plain-http', '--cache-dir', cache]);
  assert.equal(pulled.code, 0, pulled.stderr);
  const got = await readFile(join(cache, 'models--acme--big-weights', 'snapshots', model.commit, 'model.safetensors'));
  assert.equal(got.length, weights.length);
  assert.equal(sha(got), sha(weights));
});

/** A dataset of `count` one-line JSON files on the hub, exported (signed) by the real `export`; its bundle's path. */
async function exportSmallFiles(id: string, count: number): Promise<string> {
  const files = Array.from({ length: count }, (_, i) => ({ path: `data/row-${i}.json`, data: `{"row": ${i}}\n` }));
  await hub.addRepo({ id, type: 'dataset', files });
  const bundle = join(dir, `${id.replace('/', '-')}.airlock.tar`);
  const exp = await runAirlock(['export', `datasets/${id}`, '--sign-key', join(dir, 'keys', 'signer.key.asc'), '-o', bundle], { env: { HF_ENDPOINT: hub.endpoint } });
  assert.equal(exp.code, 0, exp.stderr);
  return bundle;
}

test('publishing many small files reuses a few connections (no connection per blob)', { timeout: 300_000 }, async () => {
  const bundle = await exportSmallFiles('acme/rows', 60);
  const relay = await startSlowRelay(registry.host);
  try {
    const published = await runAirlock(['publish', bundle, '--to', `oci://${relay.host}/rows`, '--trusted-keys', join(dir, 'keys', 'signer.pub.asc'), '--plain-http', '--concurrency', '4']);
    assert.equal(published.code, 0, published.stderr);
    // 64 blobs (60 files, 3 trust layers, the config) × POST + PUT: a few pooled connections (a dozen here), not one or more per blob
    assert.ok(relay.connections() <= 16, `${relay.connections()} connections for 64 blobs`);
  } finally {
    await relay.close();
  }
});

/** Relays to the registry and notes each request and the answer's status; `refuseMounts` answers a mount POST itself with 405. */
async function startRecordingRelay(target: string, refuseMounts = false): Promise<{ host: string; seen: Array<{ method: string; path: string; status: number }>; close(): Promise<void> }> {
  const seen: Array<{ method: string; path: string; status: number }> = [];
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '').replace(/\?.*$/, '');
    const note = { method: req.method ?? '', path: (req.url ?? '').includes('mount=') ? `${path}?mount` : path, status: 0 };
    seen.push(note);
    res.on('finish', () => (note.status = res.statusCode));
    if (refuseMounts && note.path.endsWith('?mount')) {
      res.writeHead(405, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNSUPPORTED","message":"mount not supported"}]}');
      return;
    }
    req.pipe(forwardTo(target, req, res));
  });
  return { ...(await listenOnLoopback(server)), seen };
}

test('a new blob costs one POST and one PUT (no HEAD), a blob already there one POST; a registry that refuses that mount gets HEAD, POST, PUT', { timeout: 300_000 }, async () => {
  const bundle = await exportSmallFiles('acme/parts', 200);
  const publishVia = async (host: string, prefix: string) => {
    const r = await runAirlock(['publish', bundle, '--to', `oci://${host}/${prefix}`, '--trusted-keys', join(dir, 'keys', 'signer.pub.asc'), '--plain-http', '--json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as { blobsUploaded: number; blobsSkipped: number; bytesUploaded: number };
  };
  const count = (seen: Array<{ method: string; path: string; status: number }>, method: string, path: RegExp, status?: number) =>
    seen.filter((s) => s.method === method && path.test(s.path) && (status === undefined || s.status === status)).length;
  // 200 files, SHA256SUMS, its signature, manifest.json, the config
  const blobs = 204;
  const relay = await startRecordingRelay(registry.host);
  try {
    const first = await publishVia(relay.host, 'once');
    assert.equal(first.blobsUploaded, blobs);
    assert.equal(count(relay.seen, 'HEAD', /\/blobs\//), 0, 'no HEAD per blob');
    assert.equal(count(relay.seen, 'POST', /\/blobs\/uploads\/\?mount$/, 202), blobs, JSON.stringify(relay.seen));
    assert.equal(count(relay.seen, 'PUT', /\/blobs\/uploads\//, 201), blobs);
    relay.seen.length = 0;
    const again = await publishVia(relay.host, 'once');
    assert.deepEqual([again.blobsUploaded, again.blobsSkipped, again.bytesUploaded], [0, blobs, 0]);
    assert.equal(count(relay.seen, 'POST', /\/blobs\/uploads\/\?mount$/, 201), blobs, 'one POST per blob, answered "already there"');
    assert.equal(count(relay.seen, 'PUT', /\/blobs\//), 0);
  } finally {
    await relay.close();
  }
  const refusing = await startRecordingRelay(registry.host, true);
  try {
    const first = await publishVia(refusing.host, 'refused');
    // new to this repository (the registry has the bytes from the publish above: linked on PUT)
    assert.equal(first.blobsUploaded, blobs);
    // refused: not asked again (only the uploads already under way when the first answer came asked too)
    const asked = count(refusing.seen, 'POST', /\?mount$/);
    assert.ok(asked >= 1 && asked <= 16, `${asked} mount POSTs for ${blobs} blobs, 16 at a time`);
    assert.equal(count(refusing.seen, 'HEAD', /\/blobs\/sha256:/, 404), blobs);
    assert.equal(count(refusing.seen, 'POST', /\/blobs\/uploads\/$/, 202), blobs);
    assert.equal(count(refusing.seen, 'PUT', /\/blobs\/uploads\//, 201), blobs);
    const again = await publishVia(refusing.host, 'refused');
    assert.deepEqual([again.blobsSkipped, again.bytesUploaded], [blobs, 0]);
  } finally {
    await refusing.close();
  }
  const pulled = await runAirlock(['pull', `oci://${registry.host}/refused/datasets/acme/parts:main`, '--trusted-keys', join(dir, 'keys', 'signer.pub.asc'), '--plain-http', '--cache-dir', join(dir, 'parts-cache')]);
  assert.equal(pulled.code, 0, pulled.stderr);
  // 16 layers downloading at once, each listening for Ctrl-C: no Node warning for the user to puzzle over
  assert.doesNotMatch(pulled.stderr, /Warning|\(node:\d+\)/, pulled.stderr);
});

test('giving back an upload session is best effort: a registry that never answers the DELETE holds the way out up for seconds, not the 10-minute timeout', { timeout: 60_000 }, async () => {
  const silent = createServer(() => undefined);
  const listening = await listenOnLoopback(silent);
  const client = new RegistryClient({ registry: listening.host, plainHttp: true });
  const started = Date.now();
  try {
    await client.abandonUpload('acme/rows', new URL(`http://${listening.host}/v2/acme/rows/blobs/uploads/0d5e?_state=x`));
    await client.close();
    const seconds = (Date.now() - started) / 1000;
    assert.ok(seconds >= 4 && seconds < 15, `gave up after ${seconds} s`);
  } finally {
    await listening.close();
  }
});

/** Waits until `check` holds (polling), or fails after `ms`. */
async function until(check: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const uploadsLeft = async (root: string, repository: string): Promise<string[]> =>
  readdir(join(root, 'docker', 'registry', 'v2', 'repositories', repository, '_uploads')).catch(() => []);

test('a held upload: all but its last piece reaches the registry, which commits nothing until the hold is let go; a refused hold leaves no blob', { timeout: 120_000 }, async () => {
  const own = await startRegistry();
  const relay = await startSlowRelay(own.host);
  const client = new RegistryClient({ registry: relay.host, plainHttp: true });
  try {
    const data = randomBytes(3 * MiB + 5);
    const digest = `sha256:${sha(data)}`;
    const read: BlobReader = async (position, into, length) => void data.copy(into, 0, position, position + length);

    let release!: () => void;
    const upload = client.uploadBlob('held/one', digest, data.length, read, { hold: () => new Promise<void>((resolve) => (release = resolve)) });
    await until(() => relay.bodyBytes() >= 3 * MiB, 30_000, 'the first three pieces');
    await sleep(300);
    assert.equal(relay.bodyBytes(), 3 * MiB, 'the last piece waits for the hold');
    assert.equal(await client.hasBlob('held/one', digest, data.length), false, 'not committed while held');
    release();
    await upload;
    assert.equal(await client.hasBlob('held/one', digest, data.length), true, 'committed once let go');

    const refusal = new AirlockError('E_HASH_MISMATCH', 'the bundle did not verify');
    let refuse!: (error: Error) => void;
    const failing = client.uploadBlob('held/two', `sha256:${sha(data.subarray(1))}`, data.length - 1, async (p, into, n) => void data.copy(into, 0, p + 1, p + 1 + n), {
      hold: () => new Promise<void>((_, reject) => (refuse = reject)),
    });
    await until(() => relay.bodyBytes() >= 6 * MiB, 30_000, 'the second blob but its last piece');
    assert.equal((await uploadsLeft(own.root, 'held/two')).length, 1, 'an upload session open');
    refuse(refusal);
    await assert.rejects(failing, (error) => error === refusal);
    assert.equal(await client.hasBlob('held/two', `sha256:${sha(data.subarray(1))}`, data.length - 1), false);
    // distribution 2.8 cannot cancel a session whose PUT broke off (its state no longer matches); the
    // unfinished data stays in _uploads until the registry purges it — never a blob, never in the repo
    await sleep(300);
    assert.equal(await client.hasBlob('held/two', `sha256:${sha(data.subarray(1))}`, data.length - 1), false, 'still not a blob');
    const links = join(own.root, 'docker', 'registry', 'v2', 'repositories', 'held', 'two', '_layers');
    assert.deepEqual(await readdir(links).catch(() => []), [], 'no layer link in the repository');
  } finally {
    await client.close();
    await relay.close();
    await own.close();
  }
});

test('a bundle that does not verify publishes nothing: no tag, no blob, not even of its good files', { timeout: 300_000 }, async () => {
  // the flaw in the last byte of the weights: found at the very end of the verification. That nothing
  // is committed before it ends (small blobs wait, a large one holds its last piece) is the rule this
  // guards; the hold itself is shown step by step in the test above
  await hub.addRepo({ id: 'acme/late-flaw', files: [{ path: 'config.json', data: '{"model_type": "llama"}\n' }, { path: 'README.md', data: '# late flaw\n' }, { path: 'model.safetensors', data: safetensorsOf(randomBytes(8 * MiB)) }] });
  const bundle = join(dir, 'flipped.airlock.tar');
  const exp = await runAirlock(['export', 'acme/late-flaw', '--sign-key', join(dir, 'keys', 'signer.key.asc'), '-o', bundle], { env: { HF_ENDPOINT: hub.endpoint } });
  assert.equal(exp.code, 0, exp.stderr);
  const tar = await readFile(bundle);
  const entry = tarLayout(tar).find((e) => e.name.endsWith('/model.safetensors'));
  assert.ok(entry !== undefined);
  // the last byte of the weights: the verification finds it only at the very end of the file
  tar.writeUInt8(tar.readUInt8(entry.dataOffset + entry.size - 1) ^ 0x01, entry.dataOffset + entry.size - 1);
  await writeFile(bundle, tar);

  const own = await startRegistry();
  const relay = await startSlowRelay(own.host);
  try {
    const published = await runAirlock(['publish', bundle, '--to', `oci://${relay.host}/bad`, '--trusted-keys', join(dir, 'keys', 'signer.pub.asc'), '--plain-http', '--json']);
    assert.equal(published.code, 3, published.stderr);
    const error = (JSON.parse(published.stdout) as { error: { code: string; message: string } }).error;
    assert.equal(error.code, 'E_HASH_MISMATCH');
    assert.match(error.message, /model\.safetensors/);
  } finally {
    await relay.close();
  }
  try {
    const blobs = join(own.root, 'docker', 'registry', 'v2', 'blobs');
    assert.deepEqual(await readdir(blobs, { recursive: true }).then((names) => names.filter((n) => n.endsWith('data')), () => []), [], 'no blob committed');
    const tags = await fetch(`http://${own.host}/v2/bad/acme/late-flaw/tags/list`);
    assert.equal(tags.status, 404, 'no tag');
    // the small blobs' upload sessions, opened while the verification ran, are given back (DELETE: the
    // registry drops the session's data and start time). Only the weights' may stay: its PUT broke off,
    // and distribution cannot cancel such a session (see the held upload above)
    const uploads = join(own.root, 'docker', 'registry', 'v2', 'repositories', 'bad', 'acme', 'late-flaw', '_uploads');
    const open: string[] = [];
    for (const id of await uploadsLeft(own.root, 'bad/acme/late-flaw')) {
      if ((await readdir(join(uploads, id))).includes('startedat')) open.push(id);
    }
    assert.ok(open.length <= 1, `${open.length} upload sessions left open: ${open.join(', ')}`);
  } finally {
    await own.close();
  }
});

test('Ctrl-C while the weights are on their way: E_INTERRUPTED, exit 130, nothing tagged; a re-run publishes', { timeout: 120_000 }, async () => {
  const bundle = join(dir, 'interrupted.airlock.tar');
  const exp = await runAirlock(['export', 'acme/big-weights', '--sign-key', join(dir, 'keys', 'signer.key.asc'), '-o', bundle], { env: { HF_ENDPOINT: hub.endpoint } });
  assert.equal(exp.code, 0, exp.stderr);
  const relay = await startSlowRelay(registry.host, 5);
  try {
    const args = ['publish', bundle, '--to', `oci://${relay.host}/interrupted`, '--trusted-keys', join(dir, 'keys', 'signer.pub.asc'), '--plain-http', '--json'];
    const child = spawn(process.execPath, [airlockBin, ...args], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
    // the 5 MiB of weights take over a second through this relay: interrupt after the first MiB
    await until(() => relay.bodyBytes() >= MiB, 30_000, 'the weights to be on their way');
    child.kill('SIGINT');
    const r = await exited;
    assert.equal(r.signal, null, 'handled, not killed by the signal');
    assert.equal(r.code, 130, stderr);
    assert.equal((JSON.parse(stdout) as { error: { code: string } }).error.code, 'E_INTERRUPTED');
    assert.match(stderr, /nothing was published/);
    assert.equal((await fetch(`http://${registry.host}/v2/interrupted/acme/big-weights/tags/list`)).status, 404, 'no tag');
  } finally {
    await relay.close();
  }
  const again = await runAirlock(['publish', bundle, '--to', `oci://${registry.host}/interrupted`, '--trusted-keys', join(dir, 'keys', 'signer.pub.asc'), '--plain-http']);
  assert.equal(again.code, 0, again.stderr);
});

test('heldAtMost: the verification, or HoldExpired after the limit; a failed verification passes through', async () => {
  await heldAtMost(Promise.resolve(), 1_000);
  await assert.rejects(heldAtMost(new Promise<void>(() => undefined), 10), HoldExpired);
  const bad = new AirlockError('E_HASH_MISMATCH', 'bad bundle');
  await assert.rejects(heldAtMost(Promise.reject(bad), 1_000), (error) => error === bad);
});

test('a last piece held past the limit: that upload is abandoned and made again after the verification, nothing committed before', { timeout: 120_000 }, async () => {
  // weights whose verification takes far longer than the first steps of their upload (a client that
  // answers at once): the hold meets a limit of 0 ms while the verification still runs
  await hub.addRepo({ id: 'acme/slow-verify', files: [{ path: 'config.json', data: '{"model_type": "llama"}\n' }, { path: 'model.safetensors', data: safetensorsOf(randomBytes(64 * MiB)) }] });
  const bundle = join(dir, 'slow-verify.airlock.tar');
  const exp = await runAirlock(['export', 'acme/slow-verify', '--sign-key', join(dir, 'keys', 'signer.key.asc'), '-o', bundle], { env: { HF_ENDPOINT: hub.endpoint } });
  assert.equal(exp.code, 0, exp.stderr);
  // every byte counted by the verification: what each call saw
  let planned = -1;
  let counted = 0;
  const verifiedAll = (): boolean => counted === planned;
  const calls: Array<{ name: string; held: boolean; outcome: string; verified: boolean }> = [];
  const events: string[] = [];
  const fake = {
    registry: 'fake.registry.invalid',
    // a registry that refuses a mount from the repository itself: HEAD, then a plain upload
    openUpload: async () => undefined,
    hasBlob: async () => false,
    uploadBlob: async (_repository: string, digest: string, size: number, _read: BlobReader, options: { hold?: () => Promise<void> } = {}) => {
      const name = size > MiB ? 'weights' : digest;
      if (options.hold === undefined) {
        calls.push({ name, held: false, outcome: 'committed', verified: verifiedAll() });
        return;
      }
      try {
        await options.hold();
        calls.push({ name, held: true, outcome: 'committed', verified: verifiedAll() });
      } catch (error) {
        calls.push({ name, held: true, outcome: (error as Error).constructor.name, verified: verifiedAll() });
        throw error;
      }
    },
    putManifest: async (_repository: string, tag: string) => {
      events.push(`manifest ${tag} (verified: ${verifiedAll()})`);
      return 'sha256:0';
    },
  };
  const result = await publishBundle({
    bundlePath: bundle,
    client: fake as unknown as RegistryClient,
    prefix: 'models',
    trust: { keys: await readPublicKeys(await readFile(join(dir, 'keys', 'signer.pub.asc')), 'signer.pub.asc') },
    retry: NO_RETRY,
    holdLimitMs: 0,
    handleSignals: false,
    progress: {
      verify: { planned: (bytes) => (planned = bytes), start: () => undefined, bytes: (n) => (counted += n), finish: () => undefined },
      upload: { planned: () => undefined, start: () => undefined, bytes: () => undefined, finish: () => undefined },
    },
  });
  assert.equal(result.repos.length, 1);
  const weights = calls.filter((c) => c.name === 'weights');
  assert.deepEqual(
    weights.map((c) => [c.held, c.outcome, c.verified]),
    [
      [true, 'HoldExpired', false],
      [false, 'committed', true],
    ],
    JSON.stringify(calls),
  );
  assert.ok(calls.every((c) => c.outcome !== 'committed' || c.verified), `nothing committed before the verification: ${JSON.stringify(calls)}`);
  assert.deepEqual(events, ['manifest main (verified: true)', `manifest ${result.repos[0]!.commit} (verified: true)`]);
});
