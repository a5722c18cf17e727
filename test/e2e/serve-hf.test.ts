/**
 * `airlock serve` with the REAL clients: models are exported from the test hub and imported by the real
 * CLI, then served by the real CLI, and huggingface_hub / transformers / curl talk to it through
 * HF_ENDPOINT exactly as they would to the Hub. Every served byte is compared with the original.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { access, mkdir, mkdtemp, open, readFile, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startHubServer, type AddedCommit, type HubServer } from '../support/hub-server.ts';
import { run, runAirlock } from '../support/cli.ts';
import { runPython } from '../support/python.ts';
import { sampleModelFiles } from '../support/sample-model.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';
import { startServe, type ServeProcess } from '../support/serve-process.ts';

let hub: HubServer;
let dir: string;
let cache: string;
let keys: string;
let serve: ServeProcess;
let tiny: AddedCommit;
let gpt2: AddedCommit;
let ds: AddedCommit;
let flip: AddedCommit;
const original = new Map<string, Buffer>();
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function exportImport(name: string, repos: string[], extra: string[] = []): Promise<string> {
  const bundle = join(dir, `${name}.airlock.tar`);
  const exp = await runAirlock(['export', ...repos, '--sign-key', join(keys, 'signer.key.asc'), '-o', bundle, ...extra], { env: { HF_ENDPOINT: hub.endpoint } });
  assert.equal(exp.code, 0, exp.stderr);
  const imp = await runAirlock(['import', bundle, '--trusted-keys', join(keys, 'signer.pub.asc')], { env: { HF_HUB_CACHE: cache } });
  assert.equal(imp.code, 0, imp.stderr);
  return bundle;
}

function curl(args: string[]): ReturnType<typeof run> {
  return run('curl', ['-sS', '--noproxy', '*', ...args]);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-serve-'));
  cache = join(dir, 'hub');
  keys = join(dir, 'keys');
  hub = await startHubServer();
  const files = sampleModelFiles();
  for (const f of files) original.set(`acme/tiny-llm/${f.path}`, f.data);
  tiny = await hub.addRepo({ id: 'acme/tiny-llm', files, tags: ['v1.0'] });
  const gptFiles = [
    { path: 'config.json', data: Buffer.from('{"model_type": "gpt2"}\n') },
    { path: 'empty.txt', data: Buffer.alloc(0) },
    { path: 'deep/er/vocab.txt', data: Buffer.from('hello\nworld\n') },
  ];
  for (const f of gptFiles) original.set(`gpt2/${f.path}`, f.data);
  gpt2 = await hub.addRepo({ id: 'gpt2', files: gptFiles });
  const dsFiles = [
    { path: 'README.md', data: Buffer.from('# a dataset\n') },
    { path: 'data/train.jsonl', data: Buffer.from('{"text": "a"}\n{"text": "b"}\n') },
    { path: 'data/test.jsonl', data: Buffer.from('{"text": "c"}\n') },
  ];
  for (const f of dsFiles) original.set(`datasets/acme/ds/${f.path}`, f.data);
  ds = await hub.addRepo({ id: 'acme/ds', type: 'dataset', files: dsFiles });
  const flipData = safetensorsOf(randomBytes(3 * 1024 * 1024 + 17));
  original.set('acme/flip/model.safetensors', flipData);
  flip = await hub.addRepo({ id: 'acme/flip', files: [{ path: 'model.safetensors', data: flipData }] });

  assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'ML Platform <mlops@example.org>', '--out-dir', keys])).code, 0);
  await exportImport('main', ['acme/tiny-llm', 'gpt2', 'datasets/acme/ds', 'acme/flip']);
  await exportImport('tag', ['acme/tiny-llm@v1.0']);
  serve = await startServe(['--cache-dir', cache, '--tree-page-size', '3']);
});

after(async () => {
  await serve?.stop();
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('huggingface_hub against airlock serve', () => {
  test('snapshot_download, hf_hub_download by branch/tag/commit, info, refs, paths-info, safetensors metadata, misses', { timeout: 300_000 }, async () => {
    const client = join(dir, 'client-cache');
    const py = await runPython(
      `
import json, os, hashlib
from huggingface_hub import (snapshot_download, hf_hub_download, model_info, dataset_info, list_repo_files, list_repo_refs,
    get_paths_info, get_safetensors_metadata, file_exists, list_repo_tree, HfApi)
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
def digest_tree(root):
    out = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, 'rb').read()).hexdigest()
    return out
r = {}
snap = snapshot_download("acme/tiny-llm")
r["model"] = digest_tree(snap)
r["model_dir"] = snap
r["dataset"] = digest_tree(snapshot_download("acme/ds", repo_type="dataset"))
r["allow"] = sorted(digest_tree(snapshot_download("acme/tiny-llm", allow_patterns=["*.json"], local_dir=${JSON.stringify(join(dir, 'allow'))})).keys())
r["by_branch"] = hf_hub_download("acme/tiny-llm", "config.json", revision="main")
r["by_tag"] = hf_hub_download("acme/tiny-llm", "config.json", revision="v1.0")
r["by_commit"] = hf_hub_download("acme/tiny-llm", "model.safetensors", revision=${JSON.stringify(tiny.commit)})
r["gpt2"] = digest_tree(snapshot_download("gpt2"))
info = model_info("acme/tiny-llm", files_metadata=True)
r["info"] = {"id": info.id, "sha": info.sha, "siblings": sorted((s.rfilename, s.size, s.lfs.sha256 if s.lfs else None) for s in info.siblings)}
r["dinfo"] = dataset_info("acme/ds").sha
r["files"] = sorted(list_repo_files("acme/tiny-llm"))
refs = list_repo_refs("acme/tiny-llm")
r["refs"] = sorted((b.name, b.target_commit) for b in refs.branches)
r["paths"] = sorted((p.path, type(p).__name__) for p in get_paths_info("gpt2", ["config.json", "deep", "nope.txt"]))
r["tree"] = sorted((e.path, type(e).__name__) for e in list_repo_tree("gpt2", recursive=True))
r["tree_expand"] = [e.last_commit.oid if e.last_commit else None for e in list_repo_tree("gpt2", recursive=True, expand=True) if type(e).__name__ == "RepoFile"]
meta = get_safetensors_metadata("acme/tiny-llm")
r["st"] = sorted(meta.files_metadata["model.safetensors"].tensors.keys())[:3]
r["exists"] = [file_exists("acme/tiny-llm", "config.json"), file_exists("acme/tiny-llm", "nope.json")]
try:
    hf_hub_download("acme/tiny-llm", "missing.json")
    r["missing"] = "no error"
except EntryNotFoundError as e:
    r["missing"] = type(e).__name__
r["no_exist"] = os.path.exists(os.path.join(os.environ["HF_HUB_CACHE"], "models--acme--tiny-llm", ".no_exist", ${JSON.stringify(tiny.commit)}, "missing.json"))
try:
    model_info("acme/nothing-here")
    r["norepo"] = "no error"
except RepositoryNotFoundError as e:
    r["norepo"] = type(e).__name__
try:
    hf_hub_download("acme/tiny-llm", "config.json", revision="no-such-branch")
    r["norev"] = "no error"
except RevisionNotFoundError as e:
    r["norev"] = type(e).__name__
# HfFileSystem, what the datasets library reads through: ls, glob, info, ranged reads
from huggingface_hub import HfFileSystem
fs = HfFileSystem()
r["fs_ls"] = sorted(fs.ls("datasets/acme/ds/data", detail=False))
r["fs_glob"] = sorted(fs.glob("datasets/acme/ds/**/*.jsonl"))
r["fs_size"] = fs.info("datasets/acme/ds/data/train.jsonl")["size"]
with fs.open("datasets/acme/ds/data/train.jsonl", "rb") as f:
    f.seek(3)
    r["fs_read"] = f.read(4).decode()
print(json.dumps(r))
`,
      { HF_ENDPOINT: serve.url, HF_HUB_CACHE: client, HF_HUB_DISABLE_XET: '1' },
      { timeoutMs: 240_000 },
    );
    assert.equal(py.code, 0, py.stderr);
    const r = JSON.parse(py.stdout.trim().split('\n').pop()!);
    const expectTree = (prefix: string) =>
      Object.fromEntries([...original].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), sha256(v)]));
    assert.deepEqual(r.model, expectTree('acme/tiny-llm/'));
    assert.equal(r.model_dir, join(client, 'models--acme--tiny-llm', 'snapshots', tiny.commit));
    assert.deepEqual(r.dataset, expectTree('datasets/acme/ds/'));
    assert.deepEqual(r.gpt2, expectTree('gpt2/'));
    assert.deepEqual(r.allow.filter((p: string) => !p.startsWith('.cache')), Object.keys(expectTree('acme/tiny-llm/')).filter((p) => p.endsWith('.json')).sort());
    for (const key of ['by_branch', 'by_tag']) assert.equal(r[key], join(client, 'models--acme--tiny-llm', 'snapshots', tiny.commit, 'config.json'));
    assert.equal(sha256(await readFile(r.by_commit)), sha256(original.get('acme/tiny-llm/model.safetensors')!));
    assert.equal(r.info.id, 'acme/tiny-llm');
    assert.equal(r.info.sha, tiny.commit);
    const st = tiny.files.find((f) => f.path === 'model.safetensors')!;
    assert.deepEqual(
      r.info.siblings.find((s: [string]) => s[0] === 'model.safetensors'),
      ['model.safetensors', st.size, st.sha256],
    );
    assert.equal(r.dinfo, ds.commit);
    assert.deepEqual(r.files, tiny.files.map((f) => f.path).sort());
    assert.deepEqual(r.refs, [['main', tiny.commit], ['v1.0', tiny.commit]]);
    assert.deepEqual(r.paths, [['config.json', 'RepoFile'], ['deep', 'RepoFolder']]);
    // page size 3 on the server: the client followed the Link pages to get all 5 entries
    assert.deepEqual(r.tree, [['config.json', 'RepoFile'], ['deep', 'RepoFolder'], ['deep/er', 'RepoFolder'], ['deep/er/vocab.txt', 'RepoFile'], ['empty.txt', 'RepoFile']]);
    assert.deepEqual(r.tree_expand, [gpt2.commit, gpt2.commit, gpt2.commit]);
    assert.equal(r.st.length, 3);
    assert.deepEqual(r.exists, [true, false]);
    assert.equal(r.missing, 'RemoteEntryNotFoundError');
    assert.equal(r.no_exist, true);
    assert.equal(r.norepo, 'RepositoryNotFoundError');
    assert.equal(r.norev, 'RevisionNotFoundError');
    assert.deepEqual(r.fs_ls, ['datasets/acme/ds/data/test.jsonl', 'datasets/acme/ds/data/train.jsonl']);
    assert.deepEqual(r.fs_glob, ['datasets/acme/ds/data/test.jsonl', 'datasets/acme/ds/data/train.jsonl']);
    const train = original.get('datasets/acme/ds/data/train.jsonl')!;
    assert.equal(r.fs_size, train.length);
    assert.equal(r.fs_read, train.subarray(3, 7).toString());
    // nothing Xet, ever
    const head = await curl(['-I', `${serve.url}/acme/tiny-llm/resolve/main/model.safetensors`]);
    assert.doesNotMatch(head.stdout, /xet/i);
    assert.match(head.stdout, new RegExp(`x-linked-etag: "${st.sha256}"`, 'i'));
    assert.match(head.stdout, new RegExp(`x-repo-commit: ${tiny.commit}`, 'i'));
    assert.match(head.stdout, /accept-ranges: bytes/i);
  });

  test('transformers from_pretrained through HF_ENDPOINT gives the same logits as a local load', { timeout: 300_000 }, async () => {
    const local = join(dir, 'local-model');
    for (const [key, data] of original) {
      if (!key.startsWith('acme/tiny-llm/')) continue;
      const path = join(local, key.slice('acme/tiny-llm/'.length));
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, data);
    }
    const py = await runPython(
      `
import json, torch
from transformers import AutoTokenizer, AutoModelForCausalLM
def logits(src):
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        return model(**tok("hello world the model", return_tensors="pt")).logits
a = logits("acme/tiny-llm")
b = logits(${JSON.stringify(local)})
print(json.dumps({"equal": bool(torch.equal(a, b)), "shape": list(a.shape)}))
`,
      { HF_ENDPOINT: serve.url, HF_HUB_CACHE: join(dir, 'tf-cache'), HF_HUB_DISABLE_XET: '1' },
      { timeoutMs: 240_000 },
    );
    assert.equal(py.code, 0, py.stderr);
    const r = JSON.parse(py.stdout.trim().split('\n').pop()!);
    assert.equal(r.equal, true);
    assert.equal(r.shape[0], 1);
  });
});

describe('curl, as llama.cpp and hf-hub do it', () => {
  test('refs → recursive tree → Range bytes=0-0 metadata → resolve, with 206 and every header', async () => {
    const refs = JSON.parse((await curl([`${serve.url}/api/models/acme/tiny-llm/refs`])).stdout);
    const main = refs.branches.find((b: { name: string }) => b.name === 'main');
    assert.equal(main.targetCommit, tiny.commit);
    // llama.cpp does not follow pagination: with the Hub's page size it gets everything (this server: 3 per page → Link)
    const tree = await curl(['-D', '-', `${serve.url}/api/models/acme/tiny-llm/tree/${tiny.commit}?recursive=True`]);
    assert.match(tree.stdout, /^link: <http:\/\/127\.0\.0\.1:\d+\/api\/models\/acme\/tiny-llm\/tree\/[0-9a-f]{40}\?recursive=True&cursor=[^>]+>; rel="next"/im);
    const st = tiny.files.find((f) => f.path === 'model.safetensors')!;
    const meta = await curl(['-D', '-', '-o', '/dev/null', '-H', 'Range: bytes=0-0', `${serve.url}/acme/tiny-llm/resolve/${main.targetCommit}/model.safetensors`]);
    assert.match(meta.stdout, /^HTTP\/1\.1 206/);
    assert.match(meta.stdout, new RegExp(`content-range: bytes 0-0/${st.size}`, 'i'));
    assert.match(meta.stdout, new RegExp(`etag: "${st.sha256}"`, 'i'));
    assert.doesNotMatch(meta.stdout, /content-encoding|location:/i);
    const out = join(dir, 'curl-model.safetensors');
    const get = await curl(['-f', '-o', out, `${serve.url}/acme/tiny-llm/resolve/${main.targetCommit}/model.safetensors`]);
    assert.equal(get.code, 0, get.stderr);
    assert.equal(sha256(await readFile(out)), st.sha256);
    // a resume from the middle is a 206 that completes the file
    const resumed = await curl(['-f', '-H', `Range: bytes=${st.size - 1000}-`, '-o', `${out}.tail`, `${serve.url}/acme/tiny-llm/resolve/main/model.safetensors`]);
    assert.equal(resumed.code, 0);
    assert.deepEqual(await readFile(`${out}.tail`), original.get('acme/tiny-llm/model.safetensors')!.subarray(st.size - 1000));
    // a git file's ETag is its git blob sha1; an empty file is served as one
    const cfg = tiny.files.find((f) => f.path === 'config.json')!;
    assert.match((await curl(['-I', `${serve.url}/acme/tiny-llm/resolve/main/config.json`])).stdout, new RegExp(`etag: "${cfg.blobId}"`, 'i'));
    const empty = await curl(['-D', '-', `${serve.url}/gpt2/resolve/main/empty.txt`]);
    assert.match(empty.stdout, /^HTTP\/1\.1 200/);
    assert.match(empty.stdout, /content-length: 0/i);
    const unsat = await curl(['-D', '-', '-o', '/dev/null', '-H', `Range: bytes=${st.size}-`, `${serve.url}/acme/tiny-llm/resolve/main/model.safetensors`]);
    assert.match(unsat.stdout, /^HTTP\/1\.1 416/);
  });
});

describe('hostile requests', () => {
  const raw = (path: string, method = 'GET', headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, unknown>; body: string }> =>
    new Promise((resolve, reject) => {
      const url = new URL(serve.url);
      const req = request({ host: url.hostname, port: url.port, path, method, headers }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
      req.on('error', reject);
      req.end();
    });

  test('traversal in any encoding, encoded slashes and links out of the cache are never served', async () => {
    for (const path of [
      '/acme/tiny-llm/resolve/main/../../../../etc/passwd',
      '/acme/tiny-llm/resolve/main/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
      '/acme/tiny-llm/resolve/main/..%2f..%2f..%2fetc%2fpasswd',
      '/acme/tiny-llm/resolve/main/sub%5c..%5c..%5cconfig.json',
      '/acme/tiny-llm/resolve/main/%252e%252e/config.json',
      '/acme%2ftiny-llm/resolve/main/config.json',
      '/..%2f..%2fetc/resolve/main/passwd',
      '/api/models/acme/tiny-llm/tree/main/..%2F..%2F..',
      '/api/models/..%2F..%2F/revision/main',
      '/acme/tiny-llm/resolve/..%2F..%2F..%2Fetc/config.json',
      '/acme--tiny-llm/resolve/main/config.json',
      '/api/models/acme--tiny-llm',
    ]) {
      const res = await raw(path);
      assert.ok(res.status === 400 || res.status === 404, `${path} → ${res.status}`);
      assert.doesNotMatch(res.body, /root:/);
    }
    // a hand-made repo whose blob is a link to a file outside the cache, made visible by a ref
    const evil = join(cache, 'models--evil--repo');
    const commit = 'e'.repeat(40);
    const etag = 'a'.repeat(40);
    await mkdir(join(evil, 'snapshots', commit), { recursive: true });
    await mkdir(join(evil, 'blobs'), { recursive: true });
    await mkdir(join(evil, 'refs'), { recursive: true });
    const secret = join(dir, 'secret.txt');
    await writeFile(secret, 'top secret\n');
    await symlink(secret, join(evil, 'blobs', etag));
    await symlink(`../../blobs/${etag}`, join(evil, 'snapshots', commit, 'secret.txt'));
    await symlink('/etc/passwd', join(evil, 'snapshots', commit, 'passwd'));
    await writeFile(join(evil, 'refs', 'main'), commit);
    const leak = await raw('/evil/repo/resolve/main/secret.txt');
    assert.equal(leak.status, 403);
    assert.doesNotMatch(leak.body, /top secret/);
    const passwd = await raw('/evil/repo/resolve/main/passwd');
    assert.equal(passwd.status, 404);
    assert.equal(passwd.headers['x-error-code'], 'EntryNotFound');
    await rm(evil, { recursive: true });
  });

  test('read-only: other methods → 405; huge headers → 431; a huge body → 413; the server stays up', async () => {
    for (const method of ['PUT', 'DELETE', 'PATCH', 'OPTIONS']) {
      assert.equal((await raw('/acme/tiny-llm/resolve/main/config.json', method)).status, 405, method);
    }
    assert.equal((await raw('/acme/tiny-llm/resolve/main/config.json', 'POST')).status, 405);
    assert.equal((await raw('/acme/tiny-llm/resolve/main/config.json', 'GET', { 'X-Big': 'x'.repeat(64 * 1024) })).status, 431);
    const big = await new Promise<number>((resolve, reject) => {
      const url = new URL(serve.url);
      const req = request({ host: url.hostname, port: url.port, path: '/api/models/gpt2/paths-info/main', method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end(Buffer.alloc(2 * 1024 * 1024, 0x61));
    });
    assert.equal(big, 413);
    // a client that sends half a request line and then nothing does not block anyone else
    const lazy = connect(Number(new URL(serve.url).port), '127.0.0.1');
    await new Promise((r) => lazy.once('connect', r));
    lazy.write('GET /acme/tiny-llm/resolve/main/config.json HTTP/1.1\r\nHost: x\r\n');
    assert.equal((await raw('/acme/tiny-llm/resolve/main/config.json')).status, 200);
    lazy.destroy();
  });

  test('a flipped bit: the client gets a short read and fails, it is logged, the blob is refused until re-imported', { timeout: 180_000 }, async () => {
    const folder = join(cache, 'models--acme--flip', 'snapshots', flip.commit, 'model.safetensors');
    const blob = join(dirname(folder), await readlink(folder));
    const handle = await open(blob, 'r+');
    const one = Buffer.alloc(1);
    await handle.read(one, 0, 1, 2_000_000);
    one[0] = one[0]! ^ 0x01;
    await handle.write(one, 0, 1, 2_000_000);
    await handle.close();

    const out = join(dir, 'flipped.bin');
    const got = await curl(['-o', out, `${serve.url}/acme/flip/resolve/main/model.safetensors`]);
    assert.equal(got.code, 18, `curl must see a short transfer, got ${got.code}: ${got.stderr}`); // CURLE_PARTIAL_FILE
    const st = flip.files[0]!;
    assert.ok((await readFile(out)).length < st.size);
    await serve.waitForAccess((l) => l['path'] === '/acme/flip/resolve/main/model.safetensors' && typeof l['error'] === 'string');
    assert.match(serve.stderr(), /"event":"integrity-failure".*acme\/flip/);
    // now refused outright, also for huggingface_hub
    const head = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', '-I', `${serve.url}/acme/flip/resolve/main/model.safetensors`]);
    assert.equal(head.stdout, '422');
    const py = await runPython(
      `
from huggingface_hub import hf_hub_download
try:
    hf_hub_download("acme/flip", "model.safetensors")
    print("DOWNLOADED")
except Exception as e:
    print("FAILED", type(e).__name__)
`,
      { HF_ENDPOINT: serve.url, HF_HUB_CACHE: join(dir, 'flip-client'), HF_HUB_DISABLE_XET: '1', HF_HUB_ETAG_TIMEOUT: '5', HF_HUB_DOWNLOAD_TIMEOUT: '5' },
      { timeoutMs: 120_000 },
    );
    assert.match(py.stdout, /^FAILED/m, py.stdout + py.stderr);
    // re-import the bundle: the damaged blob is replaced (new inode) and served again, verified
    const imp = await runAirlock(['import', join(dir, 'main.airlock.tar'), '--trusted-keys', join(keys, 'signer.pub.asc')], { env: { HF_HUB_CACHE: cache } });
    assert.equal(imp.code, 0, imp.stderr);
    const again = await curl(['-f', '-o', out, `${serve.url}/acme/flip/resolve/main/model.safetensors`]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(sha256(await readFile(out)), st.sha256);
  });
});

describe('operations', () => {
  test('50 clients at once all get correct files', { timeout: 180_000 }, async () => {
    const st = tiny.files.find((f) => f.path === 'model.safetensors')!;
    const results = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const path = i % 2 === 0 ? 'model.safetensors' : 'tokenizer.json';
        const res = await fetch(`${serve.url}/acme/tiny-llm/resolve/main/${path}`);
        return { path, status: res.status, hash: sha256(Buffer.from(await res.arrayBuffer())) };
      }),
    );
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.equal(r.hash, r.path === 'model.safetensors' ? st.sha256 : sha256(original.get('acme/tiny-llm/tokenizer.json')!));
    }
  });

  test('an import while serving shows up without a restart', { timeout: 180_000 }, async () => {
    const before = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code}', `${serve.url}/api/models/acme/late`]);
    assert.equal(before.stdout, '404');
    await hub.addRepo({ id: 'acme/late', files: [{ path: 'config.json', data: '{"late": true}\n' }] });
    await exportImport('late', ['acme/late']);
    const after = await curl(['-f', `${serve.url}/acme/late/resolve/main/config.json`]);
    assert.equal(after.stdout, '{"late": true}\n');
  });

  test('one JSON access-log line per request with client, repo, revision, file, bytes, status', async () => {
    const line = await serve.waitForAccess((l) => l['file'] === 'model.safetensors' && l['status'] === 200 && l['method'] === 'GET' && l['repo'] === 'acme/tiny-llm');
    for (const key of ['time', 'client', 'repo', 'revision', 'file', 'bytes', 'status']) assert.ok(key in line, key);
    assert.equal(line['bytes'], tiny.files.find((f) => f.path === 'model.safetensors')!.size);
    // JSON answers count their bytes too (the audit trail shows what every request carried away)
    const before = serve.access.length;
    const after = (l: Record<string, unknown>): boolean => serve.access.indexOf(l) >= before;
    const info = await curl(['-f', '-o', '/dev/null', '-w', '%{size_download}', `${serve.url}/api/models/acme/tiny-llm/revision/main`]);
    const api = await serve.waitForAccess((l) => after(l) && l['path'] === '/api/models/acme/tiny-llm/revision/main');
    assert.equal(api['status'], 200);
    assert.ok(Number(info.stdout) > 0);
    assert.equal(api['bytes'], Number(info.stdout));
    const missing = await curl(['-o', '/dev/null', '-w', '%{size_download}', `${serve.url}/acme/tiny-llm/resolve/main/no-such-file.bin`]);
    const notFound = await serve.waitForAccess((l) => after(l) && l['path'] === '/acme/tiny-llm/resolve/main/no-such-file.bin');
    assert.equal(notFound['status'], 404);
    assert.equal(notFound['bytes'], Number(missing.stdout));
  });

  test('bearer tokens and TLS: 401 without a token, the token never logged, https with the PEM files', { timeout: 180_000 }, async () => {
    const tokenFile = join(dir, 'tokens');
    const token = `hf_${randomBytes(12).toString('hex')}`;
    await writeFile(tokenFile, `# readers\n${token}\n`);
    const key = join(dir, 'tls.key');
    const cert = join(dir, 'tls.crt');
    const r = await run('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
      '-days', '2', '-subj', '/CN=airlock serve test', '-addext', 'subjectAltName=IP:127.0.0.1',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const secure = await startServe(['--cache-dir', cache, '--token-file', tokenFile, '--tls-cert', cert, '--tls-key', key]);
    try {
      assert.match(secure.url, /^https:\/\/127\.0\.0\.1:\d+$/);
      const url = `${secure.url}/acme/tiny-llm/resolve/main/config.json`;
      assert.equal((await curl(['--cacert', cert, '-o', '/dev/null', '-w', '%{http_code}', url])).stdout, '401');
      assert.equal((await curl(['--cacert', cert, '-o', '/dev/null', '-w', '%{http_code}', '-H', 'Authorization: Bearer wrong', url])).stdout, '401');
      const ok = await curl(['--cacert', cert, '-f', '-H', `Authorization: Bearer ${token}`, url]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.deepEqual(Buffer.from(ok.stdout), original.get('acme/tiny-llm/config.json'));
      const py = await runPython(
        `
import sys
from huggingface_hub import hf_hub_download
sys.stdout.write(open(hf_hub_download("acme/tiny-llm", "config.json"), "rb").read().decode())
`,
        { HF_ENDPOINT: secure.url, HF_TOKEN: token, HF_HUB_CACHE: join(dir, 'tls-client'), SSL_CERT_FILE: cert, HF_HUB_DISABLE_XET: '1' },
      );
      assert.equal(py.code, 0, py.stderr);
      assert.equal(py.stdout, original.get('acme/tiny-llm/config.json')!.toString());
      await secure.waitForAccess((l) => l['status'] === 200 && l['method'] === 'GET');
    } finally {
      assert.equal(await secure.stop(), 0);
    }
    assert.ok(!secure.stdout().includes(token) && !secure.stderr().includes(token), 'the token must never be logged');
    assert.ok(secure.access.some((l) => l['status'] === 401));
  });

  test('SIGTERM stops the server cleanly, also with several worker processes', async () => {
    const other = await startServe(['--cache-dir', cache, '--workers', '2']);
    for (let i = 0; i < 4; i++) {
      const got = await curl(['-f', `${other.url}/gpt2/resolve/main/deep/er/vocab.txt`]);
      assert.equal(got.stdout, 'hello\nworld\n');
    }
    assert.equal(await other.stop(), 0);
    await assert.rejects(access(join(cache, 'CACHEDIR.TAG')));
    assert.deepEqual((await readdir(cache)).filter((n) => !n.startsWith('models--') && !n.startsWith('datasets--') && n !== '.locks'), []);
  });
});
