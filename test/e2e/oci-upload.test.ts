/**
 * publish reads each blob into two reused buffers and refills one only after the socket flushed it. These
 * tests make the socket slow (a relay that takes the request body a little at a time, so writes stay
 * pending while the next piece is read) and use weights of several buffers, from a split bundle whose
 * parts cut through the file: a buffer refilled too early, or a read across a part boundary that went
 * wrong, changes the bytes, the registry refuses the digest, and pull would not get the signed file.
 * And a publish of many small files keeps its few connections (HEAD, POST, PUT per blob on each).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startHubServer, type AddedCommit, type HubServer } from '../support/hub-server.ts';
import { runAirlock } from '../support/cli.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';
import { forwardTo, listenOnLoopback, startRegistry, type TestRegistry } from '../support/registry.ts';

const MiB = 1024 * 1024;
let hub: HubServer;
let registry: TestRegistry;
let dir: string;
let model: AddedCommit;
const weights = safetensorsOf(randomBytes(5 * MiB + 12_345));
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Relays to the registry; request bodies are read 16 KiB at a time with a pause between reads. */
async function startSlowRelay(target: string): Promise<{ host: string; bodyBytes: () => number; connections: () => number; close(): Promise<void> }> {
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
          await sleep(1);
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

test('publishing many small files reuses a few connections (no connection per blob, HEADs included)', { timeout: 300_000 }, async () => {
  const files = Array.from({ length: 60 }, (_, i) => ({ path: `data/row-${i}.json`, data: `{"row": ${i}}\n` }));
  await hub.addRepo({ id: 'acme/rows', type: 'dataset', files });
  const bundle = join(dir, 'rows.airlock.tar');
  const exp = await runAirlock(['export', 'datasets/acme/rows', '--sign-key', join(dir, 'keys', 'signer.key.asc'), '-o', bundle], { env: { HF_ENDPOINT: hub.endpoint } });
  assert.equal(exp.code, 0, exp.stderr);
  const relay = await startSlowRelay(registry.host);
  try {
    const published = await runAirlock(['publish', bundle, '--to', `oci://${relay.host}/rows`, '--trusted-keys', join(dir, 'keys', 'signer.pub.asc'), '--plain-http', '--concurrency', '4']);
    assert.equal(published.code, 0, published.stderr);
    // 64 blobs (60 files, 3 trust layers, the config) × HEAD + POST + PUT: a few pooled connections (a dozen here), not one or more per blob
    assert.ok(relay.connections() <= 16, `${relay.connections()} connections for 64 blobs`);
  } finally {
    await relay.close();
  }
});
