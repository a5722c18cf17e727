/**
 * A real OCI registry for tests: Debian's `docker-registry` (CNCF distribution 2.8), started on
 * 127.0.0.1 with its own config and storage in a temp dir — anonymous, htpasswd Basic, or token auth
 * (then `tokenServer` below plays the authorization service, with a certificate the registry trusts).
 *
 * `stop()` kills it (SIGKILL when asked, to model a crash); `start()` again reuses the same storage, so a
 * test can kill the registry mid-push and bring it back.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createPrivateKey, createSign, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer as createNetServer } from 'node:net';
import { createServer, get as httpGet, request as httpRequest, type ClientRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { get as httpsGet } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from './cli.ts';

export type RegistryAuth =
  | { kind: 'none' }
  | { kind: 'basic'; user: string; password: string }
  | { kind: 'token'; user: string; password: string; /** also accepted: this OAuth2 refresh token (an identity token), POSTed */ refreshToken?: string };

export interface TestRegistry {
  /** `127.0.0.1:PORT` */
  host: string;
  /** The storage root (blobs at docker/registry/v2/blobs/sha256/<2>/<64>/data). */
  root: string;
  /** Path of a blob's data file in the storage. */
  blobPath(digest: string): string;
  start(): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<void>;
  close(): Promise<void>;
  /** The stderr the registry wrote so far (its access log). */
  log(): string;
}

async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function probe(host: string, tls: boolean): Promise<boolean> {
  return new Promise((resolve) => {
    const get = tls ? httpsGet : httpGet;
    const req = get(`${tls ? 'https' : 'http'}://${host}/v2/`, { rejectUnauthorized: false }, (res) => {
      res.resume();
      resolve(res.statusCode === 200 || res.statusCode === 401);
    });
    req.on('error', () => resolve(false));
  });
}

async function waitReady(host: string, child: ChildProcess, output: () => string, tls = false): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited (${child.exitCode}): ${output()}`);
    const ok = await probe(host, tls);
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`docker-registry did not answer on ${host}: ${output()}`);
}

export async function startRegistry(auth: RegistryAuth = { kind: 'none' }, options: { tls?: boolean } = {}): Promise<TestRegistry & { token?: TokenServer; caPath?: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-registry-'));
  let tlsYaml = '';
  let caPath: string | undefined;
  if (options.tls) {
    // a self-signed certificate for 127.0.0.1: trusted only by whoever is handed caPath
    caPath = join(dir, 'registry.crt');
    const keyPath = join(dir, 'registry.key');
    const made = await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyPath, '-out', caPath, '-days', '2', '-subj', '/CN=airlock-test-registry', '-addext', 'subjectAltName=IP:127.0.0.1']);
    if (made.code !== 0) throw new Error(`openssl failed: ${made.stderr}`);
    tlsYaml = `  tls:\n    certificate: ${caPath}\n    key: ${keyPath}\n`;
  }
  const root = join(dir, 'storage');
  await mkdir(root);
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  let authYaml = '';
  let token: TokenServer | undefined;
  if (auth.kind === 'basic') {
    const htpasswd = join(dir, 'htpasswd');
    const made = await run('htpasswd', ['-Bbn', auth.user, auth.password]);
    if (made.code !== 0) throw new Error(`htpasswd failed: ${made.stderr}`);
    await writeFile(htpasswd, made.stdout);
    authYaml = `auth:\n  htpasswd:\n    realm: airlock-test\n    path: ${htpasswd}\n`;
  } else if (auth.kind === 'token') {
    token = await startTokenServer(dir, auth.user, auth.password, auth.refreshToken);
    authYaml = `auth:\n  token:\n    realm: ${token.realm}\n    service: ${token.service}\n    issuer: ${token.issuer}\n    rootcertbundle: ${token.certPath}\n`;
  }
  const config = join(dir, 'config.yml');
  await writeFile(
    config,
    `version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${root}\n  delete:\n    enabled: true\n  cache:\n    blobdescriptor: ""\nhttp:\n  addr: ${host}\n  secret: airlock-test-secret\n${tlsYaml}${authYaml}`,
  );
  let child: ChildProcess | undefined;
  let output = '';
  const start = async (): Promise<void> => {
    output = '';
    const proc = spawn('docker-registry', ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    proc.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    proc.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    await waitReady(host, proc, () => output, caPath !== undefined);
  };
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    const proc = child;
    child = undefined;
    if (proc === undefined || proc.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill(signal);
    await exited;
  };
  await start();
  return {
    host,
    root,
    blobPath: (digest) => {
      const hex = digest.replace(/^sha256:/, '');
      return join(root, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
    },
    start,
    stop,
    close: async () => {
      await stop('SIGKILL');
      await token?.close();
      await rm(dir, { recursive: true, force: true });
    },
    log: () => output,
    ...(token === undefined ? {} : { token }),
    ...(caPath === undefined ? {} : { caPath }),
  };
}

/** distribution's `auth: token` service: Basic credentials in, an ES256 JWT (x5c = the trusted cert) out. */
export interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  certPath: string;
  /** Every scope a token was asked for, in order. */
  scopes: string[];
  /** How each token was asked for: `password` (GET with Basic) or `refresh_token` (POST, OAuth2). */
  grants: string[];
  close(): Promise<void>;
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

async function startTokenServer(dir: string, user: string, password: string, refreshToken?: string): Promise<TokenServer> {
  const keyPath = join(dir, 'token.key');
  const certPath = join(dir, 'token.crt');
  const made = await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', '/CN=airlock-test-token']);
  if (made.code !== 0) throw new Error(`openssl failed: ${made.stderr}`);
  const key = createPrivateKey(await readFile(keyPath));
  const certDer = Buffer.from(
    (await readFile(certPath, 'utf8')).replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, ''),
    'base64',
  );
  const service = 'airlock-test-registry';
  const issuer = 'airlock-test-issuer';
  const scopes: string[] = [];
  const grants: string[] = [];
  const issue = (res: ServerResponse, asked: string[]): void => {
    const access = asked.map((scope) => {
      scopes.push(scope);
      const [type, name, actions] = [scope.split(':')[0]!, scope.split(':').slice(1, -1).join(':'), scope.split(':').at(-1)!];
      return { type, name, actions: actions.split(',') };
    });
    const now = Math.floor(Date.now() / 1000);
    const head = b64url(JSON.stringify({ alg: 'ES256', typ: 'JWT', x5c: [certDer.toString('base64')] }));
    const claims = b64url(JSON.stringify({ iss: issuer, sub: user, aud: service, exp: now + 300, nbf: now - 10, iat: now, jti: randomUUID(), access }));
    const signer = createSign('SHA256');
    signer.update(`${head}.${claims}`);
    const signature = b64url(signer.sign({ key, dsaEncoding: 'ieee-p1363' }));
    const token = `${head}.${claims}.${signature}`;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, access_token: token, expires_in: 300 }));
  };
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (req.method === 'POST') {
      // the OAuth2 refresh-token grant (distribution's token spec, what docker sends with an identity token)
      let body = '';
      req.setEncoding('utf8').on('data', (d: string) => (body += d));
      req.on('end', () => {
        const form = new URLSearchParams(body);
        if (refreshToken === undefined || form.get('grant_type') !== 'refresh_token' || form.get('refresh_token') !== refreshToken || !form.get('client_id') || form.get('service') !== service) {
          res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"invalid_grant"}');
          return;
        }
        grants.push('refresh_token');
        issue(res, (form.get('scope') ?? '').split(' ').filter((x) => x !== ''));
      });
      return;
    }
    const header = req.headers.authorization ?? '';
    const expected = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
    if (header !== expected) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
      return;
    }
    grants.push('password');
    issue(res, url.searchParams.getAll('scope'));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certPath,
    scopes,
    grants,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Listens on 127.0.0.1 at a free port; `close` also drops the connections still open (for relays in front of a registry). */
export async function listenOnLoopback(server: Server): Promise<{ host: string; close(): Promise<void> }> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Sends `req` on to `target` (host:port) and its answer back to `res`; the caller sends the body into the returned request. */
export function forwardTo(target: string, req: IncomingMessage, res: ServerResponse): ClientRequest {
  const [hostname, port] = target.split(':');
  const upstream = httpRequest({ hostname, port: Number(port), method: req.method, path: req.url, headers: req.headers }, (up) => {
    res.writeHead(up.statusCode ?? 502, up.headers);
    up.pipe(res);
  });
  upstream.on('error', () => res.destroy());
  return upstream;
}
