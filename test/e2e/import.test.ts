/**
 * importBundle end to end, on real temp directories: the exact hub-cache layout, idempotent
 * re-imports, blob reuse, and for every attack or failure: the right error code, the cache
 * byte-for-byte unchanged, and no staging directory left behind.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { isAirlockError, type ErrorCode } from '../../src/errors.ts';
import { importBundle } from '../../src/import/index.ts';
import { resolveHfCacheDir } from '../../src/cache/hf-hub.ts';
import { SIGNATURE_NAME, SUMS_NAME, MANIFEST_NAME } from '../../src/bundle/format.ts';
import { sha256Hex } from '../../src/integrity/digest.ts';
import {
  commitOf,
  entryName,
  makeTestKey,
  manifestFile,
  tamper,
  writeBundleFile,
  type BuildOptions,
  type BuilderRepo,
  type TestKey,
} from '../support/bundle-builder.ts';
import { formatTree, snapshotTree } from '../support/cache-snapshot.ts';
import { runPython, assertVenv } from '../support/python.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';

const dirs: string[] = [];
async function tmp(label = 'airlock-import-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), label));
  dirs.push(dir);
  return dir;
}
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

let key: TestKey;
let mallory: TestKey;
before(async () => {
  [key, mallory] = await Promise.all([makeTestKey(), makeTestKey('Mallory <mallory@example.org>')]);
});

const umask = process.umask();
const FILE_MODE = 0o666 & ~umask;
const DIR_MODE = 0o777 & ~umask;

const CONFIG = '{"model_type": "llama", "hidden_size": 16}\n';
const TINY: BuilderRepo = {
  id: 'acme/tiny',
  revision: 'main',
  files: [
    { path: 'config.json', data: CONFIG },
    { path: 'tokenizer.json', data: '{"version": "1.0"}\n' },
    { path: 'sub/dir/vocab.txt', data: 'hello\nworld\n' },
    { path: 'model.safetensors', data: safetensorsOf(Buffer.alloc(300_000, 0x5a)), lfs: true },
  ],
};
/** Another revision of TINY: shares config.json and tokenizer.json, new weights. */
const TINY_V2: BuilderRepo = {
  id: 'acme/tiny',
  revision: 'v2',
  files: [
    { path: 'config.json', data: CONFIG },
    { path: 'tokenizer.json', data: '{"version": "1.0"}\n' },
    { path: 'model.safetensors', data: safetensorsOf(Buffer.alloc(200_000, 0x33)), lfs: true },
  ],
};
const OTHER: BuilderRepo = { id: 'other/model', files: [{ path: 'config.json', data: '{"other": true}\n' }] };

async function makeBundle(dir: string, options: Partial<BuildOptions> = {}): Promise<string> {
  const path = join(dir, `b-${Math.random().toString(16).slice(2)}.airlock.tar`);
  await writeBundleFile(path, { repos: [TINY], signer: key.signer, ...options });
  return path;
}

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    assert.ok(isAirlockError(error), `expected an AirlockError ${code}, got ${String(error)}`);
    assert.equal(error.code, code, `expected ${code}, got ${error.code}: ${error.message}`);
    return error;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

async function assertNoStaging(cache: string): Promise<void> {
  const locks = join(cache, '.locks');
  const names = await readdir(locks).catch(() => [] as string[]);
  assert.deepEqual(names.filter((n) => n.startsWith('airlock-staging-')), [], 'a staging directory was left behind');
}

function folderOf(cache: string, repo: BuilderRepo): string {
  return join(cache, `${repo.type ?? 'model'}s--${repo.id.split('/').join('--')}`);
}

describe('import round trip', () => {
  test('writes the exact hub-cache layout into a new cache', async () => {
    const dir = await tmp();
    const bundle = await makeBundle(dir);
    const cache = join(dir, 'new', 'hub'); // neither exists yet
    const result = await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache, bundleSha256: true });

    const commit = commitOf(TINY);
    const files = TINY.files.map(manifestFile);
    const etag = (path: string): string => files.find((f) => f.path === path)!.etag;
    assert.equal(result.signed, true);
    assert.equal(result.signers[0]?.fingerprint, key.fingerprint);
    assert.equal(result.bundleSha256, sha256Hex(await readFile(bundle)));
    assert.deepEqual(result.repos.map((r) => [r.id, r.revision, r.commit, r.files, r.filesWritten, r.filesReused, r.refWritten]), [
      ['acme/tiny', 'main', commit, 4, 4, 0, true],
    ]);
    assert.deepEqual(result.warnings, []);

    const tree = await snapshotTree(cache);
    const layout = tree!.map((e) => `${e.type} ${e.path}${e.target === undefined ? '' : ` -> ${e.target}`}`);
    const snap = `models--acme--tiny/snapshots/${commit}`;
    assert.deepEqual(
      layout,
      [
        'dir .',
        'dir models--acme--tiny',
        'dir models--acme--tiny/blobs',
        ...files.map((f) => `file models--acme--tiny/blobs/${f.etag}`).sort(),
        'dir models--acme--tiny/refs',
        'file models--acme--tiny/refs/main',
        'dir models--acme--tiny/snapshots',
        `dir ${snap}`,
        `symlink ${snap}/config.json -> ../../blobs/${etag('config.json')}`,
        `symlink ${snap}/model.safetensors -> ../../blobs/${etag('model.safetensors')}`,
        `dir ${snap}/sub`,
        `dir ${snap}/sub/dir`,
        `symlink ${snap}/sub/dir/vocab.txt -> ../../../../blobs/${etag('sub/dir/vocab.txt')}`,
        `symlink ${snap}/tokenizer.json -> ../../blobs/${etag('tokenizer.json')}`,
      ],
      formatTree(tree),
    );
    // LFS blob named by sha256, git blobs by their blob sha1
    assert.equal(etag('model.safetensors'), sha256Hex(safetensorsOf(Buffer.alloc(300_000, 0x5a))));
    assert.match(etag('config.json'), /^[0-9a-f]{40}$/);

    // refs/main: exactly the 40-hex commit, no newline
    const ref = await readFile(join(cache, 'models--acme--tiny', 'refs', 'main'));
    assert.equal(ref.byteLength, 40);
    assert.equal(ref.toString('latin1'), commit);

    // content through the links, and modes 0666/0777 & ~umask
    for (const file of TINY.files) {
      assert.deepEqual(await readFile(join(cache, snap, file.path)), Buffer.from(file.data));
    }
    for (const entry of tree!) {
      if (entry.type === 'file') assert.equal(entry.mode, FILE_MODE, `${entry.path} mode`);
      if (entry.type === 'dir' && entry.path !== '.') assert.equal(entry.mode, DIR_MODE, `${entry.path} mode`);
    }
    // nothing else at the root: no .locks (it did not exist before), no CACHEDIR.TAG, no trees/
    assert.deepEqual(await readdir(cache), ['models--acme--tiny']);
  });

  test('re-import is a no-op: identical tree, blobs not rewritten', async () => {
    const dir = await tmp();
    const bundle = await makeBundle(dir);
    const cache = join(dir, 'hub');
    await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache });
    const before = await snapshotTree(cache, { mtimes: true });
    await new Promise((resolve) => setTimeout(resolve, 20)); // a rewrite would show in the mtimes
    const again = await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache });
    assert.deepEqual(again.repos.map((r) => [r.filesWritten, r.filesReused, r.refWritten]), [[0, 4, false]]);
    assert.equal(formatTree(await snapshotTree(cache, { mtimes: true })), formatTree(before));
  });

  test('a second revision reuses the blobs it shares and adds its own ref', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    await importBundle({ bundlePath: await makeBundle(dir), trustedKeys: key.trustedKeys, cacheDir: cache });
    const mainRef = await readFile(join(cache, 'models--acme--tiny', 'refs', 'main'), 'latin1');
    const result = await importBundle({ bundlePath: await makeBundle(dir, { repos: [TINY_V2] }), trustedKeys: key.trustedKeys, cacheDir: cache });
    assert.deepEqual(result.repos.map((r) => [r.revision, r.filesWritten, r.filesReused, r.refWritten]), [['v2', 1, 2, true]]);
    const folder = folderOf(cache, TINY);
    assert.equal(await readFile(join(folder, 'refs', 'v2'), 'latin1'), commitOf(TINY_V2));
    assert.equal(await readFile(join(folder, 'refs', 'main'), 'latin1'), mainRef);
    assert.deepEqual((await readdir(join(folder, 'snapshots'))).sort(), [commitOf(TINY), commitOf(TINY_V2)].sort());
    assert.equal((await readdir(join(folder, 'blobs'))).length, 5); // 4 + the new weights
  });

  test('a revision that is a commit writes no ref; refs/pr/1 nests; datasets get datasets--', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    const byCommit: BuilderRepo = { ...TINY, revision: '89abcdef0123456789abcdef0123456789abcdef' };
    const pr: BuilderRepo = { type: 'dataset', id: 'acme/ds', revision: 'refs/pr/1', files: [{ path: 'data/train.csv', data: 'x,y\n1,2\n' }] };
    const result = await importBundle({ bundlePath: await makeBundle(dir, { repos: [byCommit, pr] }), trustedKeys: key.trustedKeys, cacheDir: cache });
    assert.deepEqual(result.repos.map((r) => [r.id, r.refWritten]), [['acme/ds', true], ['acme/tiny', false]]);
    const tiny = await readdir(folderOf(cache, byCommit));
    assert.deepEqual(tiny.sort(), ['blobs', 'snapshots']);
    assert.equal(await readFile(join(cache, 'datasets--acme--ds', 'refs', 'refs', 'pr', '1'), 'latin1'), commitOf(pr));
    assert.equal(
      await readlink(join(cache, 'datasets--acme--ds', 'snapshots', commitOf(pr), 'data', 'train.csv')),
      `../../../blobs/${manifestFile(pr.files[0]!).etag}`,
    );
  });

  test('a repo with no files still gets its snapshot folder and ref', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    const empty: BuilderRepo = { id: 'acme/empty', files: [] };
    await importBundle({ bundlePath: await makeBundle(dir, { repos: [empty] }), trustedKeys: key.trustedKeys, cacheDir: cache });
    assert.deepEqual(await readdir(join(folderOf(cache, empty), 'snapshots', commitOf(empty))), []);
    assert.equal(await readFile(join(folderOf(cache, empty), 'refs', 'main'), 'latin1'), commitOf(empty));
  });

  test('an existing .locks (with Python lock files) is kept as it was', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    await mkdir(join(cache, '.locks', 'models--acme--tiny'), { recursive: true });
    await writeFile(join(cache, '.locks', 'models--acme--tiny', 'abc.lock'), '');
    const lockTree = await snapshotTree(join(cache, '.locks'));
    await importBundle({ bundlePath: await makeBundle(dir), trustedKeys: key.trustedKeys, cacheDir: cache });
    assert.equal(formatTree(await snapshotTree(join(cache, '.locks'))), formatTree(lockTree));
  });

  test('an unsigned bundle is accepted with allowUnsigned', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    const result = await importBundle({ bundlePath: await makeBundle(dir, { signer: undefined }), trustedKeys: [], allowUnsigned: true, cacheDir: cache });
    assert.equal(result.signed, false);
    assert.deepEqual(result.signers, []);
  });

  test('a corrupted blob in the cache is replaced; a correct one is reused', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    const bundle = await makeBundle(dir);
    await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache });
    const blob = join(folderOf(cache, TINY), 'blobs', manifestFile(TINY.files[3]!).etag);
    await writeFile(blob, Buffer.alloc(300_000, 0x00)); // right size, wrong bytes
    const result = await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache });
    assert.deepEqual(result.repos.map((r) => [r.filesWritten, r.filesReused]), [[1, 3]]);
    assert.deepEqual(await readFile(blob), safetensorsOf(Buffer.alloc(300_000, 0x5a)));
  });

  test('a symlinked blob (shared blob store) is followed for checks, never written through', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    const bundle = await makeBundle(dir);
    await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache });
    const blob = join(folderOf(cache, TINY), 'blobs', manifestFile(TINY.files[3]!).etag);
    const shared = join(dir, 'shared-store-blob');

    // correct content behind the link: reused, link left alone
    await writeFile(shared, safetensorsOf(Buffer.alloc(300_000, 0x5a)));
    await rm(blob);
    await symlink(shared, blob);
    let result = await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache });
    assert.deepEqual(result.repos.map((r) => r.filesReused), [4]);
    assert.equal(await readlink(blob), shared);

    // wrong content behind the link: the link is replaced by a real blob, the target is untouched
    await writeFile(shared, 'not the weights');
    result = await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache });
    assert.deepEqual(result.repos.map((r) => r.filesWritten), [1]);
    assert.equal((await stat(blob)).isFile(), true);
    assert.deepEqual(await readFile(blob), safetensorsOf(Buffer.alloc(300_000, 0x5a)));
    assert.equal(await readFile(shared, 'utf8'), 'not the weights');
  });

  test('a bundle that does not exist: E_NOT_FOUND with a hint, nothing created', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    const error = await rejectsWith(importBundle({ bundlePath: join(dir, 'missing.airlock.tar'), trustedKeys: key.trustedKeys, cacheDir: cache }), 'E_NOT_FOUND');
    assert.ok(isAirlockError(error) && error.hint !== undefined);
    assert.equal(await snapshotTree(cache), null);
  });
});

describe('nothing unverified ever lands', () => {
  // every case runs against a cache that already holds another repo; it must come out byte-for-byte the same
  const payload = (path: string): string => entryName(TINY, path);
  const last = payload('tokenizer.json'); // the last payload entry: everything before it was already staged
  const cases: Array<{ name: string; code: ErrorCode; options: () => Partial<BuildOptions>; allowUnsigned?: boolean; raw?: (bytes: Buffer) => Buffer }> = [
    { name: 'flipped byte in the last payload file', code: 'E_HASH_MISMATCH', options: () => ({ editEntries: tamper.flipByte(last) }) },
    { name: 'flipped byte in an LFS payload file', code: 'E_HASH_MISMATCH', options: () => ({ editEntries: tamper.flipByte(payload('model.safetensors'), 7) }) },
    { name: 'flipped byte in manifest.json', code: 'E_HASH_MISMATCH', options: () => ({ editEntries: tamper.flipByte(MANIFEST_NAME) }) },
    { name: 'flipped byte in SHA256SUMS', code: 'E_SIGNATURE_INVALID', options: () => ({ editEntries: tamper.flipByte(SUMS_NAME, 3) }) },
    { name: 'flipped byte in the signature', code: 'E_SIGNATURE_INVALID', options: () => ({ editEntries: tamper.flipByte(SIGNATURE_NAME, 80) }) },
    { name: 'signature by an untrusted key', code: 'E_SIGNATURE_UNTRUSTED', options: () => ({ signer: mallory.signer }) },
    { name: 'unsigned, without allowUnsigned', code: 'E_UNSIGNED', options: () => ({ signer: undefined }) },
    { name: 'unexpected extra entry', code: 'E_UNEXPECTED_ENTRY', options: () => ({ editEntries: tamper.add({ name: payload('extra.bin'), data: Buffer.from('x') }) }) },
    { name: 'missing entry', code: 'E_MISSING_ENTRY', options: () => ({ editEntries: tamper.remove(last) }) },
    { name: 'duplicate entry with other content', code: 'E_DUPLICATE_ENTRY', options: () => ({ editEntries: tamper.duplicate(payload('config.json'), Buffer.from('{"evil": 1}')) }) },
    { name: 'duplicate SHA256SUMS at the end', code: 'E_DUPLICATE_ENTRY', options: () => ({ editEntries: tamper.add({ name: SUMS_NAME, data: Buffer.from('x') }) }) },
    { name: 'symlink entry', code: 'E_ENTRY_TYPE', options: () => ({ editEntries: tamper.retype(payload('config.json'), 'symlink', '/etc/passwd') }) },
    { name: 'hard link entry', code: 'E_ENTRY_TYPE', options: () => ({ editEntries: tamper.retype(payload('config.json'), 'link', SUMS_NAME) }) },
    { name: 'directory entry', code: 'E_ENTRY_TYPE', options: () => ({ editEntries: tamper.add({ name: 'payload/models/', type: 'directory' }, 3) }) },
    { name: 'FIFO entry', code: 'E_ENTRY_TYPE', options: () => ({ editEntries: tamper.add({ name: payload('fifo'), type: 'fifo' }) }) },
    { name: 'size mismatch', code: 'E_SIZE_MISMATCH', options: () => ({ editEntries: tamper.setData(payload('config.json'), Buffer.from(`${CONFIG} `)) }) },
    { name: '"../" entry name', code: 'E_UNSAFE_PATH', options: () => ({ editEntries: tamper.add({ name: 'payload/../../../escape.txt', data: Buffer.from('x') }, 3) }) },
    { name: 'absolute entry name', code: 'E_UNSAFE_PATH', options: () => ({ editEntries: tamper.add({ name: '/tmp/airlock-escape.txt', data: Buffer.from('x') }) }) },
    {
      name: 'signed manifest with a "../" path',
      code: 'E_MANIFEST_INVALID',
      options: () => ({ editManifest: (m) => void (m.repos[0]!.files[0]!.path = '../../escape.json') }),
    },
    {
      name: 'signed manifest whose git etag is not the content\'s blob id',
      code: 'E_HASH_MISMATCH',
      options: () => ({
        editManifest: (m) => {
          const file = m.repos[0]!.files.find((f) => !f.lfs)!;
          file.etag = file.blobId = 'f'.repeat(40);
        },
      }),
    },
    {
      name: 'signed SHA256SUMS listing a file the manifest does not',
      code: 'E_SUMS_INVALID',
      options: () => ({ editSums: (text) => `${text}${'0'.repeat(64)}  zzz-extra\n` }),
    },
    {
      name: 'signed SHA256SUMS missing a file the manifest lists',
      code: 'E_MANIFEST_INVALID',
      options: () => ({ editSums: (text) => text.split('\n').filter((l) => !l.endsWith('/tokenizer.json')).join('\n') }),
    },
    { name: 'signed SHA256SUMS with CRLF', code: 'E_SUMS_INVALID', options: () => ({ editSums: (text) => text.replace(/\n/g, '\r\n') }) },
    { name: 'manifest before SHA256SUMS', code: 'E_BUNDLE_MALFORMED', options: () => ({ editEntries: tamper.move(MANIFEST_NAME, 0) }) },
    { name: 'signature after the manifest (reads as unsigned)', code: 'E_UNSIGNED', options: () => ({ editEntries: tamper.swap(SIGNATURE_NAME, MANIFEST_NAME) }) },
    {
      name: 'signature after the manifest, with allowUnsigned',
      code: 'E_BUNDLE_MALFORMED',
      allowUnsigned: true,
      options: () => ({ editEntries: tamper.swap(SIGNATURE_NAME, MANIFEST_NAME) }),
    },
    {
      name: 'signed bundle with a bad signature, with allowUnsigned (a present signature is always checked)',
      code: 'E_SIGNATURE_INVALID',
      allowUnsigned: true,
      options: () => ({ editEntries: tamper.flipByte(SUMS_NAME, 3) }),
    },
    { name: 'SHA256SUMS as a directory', code: 'E_BUNDLE_MALFORMED', options: () => ({ editEntries: tamper.retype(SUMS_NAME, 'directory') }) },
    // the 300 kB LFS file is most of the bundle: half of it ends inside that file's data
    { name: 'truncated in the middle of a payload file', code: 'E_BUNDLE_MALFORMED', options: () => ({}), raw: (b) => b.subarray(0, Math.floor(b.byteLength / 2)) },
    { name: 'truncated inside a tar header', code: 'E_BUNDLE_MALFORMED', options: () => ({}), raw: (b) => b.subarray(0, b.byteLength - 1024 - 1024 - 300) },
    { name: 'truncated between two entries', code: 'E_MISSING_ENTRY', options: () => ({}), raw: (b) => b.subarray(0, b.byteLength - 1024 - 1024) },
    { name: 'not a tar at all', code: 'E_BUNDLE_MALFORMED', options: () => ({}), raw: (b) => Buffer.from(b.toString('base64')) },
    { name: 'empty file', code: 'E_BUNDLE_MALFORMED', options: () => ({}), raw: () => Buffer.alloc(0) },
  ];

  for (const c of cases) {
    test(`${c.name} → ${c.code}; cache unchanged, no staging left`, async () => {
      const dir = await tmp();
      const cache = join(dir, 'hub');
      await importBundle({ bundlePath: await makeBundle(dir, { repos: [OTHER] }), trustedKeys: key.trustedKeys, cacheDir: cache });
      const before = await snapshotTree(cache, { mtimes: true });
      const bundle = await makeBundle(dir, c.options());
      if (c.raw) await writeFile(bundle, c.raw(await readFile(bundle)));
      await rejectsWith(importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, allowUnsigned: c.allowUnsigned ?? false, cacheDir: cache }), c.code);
      assert.equal(formatTree(await snapshotTree(cache, { mtimes: true })), formatTree(before));
      await assertNoStaging(cache);
      await assert.rejects(stat('/tmp/airlock-escape.txt'));
      await assert.rejects(stat(join(dir, 'escape.txt')));
    });
  }

  test('a failed first import into a missing cache leaves no cache directory at all', async () => {
    const dir = await tmp();
    const cache = join(dir, 'a', 'b', 'hub');
    await rejectsWith(
      importBundle({ bundlePath: await makeBundle(dir, { editEntries: tamper.flipByte(last) }), trustedKeys: key.trustedKeys, cacheDir: cache }),
      'E_HASH_MISMATCH',
    );
    assert.deepEqual((await readdir(dir)).filter((n) => !n.endsWith('.tar')), []);
  });

  test('SIGINT during an import → E_INTERRUPTED, cache unchanged, staging removed', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    await importBundle({ bundlePath: await makeBundle(dir, { repos: [OTHER] }), trustedKeys: key.trustedKeys, cacheDir: cache });
    const before = await snapshotTree(cache, { mtimes: true });
    const bundle = await makeBundle(dir);
    const listeners = process.listenerCount('SIGINT');
    const running = importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache });
    assert.equal(process.listenerCount('SIGINT'), listeners + 1);
    process.emit('SIGINT', 'SIGINT');
    await rejectsWith(running, 'E_INTERRUPTED');
    assert.equal(formatTree(await snapshotTree(cache, { mtimes: true })), formatTree(before));
    await assertNoStaging(cache);
    assert.equal(process.listenerCount('SIGINT'), listeners, 'the import must remove its signal handlers');
  });

  test('an already aborted signal → E_INTERRUPTED before anything is created', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    await rejectsWith(importBundle({ bundlePath: await makeBundle(dir), trustedKeys: key.trustedKeys, cacheDir: cache, signal: AbortSignal.abort() }), 'E_INTERRUPTED');
    assert.equal(await snapshotTree(cache), null);
  });
});

describe('the cache is never written through a symlink, and a failed commit rolls back', () => {
  test('repo folder `blobs` is a symlink out of the cache → E_CACHE_CONFLICT, target untouched', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    const outside = join(dir, 'outside');
    await mkdir(outside);
    await mkdir(folderOf(cache, TINY), { recursive: true });
    await symlink(outside, join(folderOf(cache, TINY), 'blobs'));
    const before = await snapshotTree(cache, { mtimes: true });
    await rejectsWith(importBundle({ bundlePath: await makeBundle(dir), trustedKeys: key.trustedKeys, cacheDir: cache }), 'E_CACHE_CONFLICT');
    assert.deepEqual(await readdir(outside), []);
    assert.equal(formatTree(await snapshotTree(cache, { mtimes: true })), formatTree(before));
    await assertNoStaging(cache);
  });

  test('`refs/main` parent is a symlink → E_CACHE_CONFLICT', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    const outside = join(dir, 'outside');
    await mkdir(outside);
    await mkdir(folderOf(cache, TINY), { recursive: true });
    await symlink(outside, join(folderOf(cache, TINY), 'refs'));
    await rejectsWith(importBundle({ bundlePath: await makeBundle(dir), trustedKeys: key.trustedKeys, cacheDir: cache }), 'E_CACHE_CONFLICT');
    assert.deepEqual(await readdir(outside), []);
  });

  test('a conflict found while linking undoes the blobs already moved in (and restores a replaced one byte for byte)', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    await importBundle({ bundlePath: await makeBundle(dir), trustedKeys: key.trustedKeys, cacheDir: cache });
    const folder = folderOf(cache, TINY);
    // a corrupted shared blob (will be replaced during the commit) …
    const sharedBlob = join(folder, 'blobs', manifestFile(TINY_V2.files[0]!).etag);
    await chmod(sharedBlob, 0o600);
    await writeFile(sharedBlob, 'corrupted');
    // … and a directory where v2's tokenizer.json link must go (found only in the link phase)
    await mkdir(join(folder, 'snapshots', commitOf(TINY_V2), 'tokenizer.json'), { recursive: true });
    const before = await snapshotTree(cache, { mtimes: true });

    const error = await rejectsWith(
      importBundle({ bundlePath: await makeBundle(dir, { repos: [TINY_V2] }), trustedKeys: key.trustedKeys, cacheDir: cache }),
      'E_CACHE_CONFLICT',
    );
    assert.match(error.message, /tokenizer\.json/);
    assert.equal(formatTree(await snapshotTree(cache, { mtimes: true })), formatTree(before));
    await assertNoStaging(cache);
  });

  test('a directory where a blob must go → E_CACHE_CONFLICT, rolled back', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    await importBundle({ bundlePath: await makeBundle(dir, { repos: [OTHER] }), trustedKeys: key.trustedKeys, cacheDir: cache });
    await mkdir(join(folderOf(cache, TINY), 'blobs', manifestFile(TINY.files[3]!).etag), { recursive: true });
    const before = await snapshotTree(cache, { mtimes: true });
    await rejectsWith(importBundle({ bundlePath: await makeBundle(dir), trustedKeys: key.trustedKeys, cacheDir: cache }), 'E_CACHE_CONFLICT');
    assert.equal(formatTree(await snapshotTree(cache, { mtimes: true })), formatTree(before));
    await assertNoStaging(cache);
  });

  test('a stale snapshot link and a stale ref are corrected', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    const bundle = await makeBundle(dir);
    await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache });
    const folder = folderOf(cache, TINY);
    const link = join(folder, 'snapshots', commitOf(TINY), 'config.json');
    await rm(link);
    await symlink('../../blobs/0000000000000000000000000000000000000000', link);
    await writeFile(join(folder, 'refs', 'main'), `${commitOf(TINY)}\n`); // the newline breaks Python lookups
    await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache });
    assert.equal(await readlink(link), `../../blobs/${manifestFile(TINY.files[0]!).etag}`);
    assert.equal(await readFile(join(folder, 'refs', 'main'), 'latin1'), commitOf(TINY));
  });
});

describe('huggingface_hub reads what we wrote', () => {
  test('offline snapshot_download, hf_hub_download and scan_cache_dir (real Python)', async () => {
    assertVenv(); // a missing venv fails this test (with the command that creates it); it never skips
    const dir = await tmp();
    const cache = join(dir, 'hub');
    const dataset: BuilderRepo = { type: 'dataset', id: 'acme/ds', revision: '0123456789abcdef0123456789abcdef01234567', files: [{ path: 'data/train.csv', data: 'x,y\n1,2\n' }] };
    await importBundle({ bundlePath: await makeBundle(dir, { repos: [TINY, dataset] }), trustedKeys: key.trustedKeys, cacheDir: cache });
    const code = `
import json, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    from huggingface_hub import snapshot_download, hf_hub_download, scan_cache_dir
    snap = snapshot_download("acme/tiny", local_files_only=True)
    config = hf_hub_download("acme/tiny", "config.json", local_files_only=True)
    vocab = hf_hub_download("acme/tiny", "sub/dir/vocab.txt", revision="${commitOf(TINY)}", local_files_only=True)
    weights = hf_hub_download("acme/tiny", "model.safetensors", local_files_only=True)
    ds = snapshot_download("acme/ds", repo_type="dataset", revision="${commitOf(dataset)}", local_files_only=True)
    info = scan_cache_dir()
print(json.dumps({
    "snap": snap, "config": open(config).read(), "vocab": open(vocab).read(), "weights": len(open(weights, "rb").read()),
    "ds": ds,
    "warnings": [str(w) for w in info.warnings],
    "pywarnings": [str(w.message) for w in caught],
    "repos": sorted((r.repo_type, r.repo_id, sorted(sorted(rev.refs) for rev in r.revisions).__repr__(), r.nb_files) for r in info.repos),
}))
`;
    const result = await runPython(code, { HF_HUB_OFFLINE: '1', HF_HUB_CACHE: cache });
    assert.equal(result.code, 0, `python failed:\n${result.stderr}`);
    const out = JSON.parse(result.stdout) as Record<string, unknown>;
    assert.equal(out['snap'], join(cache, 'models--acme--tiny', 'snapshots', commitOf(TINY)));
    assert.equal(out['config'], CONFIG);
    assert.equal(out['vocab'], 'hello\nworld\n');
    assert.equal(out['weights'], 300_000);
    assert.equal(out['ds'], join(cache, 'datasets--acme--ds', 'snapshots', commitOf(dataset)));
    assert.deepEqual(out['warnings'], []);
    assert.deepEqual(out['pywarnings'], []);
    assert.deepEqual(out['repos'], [
      ['dataset', 'acme/ds', '[[]]', 1],
      ['model', 'acme/tiny', "[['main']]", 4],
    ]);
  });
});

describe('resolveHfCacheDir', () => {
  const home = '/home/u';
  test('flag > HF_HUB_CACHE > HUGGINGFACE_HUB_CACHE > HF_HOME/hub > XDG_CACHE_HOME/huggingface/hub > ~/.cache/huggingface/hub', () => {
    const env = { HF_HUB_CACHE: '/a', HUGGINGFACE_HUB_CACHE: '/b', HF_HOME: '/c', XDG_CACHE_HOME: '/d' };
    assert.equal(resolveHfCacheDir('/flag', env, home), '/flag');
    assert.equal(resolveHfCacheDir(undefined, env, home), '/a');
    assert.equal(resolveHfCacheDir(undefined, { ...env, HF_HUB_CACHE: undefined }, home), '/b');
    assert.equal(resolveHfCacheDir(undefined, { HF_HOME: '/c', XDG_CACHE_HOME: '/d' }, home), '/c/hub');
    assert.equal(resolveHfCacheDir(undefined, { XDG_CACHE_HOME: '/d' }, home), '/d/huggingface/hub');
    assert.equal(resolveHfCacheDir(undefined, {}, home), '/home/u/.cache/huggingface/hub');
    assert.equal(resolveHfCacheDir(undefined, {}), join(homedir(), '.cache', 'huggingface', 'hub'));
  });

  test('expands ~ and $VARS, treats empty variables as unset, returns absolute paths', () => {
    assert.equal(resolveHfCacheDir('~/models', {}, home), '/home/u/models');
    assert.equal(resolveHfCacheDir(undefined, { HF_HUB_CACHE: '$DATA/hub', DATA: '/data' }, home), '/data/hub');
    assert.equal(resolveHfCacheDir(undefined, { HF_HOME: '${DATA}/hf', DATA: '/data' }, home), '/data/hf/hub');
    assert.equal(resolveHfCacheDir(undefined, { HF_HUB_CACHE: '', HF_HOME: '~/hf' }, home), '/home/u/hf/hub');
    assert.equal(resolveHfCacheDir(undefined, { HF_HUB_CACHE: '$NOPE/x' }, home), join(process.cwd(), '$NOPE/x'));
    assert.equal(resolveHfCacheDir('rel/cache', {}, home), join(process.cwd(), 'rel/cache'));
  });
});

describe('cache roots and plans that cannot be imported', () => {
  test('`.locks` is a symlink → E_CACHE_CONFLICT, nothing staged through it', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    const outside = join(dir, 'outside');
    await mkdir(outside);
    await mkdir(cache);
    await symlink(outside, join(cache, '.locks'));
    await rejectsWith(importBundle({ bundlePath: await makeBundle(dir), trustedKeys: key.trustedKeys, cacheDir: cache }), 'E_CACHE_CONFLICT');
    assert.deepEqual(await readdir(outside), []);
    assert.deepEqual(await readdir(cache), ['.locks']);
  });

  test('the cache root is a file → E_CACHE_CONFLICT', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    await writeFile(cache, 'x');
    await rejectsWith(importBundle({ bundlePath: await makeBundle(dir), trustedKeys: key.trustedKeys, cacheDir: cache }), 'E_CACHE_CONFLICT');
    assert.equal(await readFile(cache, 'utf8'), 'x');
  });

  test('a symlinked cache root is followed (a bigger disk), and works', async () => {
    const dir = await tmp();
    const real = join(dir, 'real-hub');
    await mkdir(real);
    await symlink(real, join(dir, 'hub'));
    await importBundle({ bundlePath: await makeBundle(dir), trustedKeys: key.trustedKeys, cacheDir: join(dir, 'hub') });
    assert.deepEqual(await readdir(real), ['models--acme--tiny']);
  });

  test('two files sharing an etag with different content (signed) → E_MANIFEST_INVALID before any payload', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    const bundle = await makeBundle(dir, {
      editManifest: (m) => {
        const files = m.repos[0]!.files.filter((f) => !f.lfs);
        files[1]!.etag = files[1]!.blobId = files[0]!.etag;
      },
    });
    await rejectsWith(importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache }), 'E_MANIFEST_INVALID');
    assert.equal(await snapshotTree(cache), null);
  });

  test('two commits of one repo claiming the same ref (signed) → E_MANIFEST_INVALID', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    const bundle = await makeBundle(dir, { repos: [TINY, { ...TINY_V2, revision: 'main', commit: commitOf(TINY_V2) }] });
    await rejectsWith(importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache }), 'E_MANIFEST_INVALID');
    assert.equal(await snapshotTree(cache), null);
  });
});
