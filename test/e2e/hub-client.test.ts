/**
 * The Hugging Face client and fetchSnapshot against the protocol-faithful test Hub (two loopback hosts:
 * API on 127.0.0.1, LFS CDN on 127.0.0.2), plus tiny hostile servers for what a real Hub never does
 * (unsafe paths, wrong bytes, redirects that try to collect the token).
 */
import { rejectsWith } from '../support/assert-error.ts';
import * as assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fetchSnapshot, snapshotWorkDir, type FetchEvent } from '../../src/export/fetch.js';
import { createHuggingFaceClient } from '../../src/hub/huggingface/client.js';
import type { RequestRecord } from '../../src/hub/http.js';
import type { HubClient, RemoteFile, RepoRef } from '../../src/hub/types.js';
import { startHubServer, type AddedCommit, type HubServer } from '../support/hub-server.js';

const GOOD = 'hf_goodtoken0123456789';
const OTHER = 'hf_othertoken0123456789';
const BAD = 'hf_badtoken0123456789';

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const gitSha1 = (b: Buffer): string => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

const TINY: Record<string, Buffer> = {
  '.gitattributes': Buffer.from('*.safetensors filter=lfs diff=lfs merge=lfs -text\n'),
  'README.md': Buffer.from('# tiny\n'),
  'config.json': Buffer.from('{"model_type":"llama","hidden_size":16}\n'),
  'tokenizer.json': Buffer.from('{"version":"1.0"}\n'),
  'sub/dir/vocab.txt': Buffer.from('[PAD]\n[UNK]\nhello\n'),
  'odd dir/naïve #1?.txt': Buffer.from('needs percent-encoding\n'),
  'empty.txt': Buffer.alloc(0),
  'model.safetensors': randomBytes(3 * 1024 * 1024 + 17), // LFS, several 1 MiB write batches
  'onnx/model.onnx': randomBytes(70_000), // LFS, nested
};
const tinyFiles = (): Array<{ path: string; data: Buffer }> => Object.entries(TINY).map(([path, data]) => ({ path, data }));

const model = (id: string, revision = 'main'): RepoRef => ({ type: 'model', id, revision });

async function walk(dir: string, prefix = ''): Promise<string[]> {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const rel = prefix === '' ? e.name : `${prefix}/${e.name}`;
    if (e.isDirectory()) out.push(...(await walk(join(dir, e.name), rel)));
    else out.push(rel);
  }
  return out.sort();
}

interface TinyServer {
  origin: string;
  requests: Array<{ method: string; url: string; authorization: string | undefined }>;
  close(): Promise<void>;
}

/** A bare node:http server on 127.0.0.1 for answers a real Hub never gives. */
async function tinyServer(handler: (req: IncomingMessage, res: ServerResponse, origin: string) => void): Promise<TinyServer> {
  const requests: TinyServer['requests'] = [];
  let origin = '';
  const server = createServer((req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization });
    handler(req, res, origin);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function json(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(body.length), ...headers });
  res.end(body);
}

const COMMIT = '0123456789abcdef0123456789abcdef01234567';

describe('Hugging Face client against the test Hub', () => {
  let hub: HubServer;
  let tiny: AddedCommit;
  let dev: AddedCommit;
  let tmp: string;
  let client: HubClient;
  const log: RequestRecord[] = [];

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'hub-client-'));
    hub = await startHubServer({ tokens: [GOOD, OTHER], pageSize: 2 });
    tiny = await hub.addRepo({ id: 'acme/tiny', files: tinyFiles(), tags: ['v1.0'] });
    dev = await hub.addCommit({ id: 'acme/tiny' }, [...tinyFiles(), { path: 'extra.txt', data: 'dev only\n' }], { branch: 'dev' });
    await hub.addRepo({ id: 'acme/private', private: true, files: [{ path: 'config.json', data: '{}' }] });
    await hub.addRepo({ id: 'acme/gated', gated: true, files: [{ path: 'config.json', data: '{}' }, { path: 'w.safetensors', data: randomBytes(1000) }] });
    await hub.addRepo({ id: 'acme/ds', type: 'dataset', files: [{ path: 'data/train.csv', data: 'a,b\n1,2\n' }] });
    await hub.addRepo({ id: 'acme/old-name', files: [{ path: 'config.json', data: '{"renamed":true}' }] });
    hub.renameRepo('acme/old-name', 'acme/new-name');
    client = createHuggingFaceClient({ endpoint: hub.endpoint, token: GOOD, onRequest: (r) => log.push(r) });
  });

  after(async () => {
    await hub.close();
    await rm(tmp, { recursive: true, force: true });
  });

  it('resolves a branch, a tag and a commit to the pinned commit', async () => {
    assert.equal(await client.resolveCommit(model('acme/tiny')), tiny.commit);
    assert.equal(await client.resolveCommit(model('acme/tiny', 'v1.0')), tiny.commit);
    assert.equal(await client.resolveCommit(model('acme/tiny', 'dev')), dev.commit);
    assert.notEqual(dev.commit, tiny.commit);
    assert.equal(await client.resolveCommit(model('acme/tiny', tiny.commit)), tiny.commit);
    assert.match(await client.resolveCommit({ type: 'dataset', id: 'acme/ds', revision: 'main' }), /^[0-9a-f]{40}$/);
    const revisionRequests = hub.requests.filter((r) => r.url.includes('/revision/'));
    assert.ok(revisionRequests.some((r) => r.url.startsWith('/api/datasets/acme/ds/revision/main?blobs=true')));
  });

  it('follows the relative 307 of a renamed repo', async () => {
    const commit = await client.resolveCommit(model('acme/old-name'));
    assert.match(commit, /^[0-9a-f]{40}$/);
    const renamed = hub.requests.filter((r) => r.url.startsWith('/api/models/acme/old-name/revision/main'));
    assert.equal(renamed.at(-1)?.status, 307);
  });

  it('lists every file across tree pages (page size 2), with LFS sizes and sha256s', async () => {
    const before = hub.requests.length;
    const files = await client.listFiles(model('acme/tiny'), tiny.commit);
    const treeRequests = hub.requests.slice(before).filter((r) => r.url.includes('/tree/'));
    assert.ok(treeRequests.length >= 5, `expected several pages, got ${treeRequests.length}`);
    assert.ok(treeRequests.every((r) => r.authorization === `Bearer ${GOOD}`));
    const expected = tiny.files.map((f) => ({ path: f.path, size: f.size, blobId: f.blobId, ...(f.lfs ? { lfsSha256: f.sha256 } : {}) }));
    assert.deepEqual([...files].sort((a, b) => (a.path < b.path ? -1 : 1)), expected);
    assert.ok(files.some((f) => f.lfsSha256 !== undefined && f.path === 'onnx/model.onnx'));
  });

  it('downloads git, LFS, nested and oddly named files with verified hashes', async () => {
    const files = await client.listFiles(model('acme/tiny'), tiny.commit);
    for (const file of files) {
      const dest = join(tmp, `dl-${createHash('sha1').update(file.path).digest('hex')}`);
      let progressed = 0;
      const digests = await client.download(model('acme/tiny'), tiny.commit, file, dest, (n) => (progressed += n));
      const data = TINY[file.path] as Buffer;
      assert.deepEqual(await readFile(dest), data, file.path);
      assert.equal(digests.size, data.length);
      assert.equal(digests.sha256, sha256(data));
      assert.equal(progressed, data.length);
      if (file.lfsSha256 === undefined) assert.equal(digests.gitSha1, gitSha1(data));
    }
  });

  it('sends the token to the endpoint and never to the CDN host', async () => {
    const files = await client.listFiles(model('acme/tiny'), tiny.commit);
    const lfs = files.find((f) => f.path === 'model.safetensors') as RemoteFile;
    await client.download(model('acme/tiny'), tiny.commit, lfs, join(tmp, 'token-check'));
    const hubHost = hub.requests.filter((r) => r.host === '127.0.0.1');
    const cdn = hub.requests.filter((r) => r.host === '127.0.0.2');
    assert.ok(cdn.length > 0, 'LFS bytes came from the CDN host');
    assert.ok(cdn.every((r) => r.authorization === undefined), 'no Authorization on 127.0.0.2');
    assert.ok(hubHost.every((r) => r.authorization === `Bearer ${GOOD}`), 'Authorization on every 127.0.0.1 request');
    assert.ok(hubHost.some((r) => r.url.startsWith('/api/resolve-cache/')), 'the relative 307 was followed with auth');
  });

  it('logs every request without query strings', () => {
    assert.ok(log.length > 0);
    assert.ok(log.every((r) => !r.url.includes('?') && typeof r.ms === 'number' && r.method === 'GET'));
    const cdn = log.filter((r) => r.url.startsWith(hub.cdnOrigin));
    assert.ok(cdn.length > 0 && cdn.every((r) => r.status === 200 && r.bytes > 0));
    assert.ok(log.some((r) => r.status === 302 && r.bytes === 0));
  });

  it('downloads from a dataset repo', async () => {
    const ref: RepoRef = { type: 'dataset', id: 'acme/ds', revision: 'main' };
    const commit = await client.resolveCommit(ref);
    const [file] = await client.listFiles(ref, commit);
    assert.equal(file?.path, 'data/train.csv');
    await client.download(ref, commit, file, join(tmp, 'ds.csv'));
    assert.equal(await readFile(join(tmp, 'ds.csv'), 'utf8'), 'a,b\n1,2\n');
  });

  describe('errors', () => {
    const anonymous = (): HubClient => createHuggingFaceClient({ endpoint: hub.endpoint });

    it('repo not found', async () => {
      await rejectsWith(client.resolveCommit(model('acme/missing')), 'E_REPO_NOT_FOUND', (e) => {
        assert.match(e.message, /acme\/missing/);
        assert.match(e.message, /HTTP 404/);
        assert.match(e.message, /request id /);
      });
    });

    it('private repo without a token: not found, with the token hint', async () => {
      await rejectsWith(anonymous().resolveCommit(model('acme/private')), 'E_REPO_NOT_FOUND', (e) => {
        assert.match(e.hint ?? '', /no token was sent/);
        assert.match(e.hint ?? '', /--token or HF_TOKEN/);
      });
      assert.match(await client.resolveCommit(model('acme/private')), /^[0-9a-f]{40}$/);
    });

    it('invalid token: E_AUTH, and the token is not in the message', async () => {
      const bad = createHuggingFaceClient({ endpoint: hub.endpoint, token: BAD });
      await rejectsWith(bad.resolveCommit(model('acme/tiny')), 'E_AUTH', (e) => {
        assert.match(e.message, /token rejected/);
        assert.ok(!e.message.includes(BAD) && !(e.hint ?? '').includes(BAD));
      });
    });

    it('gated repo: 401 without token and 403 without access are E_GATED; access granted downloads', async () => {
      const ref = model('acme/gated');
      const commit = await anonymous().resolveCommit(ref); // info and tree are public for gated repos
      const files = await anonymous().listFiles(ref, commit);
      const config = files.find((f) => f.path === 'config.json') as RemoteFile;
      const weights = files.find((f) => f.path === 'w.safetensors') as RemoteFile;
      await rejectsWith(anonymous().download(ref, commit, config, join(tmp, 'g1')), 'E_GATED', (e) => assert.match(e.message, /401/));
      const other = createHuggingFaceClient({ endpoint: hub.endpoint, token: OTHER });
      await rejectsWith(other.download(ref, commit, weights, join(tmp, 'g2')), 'E_GATED', (e) => {
        assert.match(e.message, /403/);
        assert.match(e.hint ?? '', /accept the model's terms on its page while logged in with the token's account/);
      });
      assert.ok(!existsSync(join(tmp, 'g1')) && !existsSync(join(tmp, 'g2')));
      hub.grantGatedAccess(OTHER, 'acme/gated');
      await other.download(ref, commit, weights, join(tmp, 'g3'));
    });

    it('revision not found', async () => {
      await rejectsWith(client.resolveCommit(model('acme/tiny', 'no-such-branch')), 'E_REVISION_NOT_FOUND', (e) => assert.match(e.message, /no-such-branch/));
    });

    it('a file the listing names but the server lacks: E_ENTRY_NOT_FOUND', async () => {
      const ghost: RemoteFile = { path: 'ghost.txt', size: 1, blobId: 'a'.repeat(40) };
      await rejectsWith(client.download(model('acme/tiny'), tiny.commit, ghost, join(tmp, 'ghost')), 'E_ENTRY_NOT_FOUND');
    });

    it('an unreachable endpoint: E_NETWORK naming it', async () => {
      const dead = await tinyServer(() => undefined);
      await dead.close();
      const c = createHuggingFaceClient({ endpoint: dead.origin, token: GOOD });
      await rejectsWith(c.resolveCommit(model('acme/tiny')), 'E_NETWORK', (e) => assert.ok(e.message.includes(dead.origin) && !e.message.includes(GOOD)));
    });
  });

  describe('fetchSnapshot', () => {
    const resolveGets = (from: number): number => hub.requests.slice(from).filter((r) => r.url.includes('/resolve/')).length;

    it('pins the commit, downloads into the work layout, and skips verified files on a re-run', async () => {
      const workDir = join(tmp, 'work-rerun');
      const events: FetchEvent[] = [];
      const start = hub.requests.length;
      const snap = await fetchSnapshot(client, model('acme/tiny', 'v1.0'), { include: [], exclude: [], workDir, onProgress: (e) => events.push(e) });
      assert.equal(snap.commit, tiny.commit);
      assert.deepEqual(snap.files.map((f) => f.remote.path), Object.keys(TINY).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
      assert.equal(hub.requests.slice(start).filter((r) => r.url.includes('/revision/')).length, 1, 'resolved once');
      assert.equal(resolveGets(start), Object.keys(TINY).length);
      const filesDir = join(snapshotWorkDir(workDir, model('acme/tiny'), tiny.commit), 'files');
      assert.equal(filesDir, join(workDir, 'models--acme--tiny', tiny.commit, 'files'));
      assert.deepEqual(await walk(filesDir), Object.keys(TINY).sort());
      assert.deepEqual(await walk(join(workDir, 'models--acme--tiny', tiny.commit)), Object.keys(TINY).map((p) => `files/${p}`).sort(), 'no partials left');
      for (const f of snap.files) {
        const data = TINY[f.remote.path] as Buffer;
        assert.equal(f.localPath, join(filesDir, ...f.remote.path.split('/')));
        assert.equal(f.sha256, sha256(data));
        assert.equal(f.size, data.length);
        assert.equal(f.lfs, f.remote.lfsSha256 !== undefined);
        assert.equal(f.etag, f.lfs ? sha256(data) : gitSha1(data));
      }
      assert.equal(events.filter((e) => e.kind === 'downloading').length, Object.keys(TINY).length);
      // eslint-disable-next-line @typescript-eslint/no-base-to-string, @typescript-eslint/restrict-template-expressions -- events render themselves as text (a non-enumerable toString); that is what this checks
      assert.match(`${events[0]}`, /acme\/tiny@v1\.0 is commit [0-9a-f]{40}/);

      // Re-run: nothing downloaded again.
      const rerun = hub.requests.length;
      const again = await fetchSnapshot(client, model('acme/tiny', 'v1.0'), { include: [], exclude: [], workDir });
      assert.equal(resolveGets(rerun), 0);
      assert.deepEqual(again.files.map((f) => f.sha256), snap.files.map((f) => f.sha256));

      // A damaged file (same size) is detected by the re-hash and fetched again; the others are not.
      await writeFile(join(filesDir, 'config.json'), Buffer.alloc((TINY['config.json'] as Buffer).length, 0x20));
      const third = hub.requests.length;
      const events3: FetchEvent[] = [];
      await fetchSnapshot(client, model('acme/tiny', 'v1.0'), { include: [], exclude: [], workDir, onProgress: (e) => events3.push(e) });
      assert.equal(resolveGets(third), 1);
      assert.deepEqual(await readFile(join(filesDir, 'config.json')), TINY['config.json']);
      assert.equal(events3.filter((e) => e.kind === 'skipped').length, Object.keys(TINY).length - 1);
    });

    it('applies include/exclude with fnmatch rules', async () => {
      const workDir = join(tmp, 'work-filter');
      const snap = await fetchSnapshot(client, model('acme/tiny'), { include: ['*.json', 'sub/'], exclude: ['tokenizer*'], workDir });
      assert.deepEqual(snap.files.map((f) => f.remote.path), ['config.json', 'sub/dir/vocab.txt']);
      const onnx = await fetchSnapshot(client, model('acme/tiny'), { include: ['*.onnx'], exclude: [], workDir });
      assert.deepEqual(onnx.files.map((f) => f.remote.path), ['onnx/model.onnx']);
    });

    it('refuses to export nothing, listing what there is', async () => {
      await rejectsWith(fetchSnapshot(client, model('acme/tiny'), { include: ['*.gguf'], exclude: [], workDir: join(tmp, 'work-none') }), 'E_NOTHING_TO_EXPORT', (e) => {
        assert.match(e.message, /--include \*\.gguf/);
        assert.match(e.hint ?? '', /config\.json/);
      });
      assert.ok(!existsSync(join(tmp, 'work-none')));
    });
  });
});

describe('Hugging Face client against hostile servers', () => {
  let tmp: string;
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'hub-client-hostile-'));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  /** A hub that lists `entries` at COMMIT and serves `serve(path)` for resolve requests. */
  async function fakeHub(
    entries: unknown[],
    serve: (path: string, req: IncomingMessage, res: ServerResponse, origin: string) => void = (_p, _q, res) => json(res, 404, { error: 'nope' }),
  ): Promise<TinyServer> {
    return tinyServer((req, res, origin) => {
      const url = new URL(req.url ?? '/', origin);
      if (url.pathname.startsWith('/api/models/acme/evil/revision/')) return json(res, 200, { id: 'acme/evil', sha: COMMIT });
      if (url.pathname === `/api/models/acme/evil/tree/${COMMIT}`) return json(res, 200, entries);
      const prefix = `/acme/evil/resolve/${COMMIT}/`;
      if (url.pathname.startsWith(prefix)) return serve(decodeURIComponent(url.pathname.slice(prefix.length)), req, res, origin);
      return json(res, 404, { error: 'not here' });
    });
  }

  it('an unsafe listed path fails with E_UNSAFE_PATH before anything is written', async () => {
    const server = await fakeHub([
      { type: 'file', path: 'config.json', oid: 'a'.repeat(40), size: 2 },
      { type: 'file', path: '../evil', oid: 'b'.repeat(40), size: 4 },
    ]);
    try {
      const c = createHuggingFaceClient({ endpoint: server.origin });
      const workDir = join(tmp, 'unsafe');
      await rejectsWith(fetchSnapshot(c, model('acme/evil'), { include: [], exclude: [], workDir }), 'E_UNSAFE_PATH', (e) => {
        assert.match(e.message, /"\.\.\/evil"/);
        assert.match(e.message, /acme\/evil/);
      });
      assert.ok(!existsSync(workDir), 'nothing written');
      assert.ok(!server.requests.some((r) => r.url.includes('/resolve/')), 'nothing downloaded');
    } finally {
      await server.close();
    }
  });

  it('wrong bytes fail with E_DOWNLOAD_INTEGRITY naming the file, and the partial is removed', async () => {
    const good = Buffer.from('{"real":true}\n');
    const evil = Buffer.from('{"evil":true}\n'); // same length
    const lfsGood = randomBytes(5000);
    const server = await fakeHub(
      [
        { type: 'file', path: 'config.json', oid: gitSha1(good), size: good.length },
        { type: 'file', path: 'w.bin', oid: 'c'.repeat(40), size: lfsGood.length, lfs: { oid: sha256(lfsGood), size: lfsGood.length, pointerSize: 130 } },
        { type: 'file', path: 'short.txt', oid: gitSha1(good), size: good.length },
        { type: 'file', path: 'long.txt', oid: gitSha1(good), size: good.length },
      ],
      (path, _req, res) => {
        if (path === 'config.json') return void res.end(evil);
        if (path === 'w.bin') return void res.end(randomBytes(5000));
        if (path === 'short.txt') {
          res.writeHead(200, {}); // no content-length: the body just ends early
          return void res.end(good.subarray(0, 3));
        }
        res.writeHead(200, {}); // chunked, longer than listed
        res.end(Buffer.concat([good, good]));
      },
    );
    try {
      const c = createHuggingFaceClient({ endpoint: server.origin });
      const ref = model('acme/evil');
      const files = await c.listFiles(ref, COMMIT);
      for (const [path, pattern] of [
        ['config.json', new RegExp(`git blob id mismatch: expected ${gitSha1(good)}, got ${gitSha1(evil)}`)],
        ['w.bin', new RegExp(`sha256 mismatch: expected ${sha256(lfsGood)}`)],
        ['short.txt', /expected 14 bytes, got 3/],
        ['long.txt', /more than the 14 bytes/],
      ] as const) {
        const dest = join(tmp, `${path}.partial`);
        await rejectsWith(c.download(ref, COMMIT, files.find((f) => f.path === path) as RemoteFile, dest), 'E_DOWNLOAD_INTEGRITY', (e) => {
          assert.ok(e.message.includes(`acme/evil/${path}`), e.message);
          assert.match(e.message, pattern);
        });
        assert.ok(!existsSync(dest), `${path}: partial removed`);
      }
      // through fetchSnapshot: nothing lands in files/ either
      const workDir = join(tmp, 'integrity');
      await rejectsWith(fetchSnapshot(c, ref, { include: ['config.json'], exclude: [], workDir }), 'E_DOWNLOAD_INTEGRITY');
      assert.deepEqual(await walk(workDir), []);
    } finally {
      await server.close();
    }
  });

  it('a connection cut mid-body fails with E_NETWORK, and the partial is removed', async () => {
    const data = randomBytes(100_000);
    const server = await fakeHub([{ type: 'file', path: 'cut.bin', oid: 'd'.repeat(40), size: data.length, lfs: { oid: sha256(data), size: data.length } }], (_path, _req, res) => {
      res.writeHead(200, { 'content-length': String(data.length) });
      res.write(data.subarray(0, 10_000), () => setTimeout(() => res.destroy(), 20));
    });
    try {
      const c = createHuggingFaceClient({ endpoint: server.origin });
      const [file] = await c.listFiles(model('acme/evil'), COMMIT);
      const dest = join(tmp, 'cut.partial');
      await rejectsWith(c.download(model('acme/evil'), COMMIT, file as RemoteFile, dest), 'E_NETWORK', (e) => assert.ok(e.message.includes(`${server.origin}/acme/evil/resolve/`), e.message));
      assert.ok(!existsSync(dest));
    } finally {
      await server.close();
    }
  });

  it('keeps the token on the endpoint origin: not to another port, and not back after leaving', async () => {
    const data = Buffer.from('hello\n');
    let endpointOrigin = '';
    // Same host, other port: another origin. It sends the client back to the endpoint.
    const other = await tinyServer((_req, res) => {
      res.writeHead(302, { location: `${endpointOrigin}/final?from=cdn` });
      res.end();
    });
    const server = await fakeHub([{ type: 'file', path: 'a.txt', oid: gitSha1(data), size: data.length }], (_path, _req, res) => {
      res.writeHead(307, { location: `${other.origin}/cdn/a.txt?sig=s3cret` });
      res.end();
    });
    endpointOrigin = server.origin;
    try {
      const c = createHuggingFaceClient({ endpoint: server.origin, token: GOOD });
      const files = await c.listFiles(model('acme/evil'), COMMIT);
      // /final is a 404 on the fake hub: what matters is who got the token
      await rejectsWith(c.download(model('acme/evil'), COMMIT, files[0] as RemoteFile, join(tmp, 'bounce')), 'E_HTTP', (e) => {
        assert.ok(!e.message.includes('s3cret') && !e.message.includes('from=cdn'), 'no query in the message');
      });
      assert.equal(other.requests.length, 1);
      assert.equal(other.requests[0]?.authorization, undefined, 'no token to another port');
      const back = server.requests.find((r) => r.url.startsWith('/final'));
      assert.ok(back !== undefined, 'the chain came back to the endpoint');
      assert.equal(back.authorization, undefined, 'no token once the chain left the origin');
      assert.ok(server.requests.filter((r) => r.url.includes('/resolve/')).every((r) => r.authorization === `Bearer ${GOOD}`));
    } finally {
      await server.close();
      await other.close();
    }
  });

  it("rewrites a mirror's next-page link to another origin onto the endpoint", async () => {
    const a = Buffer.from('a');
    const b = Buffer.from('b');
    const server = await tinyServer((req, res, origin) => {
      const url = new URL(req.url ?? '/', origin);
      if (url.pathname === `/api/models/acme/m/tree/${COMMIT}` && url.searchParams.get('cursor') === null) {
        return json(res, 200, [{ type: 'file', path: 'a', oid: gitSha1(a), size: 1 }], {
          link: `<https://huggingface.co/api/models/acme/m/tree/${COMMIT}?recursive=true&expand=false&cursor=Mg>; rel="next"`,
        });
      }
      if (url.pathname === `/api/models/acme/m/tree/${COMMIT}` && url.searchParams.get('cursor') === 'Mg') {
        return json(res, 200, [{ type: 'file', path: 'b', oid: gitSha1(b), size: 1 }]);
      }
      json(res, 404, { error: 'no' });
    });
    try {
      const c = createHuggingFaceClient({ endpoint: server.origin, token: GOOD });
      const files = await c.listFiles(model('acme/m'), COMMIT);
      assert.deepEqual(files.map((f) => f.path), ['a', 'b']);
      assert.equal(server.requests.length, 2);
      assert.ok(server.requests.every((r) => r.authorization === `Bearer ${GOOD}`));
      assert.match(server.requests[1]?.url ?? '', /cursor=Mg/);
    } finally {
      await server.close();
    }
  });

  it('rejects a repo info whose sha is not a full commit', async () => {
    const server = await tinyServer((_req, res) => json(res, 200, { sha: 'main' }));
    try {
      const c = createHuggingFaceClient({ endpoint: server.origin });
      await rejectsWith(c.resolveCommit(model('acme/x')), 'E_HUB_PROTOCOL', (e) => assert.ok(e.message.includes(server.origin)));
    } finally {
      await server.close();
    }
  });
});
