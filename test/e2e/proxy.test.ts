/**
 * Exports through a real forwarding proxy on loopback (tinyproxy, installed by scripts/ensure-tools.sh;
 * a missing tinyproxy fails these tests, it never skips them). What is checked:
 * - HTTP_PROXY is honoured: every connection to the hub and to the CDN host goes through the proxy;
 * - the proxy sees CONNECT host:port only — our client tunnels even http targets — so neither the token
 *   nor a signed CDN URL appears in its log, and the CDN host never receives Authorization;
 * - NO_PROXY is honoured (the CDN host reached directly);
 * - `--proxy` overrides the environment; an unreachable proxy fails with E_NETWORK naming the hub;
 * - an https hub signed by a private CA (a TLS-inspecting corporate proxy's situation): trusted through
 *   NODE_EXTRA_CA_CERTS, through HTTPS_PROXY; without it a clear, unretried certificate error.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startHubServer, type HubServer } from '../support/hub-server.ts';
import { run, runAirlock } from '../support/cli.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';

const TOKEN = 'hf_proxytesttoken0123456789abcdef';
let hub: HubServer;
let dir: string;
let proxy: ChildProcess;
let proxyPort: number;
let proxyLog: string;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

async function waitForLog(path: string, pattern: RegExp, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const text = await readFile(path, 'utf8').catch(() => '');
    if (pattern.test(text)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`tinyproxy did not start: ${await readFile(path, 'utf8').catch(() => '(no log)')}`);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-proxy-'));
  hub = await startHubServer({ tokens: [TOKEN] });
  await hub.addRepo({
    id: 'acme/private-model',
    private: true,
    files: [
      { path: 'config.json', data: '{"model_type":"llama"}\n' },
      { path: 'model.safetensors', data: safetensorsOf(randomBytes(600_000)) },
    ],
  });
  proxyPort = await freePort();
  proxyLog = join(dir, 'tinyproxy.log');
  const conf = join(dir, 'tinyproxy.conf');
  // No ConnectPort line: CONNECT to any port (the test hub listens on random ones). Loopback only.
  await writeFile(conf, `Port ${proxyPort}\nListen 127.0.0.1\nTimeout 60\nLogFile "${proxyLog}"\nLogLevel Info\nMaxClients 50\nAllow 127.0.0.1\n`);
  proxy = spawn('tinyproxy', ['-d', '-c', conf], { stdio: 'ignore' });
  const spawned = new Promise<void>((resolve, reject) => {
    proxy.once('error', (e) => reject(new Error(`cannot start tinyproxy (scripts/ensure-tools.sh installs it): ${e.message}`)));
    proxy.once('spawn', () => resolve());
  });
  await spawned;
  await waitForLog(proxyLog, /Accepting connections/, 10_000);
});

after(async () => {
  if (proxy?.pid !== undefined && proxy.exitCode === null) proxy.kill('SIGTERM');
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

const env = (extra: Record<string, string> = {}) => ({ HF_ENDPOINT: hub.endpoint, HF_TOKEN: TOKEN, AIRLOCK_RETRY_BASE_MS: '10', ...extra });

async function logSince(offset: number): Promise<string> {
  await new Promise((r) => setTimeout(r, 100)); // tinyproxy writes its log lines asynchronously
  return (await readFile(proxyLog, 'utf8')).slice(offset);
}

describe('export through a CONNECT proxy (tinyproxy)', () => {
  const hubHostPort = () => new URL(hub.endpoint).host;
  const cdnHostPort = () => new URL(hub.cdnOrigin).host;

  test('HTTP_PROXY is honoured; the proxy sees CONNECT host:port only, never the token or a signed URL', async () => {
    const offset = (await readFile(proxyLog, 'utf8')).length;
    const start = hub.requests.length;
    const out = join(dir, 'via-proxy.airlock.tar');
    const r = await runAirlock(['export', 'acme/private-model', '--unsigned', '-o', out, '--verbose'], { env: env({ HTTP_PROXY: `http://127.0.0.1:${proxyPort}` }) });
    assert.equal(r.code, 0, r.stderr);
    const log = await logSince(offset);
    assert.match(log, new RegExp(`CONNECT ${hubHostPort().replace('.', '\\.')} `), 'the hub was reached through the proxy');
    assert.match(log, new RegExp(`CONNECT ${cdnHostPort().replace('.', '\\.')} `), 'the CDN host was reached through the proxy');
    assert.doesNotMatch(log, /Request \(file descriptor \d+\): (GET|HEAD|POST) /, 'nothing was forwarded in the clear');
    assert.ok(!log.includes(TOKEN), 'the token is not in the proxy log');
    assert.ok(!log.includes('signature='), 'no signed CDN URL in the proxy log');
    const requests = hub.requests.slice(start);
    assert.ok(requests.some((q) => q.host === '127.0.0.2'), 'the LFS file came from the CDN host');
    for (const q of requests) if (q.host === '127.0.0.2') assert.equal(q.authorization, undefined, `no token to the CDN: ${q.url}`);
    assert.ok(!(r.stdout + r.stderr).includes(TOKEN), 'the token is not in our output');
    assert.match(r.stderr, /GET http:\/\/127\.0\.0\.1:\d+\/api\/models\/acme\/private-model\/revision\/main → 200/, 'the verbose log names each request');
    assert.doesNotMatch(r.stderr, /signature=|expires=/, 'the verbose log has no query strings');
  });

  test('NO_PROXY is honoured: the CDN host is reached directly', async () => {
    const offset = (await readFile(proxyLog, 'utf8')).length;
    const out = join(dir, 'no-proxy.airlock.tar');
    const r = await runAirlock(['export', 'acme/private-model', '--unsigned', '-o', out], {
      env: env({ HTTP_PROXY: `http://127.0.0.1:${proxyPort}`, NO_PROXY: '127.0.0.2' }),
    });
    assert.equal(r.code, 0, r.stderr);
    const log = await logSince(offset);
    assert.match(log, new RegExp(`CONNECT ${hubHostPort().replace('.', '\\.')} `));
    assert.ok(!log.includes(`CONNECT ${cdnHostPort()}`), 'the CDN host bypassed the proxy');
  });

  test('--proxy overrides the environment; an unreachable proxy is E_NETWORK naming the hub', async () => {
    const dead = await freePort();
    const offset = (await readFile(proxyLog, 'utf8')).length;
    const ok = await runAirlock(['export', 'acme/private-model', '--unsigned', '-o', join(dir, 'flag.airlock.tar'), '--proxy', `http://127.0.0.1:${proxyPort}`], {
      env: env({ HTTP_PROXY: `http://127.0.0.1:${dead}` }),
    });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(await logSince(offset), new RegExp(`CONNECT ${hubHostPort().replace('.', '\\.')} `));
    const bad = await runAirlock(['export', 'acme/private-model', '--unsigned', '-o', join(dir, 'dead.airlock.tar'), '--proxy', `http://127.0.0.1:${dead}`], { env: env() });
    assert.equal(bad.code, 4, bad.stderr);
    assert.match(bad.stderr, /E_NETWORK/);
    assert.match(bad.stderr, /gave up after 5 attempts \(last: a network error\)/);
    assert.match(bad.stderr, /HTTPS_PROXY/, 'the hint mentions the proxy settings');
    assert.ok(!bad.stderr.includes(TOKEN));
  });

  test('--proxy must be an http(s) URL', async () => {
    const r = await runAirlock(['export', 'acme/private-model', '--unsigned', '-o', join(dir, 'x.tar'), '--proxy', 'socks5://127.0.0.1:1080'], { env: env() });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--proxy/);
  });
});

describe('an https hub with a private CA, through HTTPS_PROXY', () => {
  let tlsHub: HubServer;
  let caFile: string;
  before(async () => {
    const key = join(dir, 'hub.key');
    caFile = join(dir, 'hub.crt');
    // self-signed, naming both loopback hosts: it is its own CA for NODE_EXTRA_CA_CERTS
    const r = await run('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', caFile,
      '-days', '2', '-subj', '/CN=airlock test hub', '-addext', 'subjectAltName=IP:127.0.0.1,IP:127.0.0.2',
    ]);
    assert.equal(r.code, 0, r.stderr);
    tlsHub = await startHubServer({ tokens: [TOKEN], tls: { key: await readFile(key), cert: await readFile(caFile) } });
    await tlsHub.addRepo({ id: 'acme/tls-model', private: true, files: [{ path: 'config.json', data: '{}\n' }, { path: 'model.safetensors', data: safetensorsOf(randomBytes(300_000)) }] });
  });
  after(async () => {
    await tlsHub?.close();
  });

  test('trusted through NODE_EXTRA_CA_CERTS; the proxy tunnels both hosts; the CDN never gets the token', async () => {
    assert.match(tlsHub.endpoint, /^https:/);
    const offset = (await readFile(proxyLog, 'utf8')).length;
    const start = tlsHub.requests.length;
    const r = await runAirlock(['export', 'acme/tls-model', '--unsigned', '-o', join(dir, 'tls.airlock.tar')], {
      env: { HF_ENDPOINT: tlsHub.endpoint, HF_TOKEN: TOKEN, HTTPS_PROXY: `http://127.0.0.1:${proxyPort}`, NODE_EXTRA_CA_CERTS: caFile },
    });
    assert.equal(r.code, 0, r.stderr);
    const log = await logSince(offset);
    assert.ok(log.includes(`CONNECT ${new URL(tlsHub.endpoint).host} `), 'hub through the proxy');
    assert.ok(log.includes(`CONNECT ${new URL(tlsHub.cdnOrigin).host} `), 'CDN through the proxy');
    assert.ok(!log.includes(TOKEN));
    const requests = tlsHub.requests.slice(start);
    assert.ok(requests.some((q) => q.host === '127.0.0.2'));
    for (const q of requests) assert.equal(q.authorization, q.host === '127.0.0.2' ? undefined : `Bearer ${TOKEN}`);
  });

  test('without the CA: E_NETWORK naming the certificate problem and NODE_EXTRA_CA_CERTS, not retried', async () => {
    const start = tlsHub.requests.length;
    const r = await runAirlock(['export', 'acme/tls-model', '--unsigned', '-o', join(dir, 'untrusted.airlock.tar')], {
      env: { HF_ENDPOINT: tlsHub.endpoint, HF_TOKEN: TOKEN, HTTPS_PROXY: `http://127.0.0.1:${proxyPort}` },
    });
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /E_NETWORK/);
    assert.match(r.stderr, /certificate/i);
    assert.match(r.stderr, /NODE_EXTRA_CA_CERTS/);
    assert.doesNotMatch(r.stderr, /retrying/);
    assert.equal(tlsHub.requests.length, start, 'no request reached the hub: TLS refused first');
  });
});
