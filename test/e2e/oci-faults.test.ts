/**
 * publish/pull against registries that need credentials (htpasswd Basic, token auth with a test token
 * service) and across the faults real networks have: the registry killed mid-push (a re-run completes,
 * skipping what landed), a connection dropped mid-layer on pull (resumed with Range), a full disk, and
 * concurrent pulls. kill -9 of the pulling process at every step is test/e2e/oci-crash.test.ts.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddedCommit, HubServer } from '../support/hub-server.ts';
import { airlockBin, run, runAirlock } from '../support/cli.ts';
import { sampleModelFiles } from '../support/sample-model.ts';
import { exportSampleBundle } from '../support/sample-bundle.ts';
import { snapshotTree, stagingLeftovers } from '../support/cache-snapshot.ts';
import { forwardTo, listenOnLoopback, startRegistry, type TestRegistry, type TokenServer } from '../support/registry.ts';

let hub: HubServer;
let dir: string;
let keys: string;
let model: AddedCommit;
let bundle: string;
const registries: TestRegistry[] = [];

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const pub = (): string => join(keys, 'signer.pub.asc');
const weights = (): Buffer => sampleModelFiles().find((f) => f.path === 'model.safetensors')!.data;
const fast = { AIRLOCK_RETRY_BASE_MS: '10', AIRLOCK_RETRY_ATTEMPTS: '2' };

async function dockerConfig(name: string, host: string, user: string, password: string): Promise<string> {
  const folder = join(dir, name);
  await mkdir(folder, { recursive: true });
  await writeFile(join(folder, 'config.json'), JSON.stringify({ auths: { [host]: { auth: Buffer.from(`${user}:${password}`).toString('base64') } } }));
  return folder;
}

/** A forwarding proxy in front of the registry whose `intercept` may take over a request. */
async function startProxy(target: string, intercept: (req: IncomingMessage, res: ServerResponse) => Promise<boolean>): Promise<{ host: string; seen: Array<{ method: string; url: string; range?: string }>; close(): Promise<void> }> {
  const seen: Array<{ method: string; url: string; range?: string }> = [];
  const server: Server = createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', ...(req.headers.range === undefined ? {} : { range: req.headers.range }) });
    void intercept(req, res).then((handled) => {
      if (handled) return;
      req.pipe(forwardTo(target, req, res));
    });
  });
  return { ...(await listenOnLoopback(server)), seen };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-oci-faults-'));
  ({ hub, model, keys, bundle } = await exportSampleBundle(dir));
});

after(async () => {
  for (const r of registries) await r.close();
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('credentials', () => {
  test('htpasswd Basic: none or wrong → exit 4 with a hint, the password never shown; right ones from config.json or stdin work', async () => {
    const registry = await startRegistry({ kind: 'basic', user: 'pusher', password: 'correct-horse-battery' });
    registries.push(registry);
    const to = ['--to', `oci://${registry.host}/models`, '--trusted-keys', pub(), '--plain-http'];
    const none = await runAirlock(['publish', bundle, ...to], { env: { DOCKER_CONFIG: join(dir, 'no-such-docker'), HOME: dir } });
    assert.equal(none.code, 4, none.stderr);
    assert.match(none.stderr, /E_AUTH/);
    assert.match(none.stderr, /hint: log in/);

    const wrongCfg = await dockerConfig('docker-wrong', registry.host, 'pusher', 'wrong-password-123');
    const wrong = await runAirlock(['publish', bundle, ...to], { env: { DOCKER_CONFIG: wrongCfg, HOME: dir } });
    assert.equal(wrong.code, 4, wrong.stderr);
    assert.match(wrong.stderr, /authentication failed \(HTTP 401\) with the credentials from .*docker-wrong\/config\.json/);
    assert.match(wrong.stderr, /hint: check the user name and password/);
    assert.doesNotMatch(wrong.stderr + wrong.stdout, /wrong-password-123/);

    const rightCfg = await dockerConfig('docker-right', registry.host, 'pusher', 'correct-horse-battery');
    const ok = await runAirlock(['publish', bundle, ...to], { env: { DOCKER_CONFIG: rightCfg, HOME: dir } });
    assert.equal(ok.code, 0, ok.stderr);
    assert.doesNotMatch(ok.stderr + ok.stdout, /correct-horse-battery/);

    // --registry-user + --registry-password-stdin
    const cache = join(dir, 'basic-cache');
    const piped = await run('sh', ['-c', `printf 'correct-horse-battery\\n' | "${process.execPath}" "${airlockBin}" pull "oci://${registry.host}/models/acme/tiny-llm:main" --trusted-keys "${pub()}" --plain-http --cache-dir "${cache}" --registry-user pusher --registry-password-stdin`], {
      env: { HOME: dir, DOCKER_CONFIG: join(dir, 'no-such-docker') },
    });
    assert.equal(piped.code, 0, piped.stderr);
    assert.equal(sha(await readFile(join(cache, 'models--acme--tiny-llm', 'snapshots', model.commit, 'model.safetensors'))), sha(weights()));
  });

  test('token auth: the Bearer challenge, a token per scope from the token service, credentials from $REGISTRY_AUTH_FILE', async () => {
    const registry = (await startRegistry({ kind: 'token', user: 'ci', password: 's3cret-token-pass' })) as TestRegistry & { token: TokenServer };
    registries.push(registry);
    const authFile = join(dir, 'auth.json');
    await writeFile(authFile, JSON.stringify({ auths: { [registry.host]: { auth: Buffer.from('ci:s3cret-token-pass').toString('base64') } } }));
    const env = { REGISTRY_AUTH_FILE: authFile, HOME: dir, DOCKER_CONFIG: join(dir, 'no-such-docker') };
    const p = await runAirlock(['publish', bundle, '--to', `oci://${registry.host}/models`, '--trusted-keys', pub(), '--plain-http', '--json'], { env });
    assert.equal(p.code, 0, p.stderr);
    assert.ok(registry.token.scopes.includes('repository:models/acme/tiny-llm:pull,push'), registry.token.scopes.join(' '));
    const cache = join(dir, 'token-cache');
    const r = await runAirlock(['pull', `oci://${registry.host}/models/acme/tiny-llm:main`, '--trusted-keys', pub(), '--plain-http', '--cache-dir', cache], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(registry.token.scopes.includes('repository:models/acme/tiny-llm:pull'));
    const bad = await runAirlock(['pull', `oci://${registry.host}/models/acme/tiny-llm:main`, '--trusted-keys', pub(), '--plain-http', '--cache-dir', join(dir, 'token-bad')], {
      env: { HOME: dir, DOCKER_CONFIG: await dockerConfig('docker-token-wrong', registry.host, 'ci', 'nope-nope') },
    });
    assert.equal(bad.code, 4, bad.stderr);
    assert.match(bad.stderr, /E_AUTH/);
    assert.doesNotMatch(bad.stderr, /nope-nope/);
  });
});

describe('TLS', () => {
  test('https with a private CA: refused without it (hint --ca-file), pulled with --ca-file; plain http only with --plain-http', async () => {
    const registry = (await startRegistry({ kind: 'none' }, { tls: true })) as TestRegistry & { caPath: string };
    registries.push(registry);
    const to = ['--to', `oci://${registry.host}/models`, '--trusted-keys', pub()];
    const untrusted = await runAirlock(['publish', bundle, ...to]);
    assert.equal(untrusted.code, 4, untrusted.stderr);
    assert.match(untrusted.stderr, /E_NETWORK/);
    assert.match(untrusted.stderr, /--ca-file/);
    const ok = await runAirlock(['publish', bundle, ...to, '--ca-file', registry.caPath]);
    assert.equal(ok.code, 0, ok.stderr);
    const cache = join(dir, 'tls-cache');
    const r = await runAirlock(['pull', `oci://${registry.host}/models/acme/tiny-llm:main`, '--trusted-keys', pub(), '--ca-file', registry.caPath, '--cache-dir', cache]);
    assert.equal(r.code, 0, r.stderr);
    // the same CA through NODE_EXTRA_CA_CERTS
    const viaEnv = await runAirlock(['inspect', `oci://${registry.host}/models/acme/tiny-llm:main`, '--json'], { env: { NODE_EXTRA_CA_CERTS: registry.caPath } });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    assert.equal(JSON.parse(viaEnv.stdout).signatureChecked, false);

    const plain = await startRegistry();
    registries.push(plain);
    const noFlag = await runAirlock(['publish', bundle, '--to', `oci://${plain.host}/models`, '--trusted-keys', pub()], { env: fast });
    assert.equal(noFlag.code, 4, noFlag.stderr);
    assert.match(noFlag.stderr, /--plain-http/);
  });
});

describe('faults', () => {
  test('registry killed mid-push: the publish fails clearly; a re-run completes and skips what landed', async () => {
    const registry = await startRegistry();
    registries.push(registry);
    let puts = 0;
    const proxy = await startProxy(registry.host, async (req, res) => {
      if (req.method !== 'PUT' || !req.url?.includes('/blobs/uploads/')) return false;
      puts += 1;
      if (puts < 4) return false;
      // the third blob has landed; the registry dies while the fourth is on its way
      await registry.stop('SIGKILL');
      res.destroy();
      return true;
    });
    try {
      const first = await runAirlock(['publish', bundle, '--to', `oci://${proxy.host}/models`, '--trusted-keys', pub(), '--plain-http', '--concurrency', '1'], { env: fast });
      assert.equal(first.code, 4, first.stderr);
      assert.match(first.stderr, /E_NETWORK|E_HTTP/);
    } finally {
      await proxy.close();
    }
    await registry.start();
    const again = await runAirlock(['publish', bundle, '--to', `oci://${registry.host}/models`, '--trusted-keys', pub(), '--plain-http', '--json', '--concurrency', '1']);
    assert.equal(again.code, 0, again.stderr);
    const result = JSON.parse(again.stdout);
    assert.equal(result.blobsSkipped, 3, again.stdout);
    assert.equal(result.blobsUploaded, result.repos[0].layers + 1 - 3);
    const cache = join(dir, 'after-kill-cache');
    const r = await runAirlock(['pull', `oci://${registry.host}/models/acme/tiny-llm:main`, '--trusted-keys', pub(), '--plain-http', '--cache-dir', cache]);
    assert.equal(r.code, 0, r.stderr);
  });

  test('connection dropped mid-layer on pull: resumed with Range, the bytes before it not fetched again', async () => {
    const registry = await startRegistry();
    registries.push(registry);
    assert.equal((await runAirlock(['publish', bundle, '--to', `oci://${registry.host}/models`, '--trusted-keys', pub(), '--plain-http'])).code, 0);
    const digest = `sha256:${sha(weights())}`;
    const half = Math.floor(weights().length / 2);
    let cut = false;
    const proxy = await startProxy(registry.host, async (req, res) => {
      if (cut || req.method !== 'GET' || !req.url?.endsWith(`/blobs/${digest}`) || req.headers.range !== undefined) return false;
      cut = true;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(weights().length), 'docker-content-digest': digest });
      res.write(weights().subarray(0, half), () => setImmediate(() => res.socket?.destroy()));
      return true;
    });
    try {
      const cache = join(dir, 'range-cache');
      const r = await runAirlock(['pull', `oci://${proxy.host}/models/acme/tiny-llm:main`, '--trusted-keys', pub(), '--plain-http', '--cache-dir', cache], { env: fast });
      assert.equal(r.code, 0, r.stderr);
      assert.ok(cut);
      const resumed = proxy.seen.filter((s) => s.url.endsWith(`/blobs/${digest}`) && s.range !== undefined);
      assert.equal(resumed.length, 1, JSON.stringify(proxy.seen));
      const from = Number(/^bytes=(\d+)-$/.exec(resumed[0]!.range!)?.[1]);
      assert.ok(from > 0 && from <= half, resumed[0]!.range);
      assert.equal(sha(await readFile(join(cache, 'models--acme--tiny-llm', 'snapshots', model.commit, 'model.safetensors'))), sha(weights()));
    } finally {
      await proxy.close();
    }
  });

  test('Ctrl-C while a layer is stalled half-way: the pull stops at once (exit 130), reports no layer as verified, writes nothing', async () => {
    const registry = await startRegistry();
    registries.push(registry);
    assert.equal((await runAirlock(['publish', bundle, '--to', `oci://${registry.host}/models`, '--trusted-keys', pub(), '--plain-http'])).code, 0);
    const digest = `sha256:${sha(weights())}`;
    let halfSent = false;
    const stalled: ServerResponse[] = [];
    // the weights: half of them, then nothing more (a registry or network that hangs)
    const proxy = await startProxy(registry.host, async (req, res) => {
      if (req.method !== 'GET' || !req.url?.endsWith(`/blobs/${digest}`)) return false;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(weights().length), 'docker-content-digest': digest });
      res.write(weights().subarray(0, Math.floor(weights().length / 2)), () => (halfSent = true));
      stalled.push(res);
      return true;
    });
    const cache = join(dir, 'interrupted-cache');
    try {
      const child = spawn(process.execPath, [airlockBin, 'pull', `oci://${proxy.host}/models/acme/tiny-llm:main`, '--trusted-keys', pub(), '--plain-http', '--cache-dir', cache], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
      for (const started = Date.now(); !halfSent; ) {
        assert.ok(Date.now() - started < 60_000, `the weights never started: ${stderr}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      const interruptedAt = Date.now();
      child.kill('SIGINT');
      const r = await Promise.race([exited, new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 15_000))]);
      if (r === 'hung') child.kill('SIGKILL');
      assert.notEqual(r, 'hung', `the pull went on for 15 s after Ctrl-C: ${stderr}`);
      assert.ok(r !== 'hung' && r.code === 130, stderr);
      assert.ok(Date.now() - interruptedAt < 15_000);
      assert.match(stderr, /E_INTERRUPTED/);
      assert.doesNotMatch(stderr, /verified model\.safetensors/, 'a layer that was not complete is never reported verified');
      assert.deepEqual(await stagingLeftovers(cache), []);
      assert.equal(await readFile(join(cache, 'models--acme--tiny-llm', 'refs', 'main'), 'utf8').catch(() => undefined), undefined, 'nothing committed');
    } finally {
      for (const res of stalled) res.destroy();
      await proxy.close();
    }
  });

  test('--chunk-size: blobs go up in PATCH chunks with Content-Range, and pull gets the same files', async () => {
    const registry = await startRegistry();
    registries.push(registry);
    const proxy = await startProxy(registry.host, async () => false);
    try {
      const p = await runAirlock(['publish', bundle, '--to', `oci://${proxy.host}/chunked`, '--trusted-keys', pub(), '--plain-http', '--chunk-size', '8KiB']);
      assert.equal(p.code, 0, p.stderr);
    } finally {
      await proxy.close();
    }
    const patches = proxy.seen.filter((s) => s.method === 'PATCH');
    // the 28.5 KiB weights in 8 KiB chunks: 4 PATCHes for that blob alone
    assert.ok(patches.length >= Math.ceil(weights().length / 8192), JSON.stringify(patches));
    const cache = join(dir, 'chunked-cache');
    const r = await runAirlock(['pull', `oci://${registry.host}/chunked/acme/tiny-llm:main`, '--trusted-keys', pub(), '--plain-http', '--cache-dir', cache]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha(await readFile(join(cache, 'models--acme--tiny-llm', 'snapshots', model.commit, 'model.safetensors'))), sha(weights()));
  });

  test('a blob download redirected to another host (object storage) is followed without the credentials', async () => {
    const registry = await startRegistry({ kind: 'basic', user: 'puller', password: 'redirect-secret' });
    registries.push(registry);
    const cfg = await dockerConfig('docker-redirect', registry.host, 'puller', 'redirect-secret');
    assert.equal((await runAirlock(['publish', bundle, '--to', `oci://${registry.host}/models`, '--trusted-keys', pub(), '--plain-http'], { env: { DOCKER_CONFIG: cfg, HOME: dir } })).code, 0);
    // "object storage" on another loopback address: records what it was sent, serves the blob bytes
    const storageSeen: Array<string | undefined> = [];
    const storage = createServer((req, res) => {
      storageSeen.push(req.headers.authorization);
      const digest = decodeURIComponent(req.url!.slice(1));
      const file = sampleModelFiles().find((f) => `sha256:${sha(f.data)}` === digest)!;
      res.writeHead(200, { 'content-length': String(file.data.length) }).end(file.data);
    });
    await new Promise<void>((resolve) => storage.listen(0, '127.0.0.2', resolve));
    const storageHost = `127.0.0.2:${(storage.address() as AddressInfo).port}`;
    const weightsDigest = `sha256:${sha(weights())}`;
    const proxy = await startProxy(registry.host, async (req, res) => {
      if (req.method !== 'GET' || !req.url?.endsWith(`/blobs/${weightsDigest}`)) return false;
      if (req.headers.authorization === undefined) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="x"' }).end();
        return true;
      }
      res.writeHead(307, { location: `http://${storageHost}/${encodeURIComponent(weightsDigest)}` }).end();
      return true;
    });
    try {
      const cache = join(dir, 'redirect-cache');
      const viaProxy = await dockerConfig('docker-redirect-proxy', proxy.host, 'puller', 'redirect-secret');
      const r = await runAirlock(['pull', `oci://${proxy.host}/models/acme/tiny-llm:main`, '--trusted-keys', pub(), '--plain-http', '--cache-dir', cache], { env: { DOCKER_CONFIG: viaProxy, HOME: dir } });
      assert.equal(r.code, 0, r.stderr);
      assert.ok(storageSeen.length >= 1);
      assert.deepEqual(storageSeen.filter((a) => a !== undefined), []);
      assert.ok(proxy.seen.some((s) => s.url.endsWith(`/blobs/${weightsDigest}`)));
      assert.equal(sha(await readFile(join(cache, 'models--acme--tiny-llm', 'snapshots', model.commit, 'model.safetensors'))), sha(weights()));
    } finally {
      await proxy.close();
      await new Promise<void>((resolve) => storage.close(() => resolve()));
    }
  });

  test('disk full on the node (a small tmpfs): refused before the download, or mid-write with --no-space-check; cache unchanged', async () => {
    const registry = await startRegistry();
    registries.push(registry);
    assert.equal((await runAirlock(['publish', bundle, '--to', `oci://${registry.host}/models`, '--trusted-keys', pub(), '--plain-http'])).code, 0);
    const at = join(dir, 'small-disk');
    await mkdir(at);
    // 20 KiB: the config files fit, the 28.5 KiB weights do not
    const mounted = await run('mount', ['-t', 'tmpfs', '-o', 'size=20k,mode=0755', 'tmpfs', at]);
    assert.equal(mounted.code, 0, `mounting a tmpfs needs root: ${mounted.stderr}`);
    try {
      const cache = join(at, 'hub');
      await mkdir(cache);
      await writeFile(join(cache, 'keep.txt'), 'resident');
      const before = await snapshotTree(cache);
      const args = ['pull', `oci://${registry.host}/models/acme/tiny-llm:main`, '--trusted-keys', pub(), '--plain-http', '--cache-dir', cache];
      const pre = await runAirlock(args);
      assert.equal(pre.code, 5, pre.stderr);
      assert.match(pre.stderr, /E_NO_SPACE/);
      assert.deepEqual(await snapshotTree(cache), before);
      const mid = await runAirlock([...args, '--no-space-check']);
      assert.equal(mid.code, 5, mid.stderr);
      assert.match(mid.stderr, /E_NO_SPACE/);
      assert.deepEqual(await snapshotTree(cache), before);
      assert.deepEqual(await stagingLeftovers(cache), []);
    } finally {
      await run('umount', ['-l', at]);
    }
  });

  test('concurrent pulls of the same model on one node both succeed into one valid cache', async () => {
    const registry = await startRegistry();
    registries.push(registry);
    assert.equal((await runAirlock(['publish', bundle, '--to', `oci://${registry.host}/models`, '--trusted-keys', pub(), '--plain-http'])).code, 0);
    const cache = join(dir, 'concurrent-cache');
    const args = ['pull', `oci://${registry.host}/models/acme/tiny-llm:main`, '--trusted-keys', pub(), '--plain-http', '--cache-dir', cache];
    const [a, b] = await Promise.all([runAirlock(args), runAirlock(args)]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    assert.deepEqual(await stagingLeftovers(cache), []);
    for (const f of sampleModelFiles()) {
      assert.equal(sha(await readFile(join(cache, 'models--acme--tiny-llm', 'snapshots', model.commit, f.path))), sha(f.data), f.path);
    }
  });
});
