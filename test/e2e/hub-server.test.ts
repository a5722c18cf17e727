/**
 * The test Hub speaks the Hub protocol (/work/shared/specs/hf-hub.md §2): first checked request by request,
 * then against the real `huggingface_hub` Python library, which must download from it byte-for-byte.
 */
import * as assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gitBlobSha1, lfsPointer, startHubServer, type AddedCommit, type HubServer } from '../support/hub-server.js';
import { runPython } from '../support/python.js';

const GOOD = 'hf_good_token';
const OTHER = 'hf_other_token';

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });

/** fetch without following redirects (Node's fetch then exposes the real 3xx and its Location). */
async function get(url: string, init: { method?: string; headers?: Record<string, string> } = {}): Promise<Response> {
  return fetch(url, { redirect: 'manual', ...init });
}

async function bytes(res: Response): Promise<Buffer> {
  return Buffer.from(await res.arrayBuffer());
}

async function walk(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const rel = prefix === '' ? e.name : `${prefix}/${e.name}`;
    if (e.isDirectory()) out.push(...(await walk(join(dir, e.name), rel)));
    else out.push(rel);
  }
  return out.sort();
}

const TINY = {
  'config.json': Buffer.from('{"model_type":"bert","hidden_size":8}\n'),
  'README.md': Buffer.from('# tiny\n'),
  'sub/dir/vocab.txt': Buffer.from('[PAD]\n[UNK]\nhello\nworld\n'),
  'model.safetensors': randomBytes(200_000),
  // Needs percent-encoding in resolve URLs and in the relative resolve-cache Location.
  'odd dir/naïve #1?.txt': Buffer.from('encoded\n'),
};
const tinyFiles = () => Object.entries(TINY).map(([path, data]) => ({ path, data }));

describe('hub server: HTTP protocol', () => {
  let hub: HubServer;
  let tiny: AddedCommit;
  let pr: AddedCommit;
  let tmp: string;
  let bigPath: string;
  let big: AddedCommit;

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'hub-server-'));
    hub = await startHubServer({ tokens: [GOOD, OTHER], pageSize: 2 });
    tiny = await hub.addRepo({ id: 'acme/tiny', files: tinyFiles(), tags: ['v1'] });
    pr = await hub.addCommit({ id: 'acme/tiny' }, [...tinyFiles(), { path: 'extra.txt', data: 'pr\n' }], { branch: 'refs/pr/1' });
    await hub.addRepo({ id: 'acme/flat', files: ['a', 'b', 'c', 'd', 'e'].map((n) => ({ path: `${n}.txt`, data: `${n}\n` })) });
    await hub.addRepo({ id: 'acme/secret', private: true, files: tinyFiles() });
    await hub.addRepo({ id: 'acme/gated', gated: true, files: tinyFiles() });
    await hub.addRepo({ id: 'acme/ds', type: 'dataset', files: [{ path: 'data/train.csv', data: 'a,b\n1,2\n' }] });
    await hub.addRepo({ id: 'acme/old-name', files: tinyFiles() });
    hub.renameRepo('acme/old-name', 'acme/new-name');
    bigPath = join(tmp, 'big.dat');
    await writeFile(bigPath, randomBytes(11 * 1024 * 1024));
    big = await hub.addRepo({
      id: 'acme/big',
      files: [
        { path: 'weights.dat', fromFile: bigPath },
        { path: 'notes.txt', fromFile: bigPath, lfs: false },
      ],
    });
  });
  after(async () => {
    await hub.close();
    await rm(tmp, { recursive: true, force: true });
  });

  it('hashes like git and git-lfs', () => {
    assert.equal(gitBlobSha1(Buffer.alloc(0)), 'e69de29bb2d1d6434b8b29ae775ad8c2e48c5391');
    const st = tiny.files.find((f) => f.path === 'model.safetensors');
    const cfg = tiny.files.find((f) => f.path === 'config.json');
    assert.ok(st && cfg);
    assert.equal(st.lfs, true);
    assert.equal(st.sha256, sha256(TINY['model.safetensors']));
    assert.equal(st.blobId, gitBlobSha1(Buffer.from(lfsPointer(st.sha256, st.size))));
    assert.equal(st.etag, st.sha256);
    assert.equal(cfg.lfs, false);
    assert.equal(cfg.etag, gitBlobSha1(TINY['config.json']));
    assert.match(tiny.commit, /^[0-9a-f]{40}$/);
    assert.notEqual(tiny.commit, pr.commit);
    assert.deepEqual(big.files.map((f) => [f.path, f.lfs]), [['notes.txt', false], ['weights.dat', true]]);
  });

  it('repo info: sha per revision (branch, tag, encoded refs/pr/N, commit) and blobs=true', async () => {
    const plain = await get(`${hub.endpoint}/api/models/acme/tiny`);
    assert.equal(plain.status, 200);
    assert.ok(plain.headers.get('x-request-id'));
    const info = (await plain.json()) as Record<string, unknown>;
    assert.equal(info['id'], 'acme/tiny');
    assert.equal(info['sha'], tiny.commit);
    assert.equal(info['private'], false);
    assert.equal(info['gated'], false);
    assert.deepEqual(info['siblings'], Object.keys(TINY).sort().map((rfilename) => ({ rfilename })));
    for (const [rev, sha] of [['main', tiny.commit], ['v1', tiny.commit], ['refs%2Fpr%2F1', pr.commit], [pr.commit, pr.commit]]) {
      const res = await get(`${hub.endpoint}/api/models/acme/tiny/revision/${rev}`);
      assert.equal(res.status, 200, rev);
      assert.equal(((await res.json()) as { sha: string }).sha, sha, rev);
    }
    const withBlobs = (await (await get(`${hub.endpoint}/api/models/acme/tiny/revision/main?blobs=true`)).json()) as {
      siblings: Array<Record<string, unknown>>;
    };
    const st = tiny.files.find((f) => f.path === 'model.safetensors');
    assert.deepEqual(withBlobs.siblings.find((s) => s['rfilename'] === 'model.safetensors'), {
      rfilename: 'model.safetensors',
      blobId: st?.blobId,
      size: TINY['model.safetensors'].length,
      lfs: { sha256: st?.sha256, size: TINY['model.safetensors'].length, pointerSize: lfsPointer(st?.sha256 ?? '', st?.size ?? 0).length },
    });
    const ds = await get(`${hub.endpoint}/api/datasets/acme/ds/revision/main`);
    assert.equal(ds.status, 200);
  });

  it('tree: pages of pageSize linked by an absolute Link carrying every parameter', async () => {
    let url: string | undefined = `${hub.endpoint}/api/models/acme/flat/tree/main?recursive=true&expand=false`;
    const pages: string[][] = [];
    while (url !== undefined) {
      const res = await get(url);
      assert.equal(res.status, 200);
      pages.push(((await res.json()) as Array<{ path: string }>).map((e) => e.path));
      const link = res.headers.get('link');
      const m = link === null ? null : /^<([^>]+)>; rel="next"$/.exec(link);
      url = m?.[1];
      if (url !== undefined) {
        assert.ok(url.startsWith(`${hub.endpoint}/api/models/acme/flat/tree/main?`), url);
        const q = new URL(url).searchParams;
        assert.equal(q.get('recursive'), 'true');
        assert.equal(q.get('expand'), 'false');
        assert.ok(q.get('cursor'));
      }
    }
    assert.deepEqual(pages, [['a.txt', 'b.txt'], ['c.txt', 'd.txt'], ['e.txt']]);
  });

  it('tree: recursive derives directories; non-recursive lists one level; unknown path is EntryNotFound', async () => {
    const all = async (url: string): Promise<Array<Record<string, unknown>>> => {
      const out: Array<Record<string, unknown>> = [];
      let next: string | undefined = url;
      while (next !== undefined) {
        const res = await get(next);
        assert.equal(res.status, 200, next);
        out.push(...((await res.json()) as Array<Record<string, unknown>>));
        next = /^<([^>]+)>/.exec(res.headers.get('link') ?? '')?.[1];
      }
      return out;
    };
    const rec = await all(`${hub.endpoint}/api/models/acme/tiny/tree/${tiny.commit}?recursive=True&expand=False`);
    assert.deepEqual(
      rec.map((e) => `${String(e['type'])}:${String(e['path'])}`),
      [
        'file:README.md',
        'file:config.json',
        'file:model.safetensors',
        'directory:odd dir',
        'file:odd dir/naïve #1?.txt',
        'directory:sub',
        'directory:sub/dir',
        'file:sub/dir/vocab.txt',
      ],
    );
    const st = tiny.files.find((f) => f.path === 'model.safetensors');
    assert.deepEqual(rec.find((e) => e['path'] === 'model.safetensors'), {
      type: 'file',
      oid: st?.blobId,
      size: st?.size,
      path: 'model.safetensors',
      lfs: { oid: st?.sha256, size: st?.size, pointerSize: Buffer.byteLength(lfsPointer(st?.sha256 ?? '', st?.size ?? 0)) },
    });
    const dir = rec.find((e) => e['path'] === 'sub');
    assert.equal(dir?.['size'], 0);
    assert.match(String(dir?.['oid']), /^[0-9a-f]{40}$/);
    const top = await all(`${hub.endpoint}/api/models/acme/tiny/tree/main`);
    assert.deepEqual(top.map((e) => e['path']), ['README.md', 'config.json', 'model.safetensors', 'odd dir', 'sub']);
    // Python encodes the path as one segment (%2F); hub.js sends raw slashes.
    for (const p of ['sub%2Fdir', 'sub/dir']) {
      const inner = await all(`${hub.endpoint}/api/models/acme/tiny/tree/main/${p}?recursive=true`);
      assert.deepEqual(inner.map((e) => e['path']), ['sub/dir/vocab.txt']);
    }
    const missing = await get(`${hub.endpoint}/api/models/acme/tiny/tree/main/nope`);
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get('x-error-code'), 'EntryNotFound');
    const rev = await get(`${hub.endpoint}/api/models/acme/tiny/tree/nope?recursive=true`);
    assert.equal(rev.status, 404);
    assert.equal(rev.headers.get('x-error-code'), 'RevisionNotFound');
  });

  it('paths-info answers the chosen paths (form and JSON bodies)', async () => {
    const form = await fetch(`${hub.endpoint}/api/models/acme/tiny/paths-info/main`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'paths=config.json&paths=sub&paths=absent&expand=false',
    });
    assert.deepEqual(((await form.json()) as Array<{ path: string }>).map((e) => e.path), ['config.json', 'sub']);
    const json = await fetch(`${hub.endpoint}/api/models/acme/tiny/paths-info/main`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ paths: ['model.safetensors'], expand: false }),
    });
    assert.equal(((await json.json()) as Array<{ lfs?: unknown }>)[0]?.lfs !== undefined, true);
  });

  it('git file: 307 with a relative resolve-cache Location, then 200 with the bytes and metadata', async () => {
    const cfg = tiny.files.find((f) => f.path === 'sub/dir/vocab.txt');
    assert.ok(cfg);
    const head = await get(`${hub.endpoint}/acme/tiny/resolve/main/sub/dir/vocab.txt`, { method: 'HEAD', headers: { 'accept-encoding': 'identity' } });
    assert.equal(head.status, 307);
    const location = head.headers.get('location') ?? '';
    assert.equal(location, `/api/resolve-cache/models/acme/tiny/${tiny.commit}/sub/dir/vocab.txt?etag=%22${cfg.blobId}%22`);
    assert.equal(head.headers.get('x-repo-commit'), tiny.commit);
    assert.equal(head.headers.get('etag'), `"${cfg.blobId}"`);
    assert.ok(head.headers.get('x-request-id'));
    const final = await get(new URL(location, hub.endpoint).href, { method: 'HEAD' });
    assert.equal(final.status, 200);
    assert.equal(final.headers.get('content-length'), String(cfg.size));
    assert.equal(final.headers.get('x-repo-commit'), tiny.commit);
    assert.equal(final.headers.get('etag'), `"${cfg.blobId}"`);
    assert.equal(final.headers.get('accept-ranges'), 'bytes');
    const body = await get(new URL(location, hub.endpoint).href);
    assert.deepEqual(await bytes(body), TINY['sub/dir/vocab.txt']);
    // Followed automatically, as any client would.
    const odd = await fetch(`${hub.endpoint}/acme/tiny/resolve/main/odd%20dir/na%C3%AFve%20%231%3F.txt`);
    assert.equal(odd.status, 200);
    assert.deepEqual(await bytes(odd), TINY['odd dir/naïve #1?.txt']);
    const followed = await fetch(`${hub.endpoint}/acme/tiny/resolve/${encodeURIComponent('refs/pr/1')}/extra.txt`);
    assert.equal(await followed.text(), 'pr\n');
    assert.equal(followed.headers.get('x-repo-commit'), pr.commit);
  });

  it('LFS file: 302 with an absolute Location on the CDN host and X-Linked-Etag/Size; the CDN serves without auth', async () => {
    const st = tiny.files.find((f) => f.path === 'model.safetensors');
    assert.ok(st);
    const head = await get(`${hub.endpoint}/acme/tiny/resolve/main/model.safetensors`, { method: 'HEAD' });
    assert.equal(head.status, 302);
    const location = head.headers.get('location') ?? '';
    assert.ok(location.startsWith(`${hub.cdnOrigin}/`), location);
    assert.equal(new URL(location).hostname, '127.0.0.2');
    assert.notEqual(new URL(location).hostname, new URL(hub.endpoint).hostname);
    assert.equal(head.headers.get('x-repo-commit'), tiny.commit);
    assert.equal(head.headers.get('x-linked-etag'), `"${st.sha256}"`);
    assert.equal(head.headers.get('x-linked-size'), String(st.size));
    assert.equal(head.headers.get('etag'), `"${st.blobId}"`);
    const cdn = await get(location);
    assert.equal(cdn.status, 200);
    assert.equal(cdn.headers.get('x-repo-commit'), null);
    assert.equal(cdn.headers.get('etag'), `"${st.sha256}"`);
    assert.equal(cdn.headers.get('content-length'), String(st.size));
    assert.deepEqual(await bytes(cdn), TINY['model.safetensors']);
    const rec = hub.requests.filter((r) => r.host === '127.0.0.2' && r.method === 'GET');
    assert.ok(rec.length > 0 && rec.every((r) => r.authorization === undefined && r.status === 200));
    const forged = await get(location.replace(/signature=[0-9a-f]+/, `signature=${'0'.repeat(64)}`));
    assert.equal(forged.status, 403);
  });

  it('Range: 206 with Content-Range on resolve-cache and CDN; 416 with bytes */size out of range', async () => {
    const data = TINY['model.safetensors'];
    const cdnUrl = (await get(`${hub.endpoint}/acme/tiny/resolve/main/model.safetensors`, { method: 'HEAD' })).headers.get('location') ?? '';
    const cases: Array<[string, number, number]> = [['bytes=100-', 100, data.length - 1], ['bytes=10-19', 10, 19], ['bytes=-5', data.length - 5, data.length - 1]];
    for (const [range, start, end] of cases) {
      const res = await get(cdnUrl, { headers: { range } });
      assert.equal(res.status, 206, range);
      assert.equal(res.headers.get('content-range'), `bytes ${start}-${end}/${data.length}`);
      assert.deepEqual(await bytes(res), data.subarray(start, end + 1));
    }
    const over = await get(cdnUrl, { headers: { range: `bytes=${data.length}-` } });
    assert.equal(over.status, 416);
    assert.equal(over.headers.get('content-range'), `bytes */${data.length}`);

    const vocab = TINY['sub/dir/vocab.txt'];
    const loc = new URL((await get(`${hub.endpoint}/acme/tiny/resolve/main/sub/dir/vocab.txt`)).headers.get('location') ?? '', hub.endpoint).href;
    const part = await get(loc, { headers: { range: 'bytes=6-' } });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get('content-range'), `bytes 6-${vocab.length - 1}/${vocab.length}`);
    assert.equal(part.headers.get('x-repo-commit'), tiny.commit);
    assert.deepEqual(await bytes(part), vocab.subarray(6));
    const bad = await get(loc, { headers: { range: 'bytes=9999-' } });
    assert.equal(bad.status, 416);
    assert.equal(bad.headers.get('content-range'), `bytes */${vocab.length}`);
  });

  it('fromFile: streamed big files (LFS by size, and a big git file) with ranges', async () => {
    const data = await readFile(bigPath);
    const viaCdn = await fetch(`${hub.endpoint}/acme/big/resolve/main/weights.dat`);
    assert.equal(viaCdn.url.startsWith(hub.cdnOrigin), true);
    assert.equal(sha256(await bytes(viaCdn)), sha256(data));
    const viaGit = await fetch(`${hub.endpoint}/acme/big/resolve/main/notes.txt`, { headers: { range: 'bytes=5000000-5000009' } });
    assert.equal(viaGit.status, 206);
    assert.deepEqual(await bytes(viaGit), data.subarray(5_000_000, 5_000_010));
    assert.equal(big.files.find((f) => f.path === 'notes.txt')?.blobId, gitBlobSha1(data));
  });

  it('errors carry X-Error-Code, X-Error-Message and {"error"} on API, tree and resolve', async () => {
    const expectError = async (url: string, status: number, code: string | null, headers: Record<string, string> = {}, method = 'GET') => {
      const res = await get(url, { method, headers });
      assert.equal(res.status, status, `${method} ${url}`);
      assert.equal(res.headers.get('x-error-code'), code, url);
      assert.ok(res.headers.get('x-request-id'));
      const message = res.headers.get('x-error-message');
      assert.ok(message, url);
      if (method === 'GET') assert.deepEqual(await res.json(), { error: message });
      return res;
    };
    const e = hub.endpoint;
    // Unknown repo: 404 everywhere.
    for (const url of [`${e}/api/models/acme/nope`, `${e}/api/models/acme/nope/tree/main`, `${e}/acme/nope/resolve/main/config.json`]) {
      const res = await expectError(url, 404, 'RepoNotFound');
      assert.equal(res.headers.get('x-error-message'), 'Repository not found');
    }
    // Private without a token: 401 RepoNotFound (hides existence); with a valid token: OK.
    for (const url of [`${e}/api/models/acme/secret/revision/main`, `${e}/api/models/acme/secret/tree/main`, `${e}/acme/secret/resolve/main/config.json`]) {
      await expectError(url, 401, 'RepoNotFound');
      const ok = await get(url, { headers: bearer(GOOD) });
      assert.ok(ok.status === 200 || ok.status === 307, url);
    }
    // A token the Hub does not know: 401 with the exact message huggingface_hub keys on, even on a public repo.
    for (const url of [`${e}/api/models/acme/tiny`, `${e}/acme/tiny/resolve/main/config.json`]) {
      const res = await expectError(url, 401, null, bearer('hf_wrong'));
      assert.equal(res.headers.get('x-error-message'), 'Invalid credentials in Authorization header');
    }
    // Gated: info and tree are public; content needs a token (401) with granted access (else 403).
    assert.equal((await get(`${e}/api/models/acme/gated/revision/main`)).status, 200);
    assert.equal((await get(`${e}/api/models/acme/gated/tree/main`)).status, 200);
    const g401 = await expectError(`${e}/acme/gated/resolve/main/config.json`, 401, 'GatedRepo', {}, 'HEAD');
    assert.match(g401.headers.get('x-error-message') ?? '', /^Access to model acme\/gated is restricted\. You must have access to it and be authenticated/);
    await expectError(`${e}/acme/gated/resolve/main/model.safetensors`, 403, 'GatedRepo', bearer(OTHER));
    hub.grantGatedAccess(GOOD, 'acme/gated');
    assert.equal((await get(`${e}/acme/gated/resolve/main/model.safetensors`, { headers: bearer(GOOD) })).status, 302);
    await expectError(`${e}/acme/gated/resolve/main/model.safetensors`, 403, 'GatedRepo', bearer(OTHER));
    // Revision and entry.
    await expectError(`${e}/api/models/acme/tiny/revision/nope`, 404, 'RevisionNotFound');
    await expectError(`${e}/acme/tiny/resolve/nope/config.json`, 404, 'RevisionNotFound', {}, 'HEAD');
    const entry = await expectError(`${e}/acme/tiny/resolve/main/missing.txt`, 404, 'EntryNotFound', {}, 'HEAD');
    assert.equal(entry.headers.get('x-repo-commit'), tiny.commit);
    await expectError(`${e}/datasets/acme/ds/resolve/main/absent.csv`, 404, 'EntryNotFound');
    await expectError(`${e}/datasets/acme/tiny/resolve/main/config.json`, 404, 'RepoNotFound');
  });

  it('renamed repo: 307 with a relative Location to the same URL under the new id', async () => {
    const e = hub.endpoint;
    const cases: Array<[string, string]> = [
      ['/api/models/acme/old-name', '/api/models/acme/new-name'],
      ['/api/models/acme/old-name/revision/main?blobs=true', '/api/models/acme/new-name/revision/main?blobs=true'],
      ['/api/models/acme/old-name/tree/main?recursive=true&expand=false', '/api/models/acme/new-name/tree/main?recursive=true&expand=false'],
      ['/acme/old-name/resolve/main/sub/dir/vocab.txt', '/acme/new-name/resolve/main/sub/dir/vocab.txt'],
    ];
    for (const [from, to] of cases) {
      const res = await get(`${e}${from}`);
      assert.equal(res.status, 307, from);
      assert.equal(res.headers.get('location'), to);
    }
    const info = (await (await fetch(`${e}/api/models/acme/old-name`)).json()) as { id: string };
    assert.equal(info.id, 'acme/new-name');
  });

  it('datasets: resolve under the datasets/ prefix', async () => {
    const res = await fetch(`${hub.endpoint}/datasets/acme/ds/resolve/main/data/train.csv`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'a,b\n1,2\n');
    assert.ok(new URL(res.url).pathname.startsWith('/api/resolve-cache/datasets/acme/ds/'));
  });

  it('records every request on both hosts', () => {
    assert.ok(hub.requests.some((r) => r.host === '127.0.0.1'));
    assert.ok(hub.requests.some((r) => r.host === '127.0.0.2'));
    assert.ok(hub.requests.every((r) => r.status >= 200));
    assert.ok(hub.requests.some((r) => r.range === 'bytes=10-19' && r.status === 206));
  });
});

describe('hub server: real huggingface_hub downloads from it', () => {
  let hub: HubServer;
  let tmp: string;
  let tiny: AddedCommit;
  let secret: AddedCommit;
  let ds: AddedCommit;
  let renamed: AddedCommit;
  const DS = { 'data/train.csv': Buffer.from('a,b\n1,2\n'), 'README.md': Buffer.from('---\nlicense: mit\n---\n') };

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'hub-server-py-'));
    // pageSize 2: Python must also walk the tree through Link pages.
    hub = await startHubServer({ tokens: [GOOD], pageSize: 2 });
    tiny = await hub.addRepo({ id: 'acme/tiny', files: tinyFiles() });
    secret = await hub.addRepo({ id: 'acme/secret', private: true, files: tinyFiles() });
    ds = await hub.addRepo({ id: 'acme/ds', type: 'dataset', files: Object.entries(DS).map(([path, data]) => ({ path, data })) });
    renamed = await hub.addRepo({ id: 'acme/old-name', files: tinyFiles() });
    hub.renameRepo('acme/old-name', 'acme/new-name');
    await hub.addRepo({ id: 'acme/gated', gated: true, files: tinyFiles() });
  });
  after(async () => {
    await hub.close();
    await rm(tmp, { recursive: true, force: true });
  });

  const env = (cache: string, extra: Record<string, string> = {}): Record<string, string | undefined> => ({
    HF_ENDPOINT: hub.endpoint,
    HF_HUB_CACHE: cache,
    HF_HUB_DISABLE_XET: '1',
    HF_HUB_DISABLE_TELEMETRY: '1',
    HF_TOKEN: undefined,
    ...extra,
  });

  async function python(code: string, environment: Record<string, string | undefined>): Promise<unknown> {
    const res = await runPython(code, environment);
    assert.equal(res.code, 0, `python failed (exit ${res.code}):\n${res.stderr}`);
    const last = res.stdout.trim().split('\n').pop() ?? '';
    return JSON.parse(last);
  }

  async function assertSnapshot(dir: string, expected: Record<string, Buffer>): Promise<void> {
    assert.deepEqual(await walk(dir), Object.keys(expected).sort());
    for (const [path, data] of Object.entries(expected)) assert.deepEqual(await readFile(join(dir, path)), data, path);
  }

  const since = (n: number) => hub.requests.slice(n);

  it('snapshot_download of a public repo: byte-identical files, refs/main, CDN hop without auth', async () => {
    const cache = join(tmp, 'public');
    const n = hub.requests.length;
    const out = (await python(
      `import json\nfrom huggingface_hub import snapshot_download\nprint(json.dumps(snapshot_download('acme/tiny', revision='main')))`,
      env(cache),
    )) as string;
    assert.equal(out, join(cache, 'models--acme--tiny', 'snapshots', tiny.commit));
    await assertSnapshot(out, TINY);
    assert.equal(await readFile(join(cache, 'models--acme--tiny', 'refs', 'main'), 'utf8'), tiny.commit);
    const blobs = (await readdir(join(cache, 'models--acme--tiny', 'blobs'))).sort();
    assert.deepEqual(blobs, tiny.files.map((f) => f.etag).sort());

    const reqs = since(n);
    const calls = reqs.map((r) => `${r.method} ${r.host === '127.0.0.2' ? 'CDN' : 'HUB'} ${r.url.replace(/\?.*$/, '')} ${r.status}`);
    // What Python asked, in protocol order: info at main, the tree at the commit (pages), then per file HEAD + GET.
    assert.equal(calls[0], 'GET HUB /api/models/acme/tiny/revision/main 200');
    const treePages = reqs.filter((r) => r.url.startsWith(`/api/models/acme/tiny/tree/${tiny.commit}`));
    assert.equal(treePages.length, 4); // 5 files + 3 directories, 2 per page
    assert.ok(treePages.every((r) => r.url.includes('recursive=true') && r.url.includes('expand=false')));
    for (const f of tiny.files) {
      const encoded = f.path.split('/').map(encodeURIComponent).join('/');
      const resolvePath = `/acme/tiny/resolve/${tiny.commit}/${encoded}`;
      assert.ok(calls.includes(`HEAD HUB ${resolvePath} ${f.lfs ? 302 : 307}`), `${f.path}: ${calls.join('\n')}`);
      if (f.lfs) {
        assert.ok(calls.includes(`GET CDN /lfs/${f.sha256} 200`), f.path);
      } else {
        const cachePath = `/api/resolve-cache/models/acme/tiny/${tiny.commit}/${encoded}`;
        assert.ok(calls.includes(`HEAD HUB ${cachePath} 200`), f.path);
        assert.ok(calls.includes(`GET HUB ${cachePath} 200`), f.path);
      }
    }
    assert.ok(reqs.every((r) => r.authorization === undefined));
    assert.ok(reqs.every((r) => r.status < 400), calls.join('\n'));
  });

  it('private repo with HF_TOKEN: the token goes to the Hub, never to the CDN host', async () => {
    const cache = join(tmp, 'private');
    const n = hub.requests.length;
    const out = (await python(
      `import json\nfrom huggingface_hub import snapshot_download\nprint(json.dumps(snapshot_download('acme/secret', revision='main')))`,
      env(cache, { HF_TOKEN: GOOD }),
    )) as string;
    await assertSnapshot(out, TINY);
    assert.equal(await readFile(join(cache, 'models--acme--secret', 'refs', 'main'), 'utf8'), secret.commit);
    const reqs = since(n);
    const cdn = reqs.filter((r) => r.host === '127.0.0.2');
    assert.ok(cdn.length >= 1 && cdn.every((r) => r.method === 'GET' && r.authorization === undefined && r.status === 200));
    const hubReqs = reqs.filter((r) => r.host === '127.0.0.1');
    assert.ok(hubReqs.every((r) => r.authorization === `Bearer ${GOOD}`));
    // ...and without the token the same download is refused as "not found".
    const refused = await runPython(
      `from huggingface_hub import snapshot_download\nfrom huggingface_hub.errors import RepositoryNotFoundError\ntry:\n    snapshot_download('acme/secret', revision='main')\nexcept RepositoryNotFoundError:\n    print('refused')`,
      env(join(tmp, 'private-anon')),
    );
    assert.equal(refused.stdout.trim(), 'refused', refused.stderr);
  });

  it('hf_hub_download of single files (LFS and nested git file)', async () => {
    const cache = join(tmp, 'single');
    const out = (await python(
      [
        'import json',
        'from huggingface_hub import hf_hub_download',
        "a = hf_hub_download('acme/tiny', 'model.safetensors')",
        "b = hf_hub_download('acme/tiny', 'sub/dir/vocab.txt', revision='main')",
        'print(json.dumps([a, b]))',
      ].join('\n'),
      env(cache),
    )) as string[];
    assert.deepEqual(await readFile(out[0] ?? ''), TINY['model.safetensors']);
    assert.deepEqual(await readFile(out[1] ?? ''), TINY['sub/dir/vocab.txt']);
    assert.equal(out[1], join(cache, 'models--acme--tiny', 'snapshots', tiny.commit, 'sub', 'dir', 'vocab.txt'));
    assert.equal(await readFile(join(cache, 'models--acme--tiny', 'refs', 'main'), 'utf8'), tiny.commit);
  });

  it('dataset repo and renamed repo', async () => {
    const cache = join(tmp, 'ds');
    const n = hub.requests.length;
    const out = (await python(
      [
        'import json',
        'from huggingface_hub import snapshot_download',
        "d = snapshot_download('acme/ds', repo_type='dataset', revision='main')",
        "r = snapshot_download('acme/old-name', revision='main')",
        'print(json.dumps([d, r]))',
      ].join('\n'),
      env(cache),
    )) as string[];
    assert.equal(out[0], join(cache, 'datasets--acme--ds', 'snapshots', ds.commit));
    await assertSnapshot(out[0] ?? '', DS);
    assert.equal(await readFile(join(cache, 'datasets--acme--ds', 'refs', 'main'), 'utf8'), ds.commit);
    // The consumer's spelling names the cache folder; every old-id request was answered by a 307.
    assert.equal(out[1], join(cache, 'models--acme--old-name', 'snapshots', renamed.commit));
    await assertSnapshot(out[1] ?? '', TINY);
    const reqs = since(n);
    assert.ok(reqs.some((r) => r.url.startsWith('/api/datasets/acme/ds/revision/main')));
    assert.ok(reqs.some((r) => r.url.startsWith('/datasets/acme/ds/resolve/')));
    const old = reqs.filter((r) => r.url.includes('/acme/old-name/'));
    assert.ok(old.length > 0 && old.every((r) => r.status === 307));
  });

  it('errors map to the right huggingface_hub exceptions', async () => {
    const out = (await python(
      [
        'import json',
        'from huggingface_hub import hf_hub_download, snapshot_download',
        'def kind(fn):',
        '    try:',
        '        fn()',
        "        return 'ok'",
        '    except Exception as e:',
        '        return type(e).__name__',
        'print(json.dumps({',
        "  'unknown': kind(lambda: hf_hub_download('acme/nope', 'config.json')),",
        "  'private': kind(lambda: hf_hub_download('acme/secret', 'config.json')),",
        "  'gated_anonymous': kind(lambda: hf_hub_download('acme/gated', 'config.json')),",
        `  'gated_no_access': kind(lambda: hf_hub_download('acme/gated', 'config.json', token='${GOOD}')),`,
        "  'revision': kind(lambda: hf_hub_download('acme/tiny', 'config.json', revision='nope')),",
        "  'snapshot_revision': kind(lambda: snapshot_download('acme/tiny', revision='nope')),",
        "  'entry': kind(lambda: hf_hub_download('acme/tiny', 'missing.txt')),",
        "  'bad_token': kind(lambda: hf_hub_download('acme/tiny', 'config.json', token='hf_wrong')),",
        '}))',
      ].join('\n'),
      env(join(tmp, 'errors')),
    )) as Record<string, string>;
    assert.deepEqual(out, {
      unknown: 'RepositoryNotFoundError',
      private: 'RepositoryNotFoundError',
      gated_anonymous: 'GatedRepoError',
      gated_no_access: 'GatedRepoError',
      revision: 'RevisionNotFoundError',
      snapshot_revision: 'RevisionNotFoundError',
      entry: 'RemoteEntryNotFoundError',
      bad_token: 'HfHubHTTPError',
    });
  });
});
