/**
 * The hostile-bundle corpus (issue 7 §1), built here from scratch, no binary fixtures. Every case
 * imports into a cache that already holds a repo (files, links, a ref) and asserts: the exact error
 * code, the cache byte-for-byte unchanged (hashes, modes, link targets, mtimes), no staging left,
 * and nothing written outside the cache. One case per attack, like node-tar's ghsa-* tests.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isAirlockError, type ErrorCode } from '../../src/errors.ts';
import { importBundle } from '../../src/import/index.ts';
import { MANIFEST_NAME, SIGNATURE_NAME, SUMS_NAME } from '../../src/bundle/format.ts';
import type { Manifest, ManifestFile } from '../../src/bundle/manifest.ts';
import {
  buildBundle,
  commitOf,
  endOfArchive,
  entryName,
  makeTestKey,
  packTar,
  padBlocks,
  paxRecords,
  spliceTar,
  tamper,
  tarHeader,
  type BuildOptions,
  type BuilderRepo,
  type TestKey,
} from '../support/bundle-builder.ts';
import { formatTree, snapshotTree, stagingLeftovers } from '../support/cache-snapshot.ts';
import { tarLayout } from '../support/tar-layout.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';

const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});
async function tmp(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-hostile-'));
  dirs.push(dir);
  return dir;
}

let key: TestKey;
let mallory: TestKey;
let otherSignature: string;
before(async () => {
  [key, mallory] = await Promise.all([makeTestKey(), makeTestKey('Mallory <mallory@example.org>')]);
  // a genuine signature by the trusted key, over a different SHA256SUMS
  otherSignature = await key.signer.sign(Buffer.from(`${'a'.repeat(64)}  manifest.json\n`));
});

const TINY: BuilderRepo = {
  id: 'acme/tiny',
  revision: 'main',
  files: [
    { path: 'config.json', data: '{"model_type": "llama"}\n' },
    { path: 'café.txt', data: 'nfc\n' },
    { path: 'model.safetensors', data: safetensorsOf(Buffer.alloc(40_000, 0x5a)), lfs: true },
    { path: 'tokenizer.json', data: '{"version": "1.0"}\n' },
  ],
};
/** Already in the cache before every case. */
const RESIDENT: BuilderRepo = {
  id: 'acme/tiny',
  revision: 'v0',
  files: [
    { path: 'config.json', data: '{"model_type": "llama"}\n' },
    { path: 'sub/dir/vocab.txt', data: 'hello\n' },
  ],
};
const p = (path: string): string => entryName(TINY, path);
const LAST = p('tokenizer.json');
const COMMIT = commitOf(TINY);

type Raw = (tar: Buffer) => Buffer;
interface Case {
  name: string;
  code: ErrorCode;
  options?: Partial<BuildOptions>;
  raw?: Raw;
  /** the message must say this (when the code alone is not specific) */
  message?: RegExp;
}

/** Replaces the (plain ustar) header of entry `name` with `header`. */
function replaceHeader(name: string, header: (size: number) => Buffer): Raw {
  return (tar) => {
    const entry = tarLayout(tar).find((e) => e.name === name);
    if (entry === undefined) throw new Error(`no entry ${name}`);
    return spliceTar(tar, entry.headerOffset, header(entry.size), 512);
  };
}
/** Inserts blocks right before the header of entry `name` (an entry written without a pax header). */
function insertBefore(name: string, blocks: () => Buffer): Raw {
  return (tar) => {
    const entry = tarLayout(tar).find((e) => e.name === name);
    if (entry === undefined) throw new Error(`no entry ${name}`);
    return spliceTar(tar, entry.headerOffset, blocks());
  };
}
const editFile = (fn: (f: BuildOptions['repos'][number]['files'][number][]) => void): Partial<BuildOptions> => {
  const files = TINY.files.map((f) => ({ ...f }));
  fn(files);
  return { repos: [{ ...TINY, files }] };
};
const manifestEdit = (fn: (m: Manifest) => void): Partial<BuildOptions> => ({ editManifest: fn });
const firstFile = (m: Manifest): ManifestFile => m.repos[0]!.files[0]!;

const cases: Case[] = [
  // ---- names that escape, in the tar ----
  { name: 'tar entry "payload/../../escape.txt"', code: 'E_UNSAFE_PATH', options: { editEntries: tamper.add({ name: 'payload/../../escape.txt', data: Buffer.from('x') }, 3) } },
  { name: 'tar entry with an absolute name', code: 'E_UNSAFE_PATH', options: { editEntries: tamper.add({ name: '/tmp/airlock-hostile-escape.txt', data: Buffer.from('x') }) } },
  {
    name: 'tar entry that escapes only after normalisation',
    code: 'E_UNSAFE_PATH',
    options: { editEntries: tamper.add({ name: `payload/models/acme/tiny/${COMMIT}/a/../../../../../../escape.txt`, data: Buffer.from('x') }) },
  },
  { name: 'tar entry with backslashes', code: 'E_UNSAFE_PATH', options: { editEntries: tamper.add({ name: 'payload\\..\\..\\escape.txt', data: Buffer.from('x') }) } },
  { name: 'tar entry with a drive letter', code: 'E_UNSAFE_PATH', options: { editEntries: tamper.add({ name: 'C:/Windows/escape.txt', data: Buffer.from('x') }) } },
  {
    name: 'pax path record renaming an entry to ../escape.txt',
    code: 'E_UNSAFE_PATH',
    raw: insertBefore(LAST, () => Buffer.concat([tarHeader({ name: 'PaxHeader', size: paxRecords([['path', '../escape.txt']]).byteLength, flag: 'x' }), padBlocks(paxRecords([['path', '../escape.txt']]))])),
  },
  // ---- names that escape, signed into the manifest ----
  { name: 'signed manifest path "../../escape.json"', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (firstFile(m).path = '../../escape.json')) },
  { name: 'signed manifest path with backslashes (refused already in SHA256SUMS)', code: 'E_SUMS_INVALID', options: manifestEdit((m) => void (firstFile(m).path = '..\\..\\escape.json')) },
  { name: 'signed manifest absolute path', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (firstFile(m).path = '/etc/passwd')) },
  { name: 'signed manifest drive-letter path', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (firstFile(m).path = 'C:evil.json')) },
  { name: 'signed manifest path "a/./b"', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (firstFile(m).path = 'a/./config.json')) },
  { name: 'signed manifest path with a NUL byte', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (firstFile(m).path = 'config.json\u0000.txt')) },
  // ---- links, devices, directories ----
  { name: 'symlink entry in place of a payload file', code: 'E_ENTRY_TYPE', options: { editEntries: tamper.retype(p('config.json'), 'symlink', '/etc/passwd') } },
  { name: 'hard link entry to /etc/passwd', code: 'E_ENTRY_TYPE', options: { editEntries: tamper.retype(p('config.json'), 'link', '/etc/passwd') } },
  { name: 'hard link entry to an earlier payload entry', code: 'E_ENTRY_TYPE', options: { editEntries: tamper.retype(LAST, 'link', p('config.json')) } },
  {
    name: 'symlinked directory entry, then a file written through it',
    code: 'E_ENTRY_TYPE',
    options: {
      editEntries: tamper.all(
        tamper.add({ name: 'payload/models/acme/evil', type: 'symlink', linkname: '/tmp' }, 3),
        tamper.add({ name: 'payload/models/acme/evil/airlock-hostile-escape.txt', data: Buffer.from('x') }, 4),
      ),
    },
  },
  { name: 'character device entry', code: 'E_ENTRY_TYPE', options: { editEntries: tamper.add({ name: p('tty'), type: 'character-device' }, 3) } },
  { name: 'block device entry', code: 'E_ENTRY_TYPE', options: { editEntries: tamper.add({ name: p('sda'), type: 'block-device' }, 3) } },
  { name: 'FIFO in place of a payload file', code: 'E_ENTRY_TYPE', options: { editEntries: tamper.retype(p('config.json'), 'fifo') } },
  { name: 'directory in place of a payload file', code: 'E_ENTRY_TYPE', options: { editEntries: tamper.retype(p('config.json'), 'directory') } },
  { name: 'contiguous-file entry', code: 'E_ENTRY_TYPE', raw: replaceHeader(p('config.json'), (size) => tarHeader({ name: p('config.json'), size, flag: '7' })) },
  // ---- duplicates ----
  { name: 'duplicate payload entry, same content', code: 'E_DUPLICATE_ENTRY', options: { editEntries: tamper.duplicate(p('config.json')) } },
  { name: 'duplicate manifest.json at the end', code: 'E_DUPLICATE_ENTRY', options: { editEntries: tamper.add({ name: MANIFEST_NAME, data: Buffer.from('{}') }) } },
  { name: 'duplicate SHA256SUMS.asc at the end', code: 'E_DUPLICATE_ENTRY', options: { editEntries: tamper.add({ name: SIGNATURE_NAME, data: Buffer.from('x') }) } },
  // ---- sizes ----
  {
    name: 'payload header claims 1 TiB (decided from the header, nothing buffered)',
    code: 'E_SIZE_MISMATCH',
    raw: replaceHeader(LAST, () => tarHeader({ name: LAST, size: 2 ** 40 })),
  },
  { name: 'SHA256SUMS header claims 1 TiB', code: 'E_BUNDLE_MALFORMED', raw: replaceHeader(SUMS_NAME, () => tarHeader({ name: SUMS_NAME, size: 2 ** 40 })), message: /limit/ },
  { name: 'payload entry larger than signed', code: 'E_SIZE_MISMATCH', options: { editEntries: tamper.setData(p('config.json'), Buffer.from('{"model_type": "llama"}\n  ')) } },
  { name: 'payload entry smaller than signed', code: 'E_SIZE_MISMATCH', options: { editEntries: tamper.setData(p('config.json'), Buffer.from('{}')) } },
  // ---- truncation and trailing data ----
  { name: 'truncated inside a payload file', code: 'E_BUNDLE_MALFORMED', raw: (t) => t.subarray(0, tarLayout(t).find((e) => e.name === p('model.safetensors'))!.dataOffset + 1000) },
  { name: 'truncated inside a header block', code: 'E_BUNDLE_MALFORMED', raw: (t) => t.subarray(0, tarLayout(t).find((e) => e.name === LAST)!.headerOffset + 100) },
  { name: 'garbage after the end-of-archive marker', code: 'E_BUNDLE_MALFORMED', raw: (t) => Buffer.concat([t, Buffer.alloc(512, 0x41)]), message: /after the end-of-archive/ },
  {
    name: 'a second archive hidden after the end-of-archive marker',
    code: 'E_BUNDLE_MALFORMED',
    raw: (t) => Buffer.concat([t, tarHeader({ name: p('config.json'), size: 4 }), padBlocks(Buffer.from('evil'))]),
    message: /after the end-of-archive/,
  },
  { name: 'one stray byte after the end', code: 'E_BUNDLE_MALFORMED', raw: (t) => Buffer.concat([t, Buffer.from([1])]) },
  // ---- extended-header bombs ----
  {
    name: 'pax header claiming 100 MiB (refused from its header block)',
    code: 'E_BUNDLE_MALFORMED',
    raw: insertBefore(LAST, () => Buffer.concat([tarHeader({ name: 'PaxHeader', size: 100 * 1024 * 1024, flag: 'x' }), Buffer.alloc(4096, 0x31)])),
    message: /extended tar header/,
  },
  {
    name: 'real 3 MiB pax header of tiny records (under tar-stream\'s own 4 MiB cap)',
    code: 'E_BUNDLE_MALFORMED',
    raw: insertBefore(LAST, () => {
      const records = Buffer.from('6 a=b\n'.repeat(512 * 1024));
      return Buffer.concat([tarHeader({ name: 'PaxHeader', size: records.byteLength, flag: 'x' }), padBlocks(records)]);
    }),
    message: /extended tar header/,
  },
  {
    name: 'GNU long-name header claiming 10 MiB',
    code: 'E_BUNDLE_MALFORMED',
    raw: insertBefore(LAST, () => Buffer.concat([tarHeader({ name: '././@LongLink', size: 10 * 1024 * 1024, flag: 'L' }), Buffer.alloc(1024, 0x61)])),
    message: /extended tar header/,
  },
  {
    name: 'GNU long-link header claiming 10 MiB',
    code: 'E_BUNDLE_MALFORMED',
    raw: insertBefore(LAST, () => Buffer.concat([tarHeader({ name: '././@LongLink', size: 10 * 1024 * 1024, flag: 'K' }), Buffer.alloc(1024, 0x61)])),
    message: /extended tar header/,
  },
  {
    name: 'pax global header (would rename every later entry)',
    code: 'E_BUNDLE_MALFORMED',
    raw: insertBefore(LAST, () => Buffer.concat([tarHeader({ name: 'GlobalHead', size: paxRecords([['path', 'x']]).byteLength, flag: 'g' }), padBlocks(paxRecords([['path', 'x']]))])),
    message: /global/,
  },
  {
    name: 'pax header overriding the entry size',
    code: 'E_BUNDLE_MALFORMED',
    raw: insertBefore(LAST, () => Buffer.concat([tarHeader({ name: 'PaxHeader', size: paxRecords([['size', '1']]).byteLength, flag: 'x' }), padBlocks(paxRecords([['size', '1']]))])),
    message: /size/,
  },
  {
    name: 'malformed pax record',
    code: 'E_BUNDLE_MALFORMED',
    raw: insertBefore(LAST, () => Buffer.concat([tarHeader({ name: 'PaxHeader', size: 12, flag: 'x' }), padBlocks(Buffer.from('99 path=x\n\n'))])),
    message: /pax/,
  },
  {
    name: 'header block with a bad checksum',
    code: 'E_BUNDLE_MALFORMED',
    raw: (t) => {
      const out = Buffer.from(t);
      const at = tarLayout(t).find((e) => e.name === LAST)!.headerOffset + 10;
      out[at] = out[at]! ^ 0x01;
      return out;
    },
  },
  // ---- many entries ----
  {
    name: '3000 tiny unlisted entries',
    code: 'E_UNEXPECTED_ENTRY',
    options: { editEntries: (es) => [...es, ...Array.from({ length: 3000 }, (_, i) => ({ name: p(`spam/${i}.txt`), data: Buffer.from('x') }))] },
  },
  // ---- unicode and case twins ----
  { name: 'NFD twin of an NFC file name in the tar', code: 'E_UNSAFE_PATH', options: { editEntries: tamper.rename(p('café.txt'), p('café.txt'.normalize('NFD'))) } },
  {
    name: 'signed manifest with NFC and NFD twins',
    code: 'E_MANIFEST_INVALID',
    options: editFile((files) => files.push({ path: 'café.txt'.normalize('NFD'), data: 'nfd\n' })),
  },
  { name: 'signed manifest with case-only twins', code: 'E_MANIFEST_INVALID', options: editFile((files) => files.push({ path: 'Config.json', data: 'twin\n' })) },
  { name: 'signed manifest: a file that is also a directory ("a" and "a/b")', code: 'E_MANIFEST_INVALID', options: editFile((files) => files.push({ path: 'config.json/x', data: 'x\n' })), message: /directory/ },
  { name: 'signed manifest: a file and a directory differing in case', code: 'E_MANIFEST_INVALID', options: editFile((files) => files.push({ path: 'CONFIG.JSON/x', data: 'x\n' })), message: /directory/ },
  // ---- SHA256SUMS ----
  { name: 'signed SHA256SUMS with a duplicate path', code: 'E_SUMS_INVALID', options: { editSums: (t) => `${t}${t.split('\n').find((l) => l.endsWith(LAST))}\n` } },
  { name: 'signed SHA256SUMS with CRLF', code: 'E_SUMS_INVALID', options: { editSums: (t) => t.replace(/\n/g, '\r\n') } },
  { name: 'signed SHA256SUMS with uppercase hex', code: 'E_SUMS_INVALID', options: { editSums: (t) => t.replace(/^[0-9a-f]{64}/gm, (h) => h.toUpperCase()) } },
  { name: 'signed SHA256SUMS with a short hash', code: 'E_SUMS_INVALID', options: { editSums: (t) => t.replace(/^([0-9a-f]{63})[0-9a-f]/m, '$1') } },
  { name: 'signed SHA256SUMS without the manifest line', code: 'E_SUMS_INVALID', options: { editSums: (t) => t.split('\n').filter((l) => !l.endsWith(`  ${MANIFEST_NAME}`)).join('\n') } },
  { name: 'signed SHA256SUMS in binary mode ("*")', code: 'E_SUMS_INVALID', options: { editSums: (t) => t.replace(/ {2}/g, ' *') } },
  { name: 'signed SHA256SUMS without a final newline', code: 'E_SUMS_INVALID', options: { editSums: (t) => t.replace(/\n$/, '') } },
  { name: 'signed SHA256SUMS that is not UTF-8', code: 'E_SUMS_INVALID', options: { editSums: (t) => `${t}${'0'.repeat(64)}  \udc80\n` } },
  // ---- signatures ----
  { name: 'genuine signature over a different SHA256SUMS', code: 'E_SIGNATURE_INVALID', options: { editSignature: () => otherSignature } },
  { name: 'signature by an untrusted key', code: 'E_SIGNATURE_UNTRUSTED', options: {} },
  { name: 'signature that is not OpenPGP', code: 'E_SIGNATURE_INVALID', options: { editSignature: () => 'hello, I am a signature\n' } },
  { name: 'empty signature', code: 'E_SIGNATURE_INVALID', options: { editSignature: () => '' } },
  { name: 'signature over the size limit', code: 'E_BUNDLE_MALFORMED', options: { editSignature: (s) => s + ' '.repeat(300 * 1024) }, message: /limit/ },
  // ---- a manifest that lies ----
  { name: 'signed manifest with an uppercase commit', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (m.repos[0]!.commit = COMMIT.toUpperCase())) },
  { name: 'signed manifest with a short commit', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (m.repos[0]!.commit = COMMIT.slice(0, 12))) },
  { name: 'signed manifest: revision is a commit other than the pinned one', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (m.repos[0]!.revision = 'f'.repeat(40))) },
  {
    name: 'signed manifest: LFS etag is not the sha256',
    code: 'E_MANIFEST_INVALID',
    options: manifestEdit((m) => void (m.repos[0]!.files.find((f) => f.lfs)!.etag = 'e'.repeat(64))),
  },
  {
    name: 'signed manifest: git etag is not the content\'s blob id',
    code: 'E_HASH_MISMATCH',
    options: manifestEdit((m) => {
      const file = m.repos[0]!.files.find((f) => !f.lfs)!;
      file.etag = file.blobId = 'f'.repeat(40);
    }),
  },
  { name: 'signed manifest: size one byte more than the file', code: 'E_SIZE_MISMATCH', options: manifestEdit((m) => void (m.repos[0]!.files.find((f) => f.lfs)!.size += 1)) },
  { name: 'signed manifest: sha256 of other content (SHA256SUMS agrees)', code: 'E_HASH_MISMATCH', options: manifestEdit((m) => {
      const file = m.repos[0]!.files.find((f) => f.lfs)!;
      file.sha256 = file.etag = 'd'.repeat(64);
    }) },
  { name: 'signed manifest: negative size', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (firstFile(m).size = -1)) },
  { name: 'signed manifest: newer format version', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (m.formatVersion = 99)) },
  { name: 'signed manifest: unknown property', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void Object.assign(m, { postInstall: 'rm -rf /' })) },
  // ---- repo ids and revisions that are path tricks ----
  { name: 'repo id "../x"', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (m.repos[0]!.id = '../x')) },
  { name: 'repo id "a/b/c"', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (m.repos[0]!.id = 'a/b/c')) },
  { name: 'repo id with "--" (another repo\'s folder)', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (m.repos[0]!.id = 'acme--tiny')) },
  { name: 'repo id "/abs"', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (m.repos[0]!.id = '/abs')) },
  { name: 'revision "refs/../../x"', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (m.repos[0]!.revision = 'refs/../../x')) },
  { name: 'revision "../../../blobs/x"', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (m.repos[0]!.revision = '../../../blobs/x')) },
  { name: 'revision "/etc/passwd"', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (m.repos[0]!.revision = '/etc/passwd')) },
  { name: 'revision "main.lock"', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void (m.repos[0]!.revision = 'main.lock')) },
  { name: 'repo type "space"', code: 'E_MANIFEST_INVALID', options: manifestEdit((m) => void ((m.repos[0] as { type: string }).type = 'space')) },
];

async function residentCache(dir: string): Promise<string> {
  const cache = join(dir, 'hub');
  const path = join(dir, 'resident.tar');
  await writeFile(path, (await buildBundle({ repos: [RESIDENT], signer: key.signer })).bytes);
  await importBundle({ bundlePath: path, trustedKeys: key.trustedKeys, cacheDir: cache, handleSignals: false });
  return cache;
}

async function expectRejected(bytes: Buffer, code: ErrorCode, message?: RegExp): Promise<void> {
  const dir = await tmp();
  const cache = await residentCache(dir);
  const before = formatTree(await snapshotTree(cache, { mtimes: true }));
  const bundle = join(dir, 'hostile.airlock.tar');
  await writeFile(bundle, bytes);
  try {
    await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache, handleSignals: false });
    assert.fail(`expected ${code}, but the import succeeded`);
  } catch (error) {
    assert.ok(isAirlockError(error), `expected an AirlockError ${code}, got ${String(error)}`);
    assert.equal(error.code, code, `expected ${code}, got ${error.code}: ${error.message}`);
    if (message) assert.match(error.message, message);
  }
  assert.equal(formatTree(await snapshotTree(cache, { mtimes: true })), before, 'the cache changed');
  assert.deepEqual(await stagingLeftovers(cache), [], 'staging left behind');
  // hub.airlock: the resident import's evidence record (src/cache/evidence.ts), untouched by the hostile one
  assert.deepEqual((await readdir(dir)).sort(), ['hostile.airlock.tar', 'hub', 'hub.airlock', 'resident.tar'], 'something was written next to the cache');
  await assert.rejects(stat('/tmp/airlock-hostile-escape.txt'));
  await assert.rejects(stat(join(tmpdir(), 'escape.txt')));
}

describe('hostile bundle corpus: rejected with the right code, cache byte-for-byte unchanged', () => {
  test(`the corpus has at least 40 cases (${cases.length})`, () => {
    assert.ok(cases.length >= 40);
    assert.equal(new Set(cases.map((c) => c.name)).size, cases.length, 'case names are unique');
  });
  for (const c of cases) {
    test(`${c.name} → ${c.code}`, async () => {
      const options: BuildOptions = { repos: [TINY], signer: key.signer, ...c.options };
      if (c.code === 'E_SIGNATURE_UNTRUSTED') options.signer = mallory.signer;
      const built = await buildBundle(options);
      await expectRejected(c.raw ? c.raw(built.bytes) : built.bytes, c.code, c.message);
    });
  }
});

describe('hostile, but harmless: accepted exactly as signed', () => {
  test('a signed repo with 0 files: only its snapshot folder and ref appear; nothing else changes', async () => {
    const dir = await tmp();
    const cache = await residentCache(dir);
    const before = await snapshotTree(cache, { mtimes: true });
    const empty: BuilderRepo = { id: 'acme/empty', revision: 'main', files: [] };
    const bundle = join(dir, 'empty.tar');
    await writeFile(bundle, (await buildBundle({ repos: [empty], signer: key.signer })).bytes);
    await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache, handleSignals: false });
    const after = await snapshotTree(cache, { mtimes: true });
    const added = after!.filter((e) => !before!.some((b) => b.path === e.path)).map((e) => `${e.type} ${e.path}`);
    assert.deepEqual(added, [
      'dir models--acme--empty',
      'dir models--acme--empty/blobs',
      'dir models--acme--empty/refs',
      'file models--acme--empty/refs/main',
      'dir models--acme--empty/snapshots',
      `dir models--acme--empty/snapshots/${commitOf(empty)}`,
    ]);
    // everything that was there is untouched
    assert.equal(formatTree(after!.filter((e) => before!.some((b) => b.path === e.path) && e.type !== 'dir')), formatTree(before!.filter((e) => e.type !== 'dir')));
    assert.deepEqual(await stagingLeftovers(cache), []);
  });

  test('zero padding after the end-of-archive marker (a 10 KiB tar record) is accepted', async () => {
    const dir = await tmp();
    const cache = join(dir, 'hub');
    const built = await buildBundle({ repos: [TINY], signer: key.signer });
    const bundle = join(dir, 'padded.tar');
    await writeFile(bundle, Buffer.concat([built.bytes, Buffer.alloc(10240 - (built.bytes.byteLength % 10240))]));
    const result = await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache, handleSignals: false });
    assert.equal(result.files, TINY.files.length);
  });

  test('long and non-ASCII names (pax path records, as the writer makes them) still read', async () => {
    const dir = await tmp();
    const repo: BuilderRepo = { id: 'acme/long', files: [{ path: `${'d'.repeat(150)}/${'n'.repeat(120)}/é.txt`, data: 'x\n' }] };
    const bundle = join(dir, 'long.tar');
    await writeFile(bundle, (await buildBundle({ repos: [repo], signer: key.signer })).bytes);
    const result = await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: join(dir, 'hub'), handleSignals: false });
    assert.equal(result.files, 1);
  });

  // The per-file cost (≤ 2 ms/file) is a benchmark target (bench/run.ts), not a timed assertion: here,
  // every one of many tiny entries must land, each with its own content.
  test('2000 tiny signed files all import, each with its own content', async () => {
    const dir = await tmp();
    const repo: BuilderRepo = { id: 'acme/many', files: Array.from({ length: 2000 }, (_, i) => ({ path: `shard/${String(i).padStart(4, '0')}.txt`, data: `${i}\n` })) };
    const bundle = join(dir, 'many.tar');
    await writeFile(bundle, (await buildBundle({ repos: [repo], signer: key.signer })).bytes);
    const result = await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: join(dir, 'hub'), handleSignals: false });
    assert.equal(result.files, 2000);
    const snapshots = join(dir, 'hub', 'models--acme--many', 'snapshots');
    const [commit] = await readdir(snapshots);
    const shard = join(snapshots, commit!, 'shard');
    const names = (await readdir(shard)).sort();
    assert.equal(names.length, 2000);
    for (const i of [0, 1, 999, 1999]) assert.equal(await readFile(join(shard, names[i]!), 'utf8'), `${i}\n`);
  });

  test('a tar without the end-of-archive marker but every entry complete is accepted (everything was verified)', async () => {
    const dir = await tmp();
    const built = await buildBundle({ repos: [TINY], signer: key.signer });
    const bundle = join(dir, 'noend.tar');
    await writeFile(bundle, built.bytes.subarray(0, endOfArchive(built.bytes)));
    const result = await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: join(dir, 'hub'), handleSignals: false });
    assert.equal(result.files, TINY.files.length);
  });

  test('the raw header helper writes headers the layout walker (and tar-stream) read back', async () => {
    const tar = Buffer.concat([tarHeader({ name: 'a.txt', size: 2 }), padBlocks(Buffer.from('hi')), Buffer.alloc(1024)]);
    assert.deepEqual(tarLayout(tar).map((e) => [e.name, e.size]), [['a.txt', 2]]);
    assert.deepEqual((await packTar([{ name: 'a.txt', data: Buffer.from('hi') }])).subarray(0, 100), tar.subarray(0, 100));
  });
});
