/**
 * The ModelScope client against the protocol-faithful test ModelScope (API on 127.0.0.1, signed-URL
 * CDN on 127.0.0.2): endpoint/token resolution, revision choice, listing, downloads with redirects,
 * credentials only on the endpoint origin, resume with Range, SHA-256 checks and error mapping.
 */
import { rejectsWith } from '../support/assert-error.js';
import * as assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isAirlockError } from '../../src/errors.js';
import { fetchSnapshot } from '../../src/export/fetch.js';
import {
  createModelScopeClient,
  MODELSCOPE_DEFAULT_ENDPOINT,
  MODELSCOPE_DEFAULT_REVISION,
  resolveModelScopeEndpoint,
  resolveModelScopeToken,
  type ModelScopeClient,
} from '../../src/hub/modelscope/client.js';
import { modelScopeErrorFromResponse } from '../../src/hub/modelscope/errors.js';
import { lfsPointerBlobId } from '../../src/hub/modelscope/wire.js';
import type { RepoRef } from '../../src/hub/types.js';
import { startModelScopeServer, type MsAddedCommit, type ModelScopeServer } from '../support/modelscope-server.js';

const GOOD = 'ms-good-token-0123456789';
const BAD = 'ms-bad-token-0123456789';
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

const FILES: Record<string, Buffer> = {
  '.gitattributes': Buffer.from('*.safetensors filter=lfs diff=lfs merge=lfs -text\n'),
  'configuration.json': Buffer.from('{"framework":"pytorch","task":"text-generation"}\n'),
  'config.json': Buffer.from('{"model_type":"qwen2"}\n'),
  'sub/dir/vocab.txt': Buffer.from('[PAD]\n[UNK]\n'),
  'odd dir/naïve #1+?.txt': Buffer.from('needs encoding\n'),
  'empty.txt': Buffer.alloc(0),
  'model.safetensors': randomBytes(2 * 1024 * 1024 + 5),
};
const files = (): Array<{ path: string; data: Buffer }> => Object.entries(FILES).map(([path, data]) => ({ path, data }));
const model = (id: string, revision = MODELSCOPE_DEFAULT_REVISION): RepoRef => ({ type: 'model', id, revision });

describe('resolveModelScopeEndpoint / resolveModelScopeToken', () => {
  it('follows --endpoint > MODELSCOPE_ENDPOINT > MODELSCOPE_DOMAIN > default', () => {
    assert.equal(resolveModelScopeEndpoint(undefined, {}), MODELSCOPE_DEFAULT_ENDPOINT);
    assert.equal(resolveModelScopeEndpoint(undefined, { MODELSCOPE_DOMAIN: 'ms.example' }), 'https://ms.example');
    assert.equal(resolveModelScopeEndpoint(undefined, { MODELSCOPE_DOMAIN: 'https://ms.example/' }), 'https://ms.example');
    assert.equal(resolveModelScopeEndpoint(undefined, { MODELSCOPE_DOMAIN: 'a.example', MODELSCOPE_ENDPOINT: 'http://b.example:8080/' }), 'http://b.example:8080');
    assert.equal(resolveModelScopeEndpoint('c.example', { MODELSCOPE_ENDPOINT: 'http://b.example' }), 'https://c.example');
    assert.equal(resolveModelScopeEndpoint('https://c.example/prefix/', {}), 'https://c.example/prefix');
    assert.equal(resolveModelScopeEndpoint(undefined, { MODELSCOPE_ENDPOINT: '', MODELSCOPE_DOMAIN: 'd.example' }), 'https://d.example');
  });
  it('refuses credentials, queries and other schemes', () => {
    assert.throws(() => resolveModelScopeEndpoint('https://u:p@x.example', {}), (e) => isAirlockError(e, 'E_USAGE') && !e.message.includes('u:p'));
    assert.throws(() => resolveModelScopeEndpoint('https://x.example/?a=1', {}), (e) => isAirlockError(e, 'E_USAGE'));
    assert.throws(() => resolveModelScopeEndpoint(undefined, { MODELSCOPE_ENDPOINT: 'ftp://x.example' }), (e) => isAirlockError(e, 'E_USAGE'));
  });
  it('takes --token over MODELSCOPE_API_TOKEN, cleaned', () => {
    assert.equal(resolveModelScopeToken(undefined, {}), undefined);
    assert.equal(resolveModelScopeToken(undefined, { MODELSCOPE_API_TOKEN: ' abc\n' }), 'abc');
    assert.equal(resolveModelScopeToken('flag', { MODELSCOPE_API_TOKEN: 'env' }), 'flag');
    assert.equal(resolveModelScopeToken('', { MODELSCOPE_API_TOKEN: 'env' }), 'env');
    assert.throws(() => resolveModelScopeToken('a b', {}), (e) => isAirlockError(e, 'E_USAGE') && !e.message.includes('a b'));
  });
});

describe('ModelScope error mapping (pure)', () => {
  const repo = model('acme/tiny');
  const url = new URL('https://ms.example/api/v1/models/acme/tiny/revisions');
  const body = (code: number, message: string): string => JSON.stringify({ Code: code, Success: false, Message: message, RequestId: 'req-1' });
  it('maps statuses and keeps the request id and message', () => {
    const e404 = modelScopeErrorFromResponse({ status: 404, headers: {}, body: body(10010205001, '模型不存在'), url, repo, stage: 'revisions', tokenSent: false });
    assert.equal(e404.code, 'E_REPO_NOT_FOUND');
    assert.match(e404.message, /模型不存在/);
    assert.match(e404.message, /req-1/);
    assert.match(e404.hint ?? '', /MODELSCOPE_API_TOKEN/);
    assert.equal(modelScopeErrorFromResponse({ status: 404, headers: {}, body: '', url, repo, stage: 'file', path: 'a.txt', tokenSent: false }).code, 'E_ENTRY_NOT_FOUND');
    assert.equal(modelScopeErrorFromResponse({ status: 401, headers: {}, body: '', url, repo, stage: 'repo', tokenSent: true }).code, 'E_AUTH');
    assert.equal(modelScopeErrorFromResponse({ status: 403, headers: {}, body: '', url, repo, stage: 'repo', tokenSent: true }).code, 'E_FORBIDDEN');
    assert.equal(modelScopeErrorFromResponse({ status: 403, headers: {}, body: '', url, repo, stage: 'repo', tokenSent: false }).code, 'E_AUTH');
    const limited = modelScopeErrorFromResponse({ status: 429, headers: { 'retry-after': '7' }, body: '', url, repo, stage: 'repo', tokenSent: false });
    assert.equal(limited.code, 'E_RATE_LIMITED');
    assert.match(limited.hint ?? '', /7 s/);
    assert.equal(modelScopeErrorFromResponse({ status: 502, headers: { 'x-request-id': 'xyz' }, body: '<html>', url, repo, stage: 'repo', tokenSent: false }).message.includes('xyz'), true);
  });
  it('maps a failed envelope behind HTTP 200 by its Code', () => {
    assert.equal(modelScopeErrorFromResponse({ status: 200, headers: {}, body: body(404, 'gone'), url, repo, stage: 'repo', tokenSent: false }).code, 'E_REPO_NOT_FOUND');
    const business = modelScopeErrorFromResponse({ status: 200, headers: {}, body: body(10010101001, 'odd'), url, repo, stage: 'repo', tokenSent: false });
    assert.equal(business.code, 'E_HTTP');
    assert.match(business.message, /10010101001/);
  });
  it('never shows the token', () => {
    const e = modelScopeErrorFromResponse({ status: 401, headers: {}, body: body(401, `bad token ${GOOD}`), url, repo, stage: 'repo', tokenSent: true, token: GOOD });
    assert.ok(!e.message.includes(GOOD));
  });
});

describe('ModelScope client against the test server', () => {
  let server: ModelScopeServer;
  let work: string;
  let first: MsAddedCommit;
  let second: MsAddedCommit;
  let client: ModelScopeClient;

  before(async () => {
    server = await startModelScopeServer({ tokens: [GOOD] });
    work = await mkdtemp(join(tmpdir(), 'airlock-ms-client-'));
    first = server.addRepo({ id: 'Qwen/Qwen2.5-Tiny', files: files(), tags: ['v1.0.0'] });
    second = server.addCommit('Qwen/Qwen2.5-Tiny', [{ path: 'config.json', data: '{"model_type":"qwen2","v":2}\n' }]);
    server.addRepo({ id: 'acme/private', files: [{ path: 'a.txt', data: 'secret\n' }, { path: 'w.bin', data: randomBytes(5000) }], private: true });
    client = createModelScopeClient({ endpoint: server.endpoint, retry: { baseDelayMs: 1 } });
  });
  after(async () => {
    await server?.close();
    if (work !== undefined) await rm(work, { recursive: true, force: true });
  });

  it('resolves master (the default), branches and tags to their CommitId and keeps CreatedAt', async () => {
    assert.equal(await client.resolveCommit(model('Qwen/Qwen2.5-Tiny')), second.commit);
    assert.deepEqual(client.resolved(model('Qwen/Qwen2.5-Tiny')), { revision: 'master', kind: 'branch', commit: second.commit, createdAt: second.createdAt });
    assert.equal(await client.resolveCommit(model('Qwen/Qwen2.5-Tiny', 'v1.0.0')), first.commit);
    assert.equal(client.kind, 'modelscope');
  });

  it('refuses unknown revisions and commit hashes, naming what exists', async () => {
    await rejectsWith(client.resolveCommit(model('Qwen/Qwen2.5-Tiny', 'nope')), 'E_REVISION_NOT_FOUND', (e) => assert.match(e.hint ?? '', /master, v1\.0\.0/));
    await rejectsWith(client.resolveCommit(model('Qwen/Qwen2.5-Tiny', first.commit)), 'E_REVISION_NOT_FOUND', (e) => assert.match(e.hint ?? '', /not commit hashes/));
    await rejectsWith(client.resolveCommit(model('acme/missing')), 'E_REPO_NOT_FOUND');
    // datasets are supported (test/e2e/modelscope-datasets.test.ts); this one does not exist
    await rejectsWith(client.resolveCommit({ type: 'dataset', id: 'acme/ds', revision: 'master' }), 'E_REPO_NOT_FOUND');
  });

  it('lists every blob recursively with its sha256, per-file last commit and etag fields', async () => {
    const repo = model('Qwen/Qwen2.5-Tiny');
    const listed = await client.listFiles(repo, second.commit);
    assert.deepEqual(listed.map((f) => f.path).sort(), Object.keys(FILES).sort());
    const config = listed.find((f) => f.path === 'config.json')!;
    const vocab = listed.find((f) => f.path === 'sub/dir/vocab.txt')!;
    assert.equal(config.lastCommit, second.commit);
    assert.equal(vocab.lastCommit, first.commit);
    const weights = listed.find((f) => f.path === 'model.safetensors')!;
    assert.equal(weights.lfsSha256, sha256(FILES['model.safetensors']!));
    assert.equal(weights.isLfs, true);
    assert.equal(weights.blobId, lfsPointerBlobId(weights.lfsSha256, weights.size));
    const listing = server.requests.find((r) => r.url.includes('/repo/files'))!;
    assert.match(listing.url, /Revision=master&Recursive=True/);
    assert.equal(listing.snapshot, 'True');
    assert.match(listing.userAgent ?? '', /^modelscope\/[\d.]+; airlock\//);
    assert.match(listing.requestId ?? '', /^[0-9a-f]{32}$/);
  });

  it('downloads through fetchSnapshot: redirects to the CDN, odd names, zero-byte files made locally', async () => {
    const before = server.requests.length;
    const snap = await fetchSnapshot(client, model('Qwen/Qwen2.5-Tiny'), { include: [], exclude: [], workDir: join(work, 'fetch') });
    assert.equal(snap.commit, second.commit);
    for (const f of snap.files) {
      const expected = f.remote.path === 'config.json' ? Buffer.from('{"model_type":"qwen2","v":2}\n') : FILES[f.remote.path]!;
      assert.deepEqual(await readFile(f.localPath), expected, f.remote.path);
      assert.equal(f.etag, sha256(expected));
      assert.equal(f.lfs, true);
    }
    const got = server.requests.slice(before);
    assert.ok(!got.some((r) => r.url.includes('empty.txt')), 'no request for a zero-byte file');
    const odd = got.find((r) => r.url.includes('FilePath=odd'))!;
    assert.match(odd.url, /FilePath=odd\+dir%2Fna%C3%AFve\+%231%2B%3F\.txt/);
    assert.ok(odd.snapshotIdentifier !== undefined);
    assert.ok(got.some((r) => r.host === '127.0.0.2' && r.status === 200), 'LFS bytes came from the CDN');
  });

  it('sends cookie and bearer only to the endpoint, never to the CDN', async () => {
    const authed = createModelScopeClient({ endpoint: server.endpoint, token: GOOD, retry: { baseDelayMs: 1 } });
    const repo = model('acme/private');
    const commit = await authed.resolveCommit(repo);
    const before = server.requests.length;
    for (const file of await authed.listFiles(repo, commit)) await authed.download(repo, commit, file, join(work, `p-${file.path}`));
    assert.equal(await readFile(join(work, 'p-a.txt'), 'utf8'), 'secret\n');
    const got = server.requests.slice(before);
    for (const r of got.filter((r) => r.host === '127.0.0.1')) {
      assert.equal(r.authorization, `Bearer ${GOOD}`);
      assert.equal(r.cookie, `m_session_id=${GOOD}`);
    }
    const cdn = got.filter((r) => r.host === '127.0.0.2');
    assert.ok(cdn.length > 0);
    for (const r of cdn) {
      assert.equal(r.authorization, undefined);
      assert.equal(r.cookie, undefined);
    }
  });

  it('maps private-without-token to not found and a bad token to E_AUTH', async () => {
    await rejectsWith(client.resolveCommit(model('acme/private')), 'E_REPO_NOT_FOUND', (e) => assert.match(e.message, /模型不存在/));
    const bad = createModelScopeClient({ endpoint: server.endpoint, token: BAD, retry: { baseDelayMs: 1 } });
    await rejectsWith(bad.resolveCommit(model('acme/private')), 'E_AUTH', (e) => assert.ok(!e.message.includes(BAD)));
  });

  it('resumes a cut download with an open Range and appends the 206', async () => {
    const repo = model('Qwen/Qwen2.5-Tiny');
    const listed = await client.listFiles(repo, second.commit);
    for (const path of ['model.safetensors', 'sub/dir/vocab.txt']) {
      server.fault(path, { kind: 'cut', after: 3 });
      const before = server.requests.length;
      const dest = join(work, `resume-${path.replace(/\//g, '_')}`);
      const digests = await client.download(repo, second.commit, listed.find((f) => f.path === path)!, dest);
      assert.equal(digests.sha256, sha256(FILES[path]!));
      assert.deepEqual(await readFile(dest), FILES[path]);
      const ranged = server.requests.slice(before).filter((r) => r.range !== undefined);
      // the range rides along the 302 to the CDN for LFS files
      assert.deepEqual(ranged.filter((r) => r.status !== 302).map((r) => [r.range, r.status]), [['bytes=3-', 206]]);
    }
  });

  it('restarts when the server ignores Range, retries 5xx, and checks the sha256 every time', async () => {
    const repo = model('Qwen/Qwen2.5-Tiny');
    const listed = await client.listFiles(repo, second.commit);
    const weights = listed.find((f) => f.path === 'model.safetensors')!;
    server.fault('model.safetensors', { kind: 'cut', after: 100 });
    server.fault('model.safetensors', { kind: 'no-range' });
    assert.equal((await client.download(repo, second.commit, weights, join(work, 'norange'))).sha256, weights.lfsSha256);

    server.fault('configuration.json', { kind: 'status', status: 503, retryAfter: 0 });
    server.fault('configuration.json', { kind: 'corrupt' });
    const cfg = listed.find((f) => f.path === 'configuration.json')!;
    assert.equal((await client.download(repo, second.commit, cfg, join(work, 'cfg'))).sha256, cfg.lfsSha256);

    server.fault('configuration.json', { kind: 'corrupt', times: 3 });
    const dest = join(work, 'cfg-bad');
    await rejectsWith(client.download(repo, second.commit, cfg, dest), 'E_DOWNLOAD_INTEGRITY', (e) => assert.match(e.message, /sha256 mismatch/));
    assert.equal(existsSync(dest), false, 'nothing unverified is kept');

    await rejectsWith(client.download(repo, second.commit, { ...cfg, path: 'gone.txt' }, join(work, 'gone')), 'E_ENTRY_NOT_FOUND');
  });

  it('refuses malformed listings and unsafe paths', async () => {
    server.addRepo({ id: 'acme/bad', files: [{ path: 'a.txt', data: 'x' }] });
    server.addRepo({ id: 'acme/evil', files: [{ path: 'a.txt', data: 'x' }] });
    const c = createModelScopeClient({ endpoint: server.endpoint, retry: { baseDelayMs: 1 } });
    const bad = model('acme/bad');
    const commit = await c.resolveCommit(bad);
    server.overrideListing('acme/bad', { Files: [{ Name: 'a.txt', Path: 'a.txt', Type: 'blob', Size: 1, Revision: commit }] });
    await rejectsWith(c.listFiles(bad, commit), 'E_HUB_PROTOCOL', (e) => assert.match(e.message, /Sha256 is missing/));
    const evil = model('acme/evil');
    server.overrideListing('acme/evil', { Files: [{ Name: 'x', Path: '../x', Type: 'blob', Size: 1, Sha256: 'a'.repeat(64), Revision: commit }] });
    const evilCommit = await c.resolveCommit(evil);
    await rejectsWith(c.listFiles(evil, evilCommit), 'E_UNSAFE_PATH');
    server.overrideListing('acme/evil', { Files: null });
    assert.deepEqual(await c.listFiles(evil, evilCommit), []);
  });

  it('reports an unreachable endpoint as E_NETWORK after retrying', async () => {
    const c = createModelScopeClient({ endpoint: 'http://127.0.0.1:9', retry: { attempts: 2, baseDelayMs: 1 } });
    await rejectsWith(c.resolveCommit(model('acme/x')), 'E_NETWORK');
  });
});
