/**
 * The modelscope cache writer: root resolution, the `.msc` / `.mdl` / `.mv` bytes decoded byte for byte
 * against spec modelscope.md §3.3 (and loaded by the real CPython `pickle` of the project venv, since
 * the `modelscope` library itself cannot be installed here), and the atomic, symlink-safe commit.
 */
import { walkRecipe } from '../support/modelscope-recipe.ts';
import * as assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ManifestRepo } from '../../src/bundle/manifest.js';
import {
  commitToModelScopeCache,
  decodeModelScopePickle,
  encodeMdl,
  encodeMsc,
  encodeMv,
  findExistingModelScopeFile,
  maskModelScopeName,
  parseMsc,
  resolveModelScopeCacheDir,
  type ModelScopeCommitRepo,
} from '../../src/cache/modelscope.js';
import { isAirlockError } from '../../src/errors.js';
import { createStaging, type Staging } from '../../src/fs/staging.js';
import { runPython } from '../support/python.js';
import { snapshotTree, formatTree } from '../support/cache-snapshot.js';

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const C1 = 'a'.repeat(40);
const C2 = 'b'.repeat(40);
const COMMIT = 'c'.repeat(40);

describe('modelscope metadata bytes', () => {
  it('resolves the cache root: flag > MODELSCOPE_CACHE > ~/.cache/modelscope/hub', () => {
    assert.equal(resolveModelScopeCacheDir(undefined, {}, '/home/u'), '/home/u/.cache/modelscope/hub');
    assert.equal(resolveModelScopeCacheDir(undefined, { MODELSCOPE_CACHE: '~/ms' }, '/home/u'), '/home/u/ms');
    assert.equal(resolveModelScopeCacheDir('/x/y/', { MODELSCOPE_CACHE: '/ms' }, '/home/u'), '/x/y');
    assert.equal(resolveModelScopeCacheDir(undefined, { MODELSCOPE_CACHE: '' }, '/home/u'), '/home/u/.cache/modelscope/hub');
  });

  it('masks only the name', () => {
    assert.equal(maskModelScopeName('Qwen2.5-0.5B-Instruct'), 'Qwen2___5-0___5B-Instruct');
  });

  it('writes the .mdl of the spec example exactly (48 bytes)', () => {
    // the spec's hex dump, verbatim
    const expected = Buffer.from(
      [
        '80 02 7d 28 58 02 00 00 00 69 64 58 1e 00 00 00',
        '51 77 65 6e 2f 51 77 65 6e 32 5f 5f 5f 35 2d 30',
        '5f 5f 5f 35 42 2d 49 6e 73 74 72 75 63 74 75 2e',
      ].join(' ').replace(/ /g, ''),
      'hex',
    );
    const got = encodeMdl('Qwen/Qwen2___5-0___5B-Instruct');
    assert.equal(got.length, 48);
    assert.equal(got.toString('hex'), expected.toString('hex'));
    assert.deepEqual(walkRecipe(got, 'mdl'), [['id', 'Qwen/Qwen2___5-0___5B-Instruct']]);
  });

  it('writes the .msc by the recipe, lengths in UTF-8 bytes', () => {
    const got = encodeMsc([
      { path: 'config.json', revision: C1 },
      { path: 'sub/naïve 文件.txt', revision: C2 },
    ]);
    assert.deepEqual(walkRecipe(got, 'msc'), [
      ['Path', 'config.json', 'Revision', C1],
      ['Path', 'sub/naïve 文件.txt', 'Revision', C2],
    ]);
    assert.throws(() => encodeMsc([]), (e) => isAirlockError(e, 'E_INTERNAL'));
  });

  it('writes .mv without a newline', () => {
    assert.equal(encodeMv('model', 'master', 1726842501), 'Revision:master,CreatedAt:1726842501');
    assert.equal(encodeMv('dataset', 'master', undefined), 'master');
    assert.equal(encodeMv('model', 'master', undefined), undefined);
  });

  it('is what CPython pickle loads, and reads what CPython pickle writes (protocols 2–5)', async () => {
    const msc = encodeMsc([{ path: 'a.txt', revision: C1 }, { path: 'sub/é.bin', revision: C2 }]);
    const mdl = encodeMdl('Qwen/Qwen2___5-Tiny');
    const code = `
import pickle, pickletools, sys, json, io
msc = bytes.fromhex(sys.argv[1] if len(sys.argv) > 1 else ${JSON.stringify(msc.toString('hex'))})
mdl = bytes.fromhex(${JSON.stringify(mdl.toString('hex'))})
ops = sorted({op.name for op, _, _ in pickletools.genops(msc)} | {op.name for op, _, _ in pickletools.genops(mdl)})
entries = [{'Path': 'x' * i, 'Revision': 'r%d' % i} for i in range(1, 4)] + [{'Path': 'ü/文件', 'Revision': '${C1}'}]
written = {p: pickle.dumps(entries, protocol=p).hex() for p in (2, 3, 4, 5)}
written['mdl4'] = pickle.dumps({'id': 'Qwen/Qwen2___5-Tiny'}, protocol=4).hex()
print(json.dumps({'msc': pickle.loads(msc), 'mdl': pickle.loads(mdl), 'ops': ops, 'written': written}))
`;
    const result = await runPython(code, {});
    assert.equal(result.code, 0, result.stderr);
    const out = JSON.parse(result.stdout) as { msc: unknown; mdl: unknown; ops: string[]; written: Record<string, string> };
    assert.deepEqual(out.msc, [{ Path: 'a.txt', Revision: C1 }, { Path: 'sub/é.bin', Revision: C2 }]);
    assert.deepEqual(out.mdl, { id: 'Qwen/Qwen2___5-Tiny' });
    assert.deepEqual(out.ops, ['APPENDS', 'BINUNICODE', 'EMPTY_DICT', 'EMPTY_LIST', 'MARK', 'PROTO', 'SETITEMS', 'STOP']);
    const entries = [1, 2, 3].map((i) => ({ Path: 'x'.repeat(i), Revision: `r${i}` })).concat([{ Path: 'ü/文件', Revision: C1 }]);
    for (const p of ['2', '3', '4', '5']) {
      assert.deepEqual(decodeModelScopePickle(Buffer.from(out.written[p]!, 'hex')), entries, `protocol ${p}`);
      assert.deepEqual(parseMsc(Buffer.from(out.written[p]!, 'hex')), entries.map((e) => ({ path: e.Path, revision: e.Revision })));
    }
    assert.deepEqual(decodeModelScopePickle(Buffer.from(out.written['mdl4']!, 'hex')), { id: 'Qwen/Qwen2___5-Tiny' });
  });

  it('refuses pickles with other opcodes (nothing executes)', () => {
    // cos\nsystem\n… : GLOBAL
    assert.throws(() => decodeModelScopePickle(Buffer.from('80026373797374656d0a', 'hex')), (e) => isAirlockError(e, 'E_CACHE_CONFLICT'));
    assert.equal(parseMsc(Buffer.from('garbage')), undefined);
    assert.equal(parseMsc(encodeMdl('a/b')), undefined, 'a dict is not an index');
  });
});

describe('commitToModelScopeCache', () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'airlock-ms-cache-'));
  });
  after(async () => {
    if (work !== undefined) await rm(work, { recursive: true, force: true });
  });

  const FILES: Record<string, Buffer> = {
    'config.json': Buffer.from('{"model_type":"qwen2"}\n'),
    'configuration.json': Buffer.from('{"framework":"pytorch"}\n'),
    'sub/dir/vocab.txt': Buffer.from('a\nb\n'),
    'copy-of-vocab.txt': Buffer.from('a\nb\n'),
    'model.safetensors': randomBytes(100_000),
  };

  function manifestRepo(id: string, files: Record<string, Buffer>, lastCommits: Record<string, string> = {}): ManifestRepo {
    return {
      type: 'model',
      id,
      revision: 'master',
      commit: COMMIT,
      source: { kind: 'modelscope', endpoint: 'https://www.modelscope.cn', createdAt: 1726842501 },
      files: Object.entries(files).map(([path, data]) => ({
        path,
        size: data.length,
        sha256: sha256(data),
        etag: sha256(data),
        blobId: 'd'.repeat(40),
        lfs: true,
        ...(lastCommits[path] !== undefined ? { lastCommit: lastCommits[path] } : {}),
      })),
    };
  }

  /** Stages every file (one staged blob per distinct content, like StagingSink) and commits. */
  async function commit(cacheDir: string, repos: Array<{ repo: ManifestRepo; data: Record<string, Buffer>; extra?: Partial<ModelScopeCommitRepo> }>) {
    const staging: Staging = await createStaging(cacheDir);
    try {
      const inputs: ModelScopeCommitRepo[] = [];
      for (const { repo, data, extra } of repos) {
        const byEtag = new Map<string, string>();
        const files = [];
        for (const file of repo.files) {
          let path = byEtag.get(file.etag);
          if (path === undefined) {
            path = staging.path('blob');
            await writeFile(path, data[file.path]!);
            byEtag.set(file.etag, path);
          }
          files.push({ file, source: { kind: 'staged' as const, path } });
        }
        inputs.push({ repo, files, ...extra });
      }
      return await commitToModelScopeCache({ cacheDir, repos: inputs, tempPath: (l) => staging.path(l), asideDir: staging.dir });
    } finally {
      await staging.cleanup();
    }
  }

  it('writes files, .mdl, .mv and .msc (per-file commits) under models/<owner>/<masked name>', async () => {
    const cache = join(work, 'c1');
    const repo = manifestRepo('Qwen/Qwen2.5-Tiny', FILES, { 'config.json': C1, 'sub/dir/vocab.txt': C2 });
    const [outcome] = await commit(cache, [{ repo, data: FILES }]);
    const folder = join(cache, 'models', 'Qwen', 'Qwen2___5-Tiny');
    assert.equal(outcome!.folder, folder);
    assert.equal(outcome!.filesWritten, 5);
    for (const [path, data] of Object.entries(FILES)) assert.deepEqual(await readFile(join(folder, path)), data, path);
    assert.equal(await readFile(join(folder, '.mv'), 'utf8'), 'Revision:master,CreatedAt:1726842501');
    assert.deepEqual(decodeModelScopePickle(await readFile(join(folder, '.mdl'))), { id: 'Qwen/Qwen2___5-Tiny' });
    const msc = walkRecipe(await readFile(join(folder, '.msc')), 'msc');
    assert.deepEqual(
      msc.map((e) => [e[1], e[3]]),
      repo.files.map((f) => [f.path, f.path === 'config.json' ? C1 : f.path === 'sub/dir/vocab.txt' ? C2 : COMMIT]),
    );
    // plain files only: no links, no blobs/refs, no staging left
    const tree = formatTree(await snapshotTree(cache));
    assert.ok(!/->/.test(tree), tree);
    assert.deepEqual((await readdir(cache)).sort(), ['models']);
    assert.ok((await lstat(join(folder, 'model.safetensors'))).isFile());
    assert.ok(await findExistingModelScopeFile(cache, repo, repo.files.find((f) => f.path === 'config.json')!));
  });

  it('re-import reuses files and keeps earlier index entries whose files remain', async () => {
    const cache = join(work, 'c2');
    const first = manifestRepo('acme/m', { 'a.txt': Buffer.from('a'), 'b.txt': Buffer.from('b') }, { 'a.txt': C1, 'b.txt': C1 });
    await commit(cache, [{ repo: first, data: { 'a.txt': Buffer.from('a'), 'b.txt': Buffer.from('b') } }]);
    const second = manifestRepo('acme/m', { 'a.txt': Buffer.from('a'), 'c.txt': Buffer.from('c') }, { 'a.txt': C2, 'c.txt': C2 });
    const [outcome] = await commit(cache, [{ repo: second, data: { 'a.txt': Buffer.from('a'), 'c.txt': Buffer.from('c') }, extra: { createdAt: 1800000000 } }]);
    assert.equal(outcome!.filesReused, 1);
    assert.equal(outcome!.filesWritten, 1);
    const msc = parseMsc(await readFile(join(cache, 'models', 'acme', 'm', '.msc')));
    assert.deepEqual(msc, [{ path: 'b.txt', revision: C1 }, { path: 'a.txt', revision: C2 }, { path: 'c.txt', revision: C2 }]);
    assert.equal(await readFile(join(cache, 'models', 'acme', 'm', '.mv'), 'utf8'), 'Revision:master,CreatedAt:1800000000');
  });

  it('never follows a symlink out of the cache, and rolls back on failure', async () => {
    const cache = join(work, 'c3');
    const outside = join(work, 'outside');
    await mkdir(join(cache, 'models'), { recursive: true });
    await mkdir(outside, { recursive: true });
    await symlink(outside, join(cache, 'models', 'acme'));
    const repo = manifestRepo('acme/m', { 'a.txt': Buffer.from('a') });
    await assert.rejects(commit(cache, [{ repo, data: { 'a.txt': Buffer.from('a') } }]), (e) => isAirlockError(e, 'E_CACHE_CONFLICT'));
    assert.deepEqual(await readdir(outside), []);

    const cache2 = join(work, 'c4');
    const files = { 'a.txt': Buffer.from('a'), 'z/b.txt': Buffer.from('b') };
    await mkdir(join(cache2, 'models', 'acme', 'm', 'z', 'b.txt'), { recursive: true }); // a directory in the way
    const before = formatTree(await snapshotTree(cache2));
    await assert.rejects(commit(cache2, [{ repo: manifestRepo('acme/m', files), data: files }]), (e) => isAirlockError(e, 'E_CACHE_CONFLICT'));
    assert.equal(formatTree(await snapshotTree(cache2)), before, 'the cache is as it was');
  });

  it('refuses two revisions of one repo and ids without an owner', async () => {
    const cache = join(work, 'c5');
    const files = { 'a.txt': Buffer.from('a') };
    const r1 = manifestRepo('acme/m', files);
    const r2 = { ...manifestRepo('acme/m', files), revision: 'v1' };
    await assert.rejects(commit(cache, [{ repo: r1, data: files }, { repo: r2, data: files }]), (e) => isAirlockError(e, 'E_CACHE_CONFLICT'));
    await assert.rejects(commit(cache, [{ repo: manifestRepo('gpt2', files), data: files }]), (e) => isAirlockError(e, 'E_REPO_ID_INVALID'));
  });

  it('is read the way modelscope 1.x reads it offline (emulated with CPython pickle)', async () => {
    // modelscope cannot be pip-installed here; this replays ModelFileSystemCache's offline checks (§4.1/§4.2)
    const cache = join(work, 'c6');
    const repo = manifestRepo('Qwen/Qwen2.5-Tiny', FILES);
    await commit(cache, [{ repo, data: FILES }]);
    const code = `
import os, pickle, json
root = os.path.join(os.environ['MODELSCOPE_CACHE'], 'models', 'Qwen', 'Qwen2.5-Tiny'.replace('.', '___'))
with open(os.path.join(root, '.msc'), 'rb') as f: index = pickle.load(f)
assert isinstance(index, list) and len(index) > 0
missing = [e['Path'] for e in index if not os.path.isfile(os.path.join(root, e['Path']))]
with open(os.path.join(root, '.mdl'), 'rb') as f: mdl = pickle.load(f)
print(json.dumps({'n': len(index), 'missing': missing, 'mdl': mdl, 'mv': open(os.path.join(root, '.mv')).read()}))
`;
    const result = await runPython(code, { MODELSCOPE_CACHE: cache });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(JSON.parse(result.stdout), { n: 5, missing: [], mdl: { id: 'Qwen/Qwen2___5-Tiny' }, mv: 'Revision:master,CreatedAt:1726842501' });
  });
});
