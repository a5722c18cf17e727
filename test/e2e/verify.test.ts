/**
 * verifyBundle (every check, writes nothing), inspectBundle (no keys, signature not checked) and the
 * reader's contract with its sink: what is read in which order, and that it never hangs.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { isAirlockError, type ErrorCode } from '../../src/errors.ts';
import { inspectBundle, verifyBundle } from '../../src/import/index.ts';
import { readBundle, type PayloadSink } from '../../src/bundle/reader.ts';
import { MANIFEST_NAME, SIGNATURE_NAME, SUMS_NAME } from '../../src/bundle/format.ts';
import { sha256Hex } from '../../src/integrity/digest.ts';
import { buildBundle, commitOf, entryName, makeTestKey, tamper, writeBundleFile, type BuildOptions, type BuilderRepo, type TestKey } from '../support/bundle-builder.ts';
import { formatTree, snapshotTree } from '../support/cache-snapshot.ts';

const dirs: string[] = [];
async function tmp(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-verify-'));
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

const TINY: BuilderRepo = {
  id: 'acme/tiny',
  files: [
    { path: 'config.json', data: '{"a": 1}\n' },
    { path: 'model.safetensors', data: Buffer.alloc(70_000, 1), lfs: true },
    { path: 'z/last.txt', data: 'last\n' },
  ],
};
const DS: BuilderRepo = { type: 'dataset', id: 'acme/ds', revision: 'v1', files: [{ path: 'a.csv', data: 'x\n' }] };

async function bundleAt(dir: string, options: Partial<BuildOptions> = {}): Promise<string> {
  const path = join(dir, `b-${Math.random().toString(16).slice(2)}.airlock.tar`);
  await writeBundleFile(path, { repos: [TINY, DS], signer: key.signer, ...options });
  return path;
}

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    assert.ok(isAirlockError(error), `expected AirlockError ${code}, got ${String(error)}`);
    assert.equal(error.code, code, `expected ${code}, got ${error.code}: ${error.message}`);
    return error;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

/** Rejects if `promise` has not settled within `ms` (a hang is a failure). */
function withinMs<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`did not settle within ${ms} ms (hang)`)), ms);
    }),
  ]);
}

describe('verifyBundle', () => {
  test('a good bundle: signer, bundle sha256 when asked, per-repo and total counts; writes nothing', async () => {
    const dir = await tmp();
    const bundle = await bundleAt(dir);
    const before = await snapshotTree(dir, { mtimes: true });
    const result = await verifyBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, bundleSha256: true });
    assert.equal(formatTree(await snapshotTree(dir, { mtimes: true })), formatTree(before));

    const bytes = await readFile(bundle);
    assert.equal(result.bundleSha256, sha256Hex(bytes));
    // the second hash pass is only made on request; the verdict is the same without it
    const plain = await verifyBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys });
    assert.equal(plain.bundleSha256, undefined);
    assert.deepEqual({ ...plain, bundleSha256: result.bundleSha256 }, result);
    assert.equal(result.bundleBytes, bytes.byteLength);
    assert.equal(result.signed, true);
    assert.deepEqual(result.signers.map((s) => s.fingerprint), [key.fingerprint]);
    assert.equal(result.files, 4);
    assert.equal(result.bytes, 9 + 70_000 + 5 + 2);
    assert.deepEqual(result.repos.map((r) => [r.type, r.id, r.revision, r.commit, r.files, r.bytes]), [
      ['dataset', 'acme/ds', 'v1', commitOf(DS), 1, 2],
      ['model', 'acme/tiny', 'main', commitOf(TINY), 3, 70_014],
    ]);
  });

  test('unsigned: refused by default, accepted with allowUnsigned (hashes still checked)', async () => {
    const dir = await tmp();
    const unsigned = await bundleAt(dir, { signer: undefined });
    const error = await rejectsWith(verifyBundle({ bundlePath: unsigned, trustedKeys: key.trustedKeys }), 'E_UNSIGNED');
    assert.match((error as { hint?: string }).hint ?? '', /--allow-unsigned/);
    const ok = await verifyBundle({ bundlePath: unsigned, trustedKeys: [], allowUnsigned: true });
    assert.equal(ok.signed, false);
    assert.deepEqual(ok.signers, []);
    const tampered = await bundleAt(dir, { signer: undefined, editEntries: tamper.flipByte(entryName(TINY, 'z/last.txt')) });
    await rejectsWith(verifyBundle({ bundlePath: tampered, trustedKeys: [], allowUnsigned: true }), 'E_HASH_MISMATCH');
  });

  const cases: Array<[string, ErrorCode, Partial<BuildOptions>]> = [
    ['flipped payload byte', 'E_HASH_MISMATCH', { editEntries: tamper.flipByte(entryName(TINY, 'model.safetensors')) }],
    ['flipped manifest byte', 'E_HASH_MISMATCH', { editEntries: tamper.flipByte(MANIFEST_NAME) }],
    ['flipped SHA256SUMS byte', 'E_SIGNATURE_INVALID', { editEntries: tamper.flipByte(SUMS_NAME) }],
    ['garbage signature', 'E_SIGNATURE_INVALID', { editSignature: () => 'not a signature' }],
    ['untrusted signer', 'E_SIGNATURE_UNTRUSTED', { signer: undefined }],
    ['extra entry', 'E_UNEXPECTED_ENTRY', { editEntries: tamper.add({ name: 'payload/models/acme/tiny/x', data: Buffer.from('x') }) }],
    ['missing entry', 'E_MISSING_ENTRY', { editEntries: tamper.remove(entryName(DS, 'a.csv')) }],
    ['symlink entry', 'E_ENTRY_TYPE', { editEntries: tamper.retype(entryName(TINY, 'config.json'), 'symlink', '../../../etc/passwd') }],
    ['oversized SHA256SUMS.asc', 'E_BUNDLE_MALFORMED', { editSignature: (s) => s + ' '.repeat(300 * 1024) }],
  ];
  for (const [name, code, options] of cases) {
    test(`${name} → ${code}`, async () => {
      const dir = await tmp();
      const built = name === 'untrusted signer' ? { ...options, signer: mallory.signer } : options;
      await rejectsWith(verifyBundle({ bundlePath: await bundleAt(dir, built), trustedKeys: key.trustedKeys }), code);
    });
  }

  test('the signature is checked before the manifest is even read', async () => {
    const dir = await tmp();
    // untrusted signer AND a broken manifest: the signature verdict must come first
    const bundle = await bundleAt(dir, { signer: mallory.signer, editEntries: tamper.setData(MANIFEST_NAME, Buffer.from('{')) });
    await rejectsWith(verifyBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys }), 'E_SIGNATURE_UNTRUSTED');
  });

  test('errors name the entry', async () => {
    const dir = await tmp();
    const target = entryName(TINY, 'config.json');
    const error = await rejectsWith(verifyBundle({ bundlePath: await bundleAt(dir, { editEntries: tamper.flipByte(target) }), trustedKeys: key.trustedKeys }), 'E_HASH_MISMATCH');
    assert.equal((error as { subject?: string }).subject, target);
    assert.match(error.message, /config\.json/);
  });

  test('a missing bundle → E_NOT_FOUND with a hint', async () => {
    const dir = await tmp();
    const error = await rejectsWith(verifyBundle({ bundlePath: join(dir, 'nope.tar'), trustedKeys: key.trustedKeys }), 'E_NOT_FOUND');
    assert.ok((error as { hint?: string }).hint);
  });

  test('truncated anywhere: always a clean rejection, never a hang', async () => {
    const dir = await tmp();
    const { bytes } = await buildBundle({ repos: [TINY, DS], signer: key.signer });
    const path = join(dir, 'cut.tar');
    for (let cut = 100; cut < bytes.byteLength; cut += 512 * 7) {
      await writeFile(path, bytes.subarray(0, cut));
      try {
        await withinMs(verifyBundle({ bundlePath: path, trustedKeys: key.trustedKeys }), 5000);
        assert.fail(`a bundle cut at ${cut} bytes verified`);
      } catch (error) {
        assert.ok(isAirlockError(error), `cut at ${cut}: ${String(error)}`);
        assert.ok(['E_BUNDLE_MALFORMED', 'E_MISSING_ENTRY'].includes(error.code), `cut at ${cut}: ${error.code} ${error.message}`);
      }
    }
  });
});

describe('readBundle and its sink', () => {
  test('begin before any payload; finish only for verified entries; abort for the failing one', async () => {
    const { bytes } = await buildBundle({ repos: [TINY], signer: key.signer, editEntries: tamper.flipByte(entryName(TINY, 'z/last.txt')) });
    const log: string[] = [];
    const sink: PayloadSink = {
      begin: async (manifest) => void log.push(`begin ${manifest.repos.length}`),
      open: async (entry) => {
        log.push(`open ${entry.file.path}`);
        let n = 0;
        return {
          write: async (chunk) => void (n += chunk.byteLength),
          finish: async () => void log.push(`finish ${entry.file.path} ${n}`),
          abort: async () => void log.push(`abort ${entry.file.path}`),
        };
      },
    };
    await rejectsWith(readBundle(Readable.from([bytes]), { trustedKeys: key.trustedKeys, subject: 'mem', sink }), 'E_HASH_MISMATCH');
    assert.deepEqual(log, [
      'begin 1',
      'open config.json',
      'finish config.json 9',
      'open model.safetensors',
      'finish model.safetensors 70000',
      'open z/last.txt',
      'abort z/last.txt',
    ]);
  });

  test('a bad signature stops the read before the sink is touched', async () => {
    const { bytes } = await buildBundle({ repos: [TINY], signer: mallory.signer });
    let touched = false;
    const sink: PayloadSink = {
      begin: async () => void (touched = true),
      open: async () => {
        touched = true;
        throw new Error('unreachable');
      },
    };
    await rejectsWith(readBundle(Readable.from([bytes]), { trustedKeys: key.trustedKeys, subject: 'mem', sink }), 'E_SIGNATURE_UNTRUSTED');
    assert.equal(touched, false);
  });

  test('a read error of the bundle itself → E_IO (not "malformed"), and no hang', async () => {
    const { bytes } = await buildBundle({ repos: [TINY], signer: key.signer });
    async function* failing(): AsyncGenerator<Buffer> {
      yield bytes.subarray(0, 4096);
      throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
    }
    await rejectsWith(withinMs(readBundle(Readable.from(failing()), { trustedKeys: key.trustedKeys, subject: 'mem', sink: { open: async () => ({ write: async () => undefined, finish: async () => undefined, abort: async () => undefined }) } }), 5000), 'E_IO');
  });

  test('a failing sink (disk full) keeps its own code', async () => {
    const { bytes } = await buildBundle({ repos: [TINY], signer: key.signer });
    const sink: PayloadSink = {
      open: async () => ({
        write: async () => {
          throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
        },
        finish: async () => undefined,
        abort: async () => undefined,
      }),
    };
    await rejectsWith(withinMs(readBundle(Readable.from([bytes]), { trustedKeys: key.trustedKeys, subject: 'mem', sink }), 5000), 'E_NO_SPACE');
  });

  test('many small chunks (1 byte at a time for the leading entries) read the same', async () => {
    const { bytes } = await buildBundle({ repos: [TINY], signer: key.signer });
    const chunks: Buffer[] = [...bytes.subarray(0, 3000)].map((b) => Buffer.from([b]));
    chunks.push(bytes.subarray(3000));
    const result = await readBundle(Readable.from(chunks), { trustedKeys: key.trustedKeys, subject: 'mem', bundleSha256: true, sink: { open: async () => ({ write: async () => undefined, finish: async () => undefined, abort: async () => undefined }) } });
    assert.equal(result.bundleSha256, sha256Hex(bytes));
    assert.equal(result.files, 3);
  });
});

describe('inspectBundle', () => {
  test('shows the manifest and the claimed signer without keys; says the signature was not checked', async () => {
    const dir = await tmp();
    const result = await inspectBundle(await bundleAt(dir, { signer: mallory.signer }));
    assert.equal(result.signed, true);
    assert.equal(result.signatureChecked, false);
    assert.deepEqual(result.signatureKeyIds, [mallory.fingerprint.slice(-16)]);
    assert.deepEqual(result.manifest.repos.map((r) => r.id), ['acme/ds', 'acme/tiny']);
    assert.equal(result.sums.length, 5);
  });

  test('unsigned bundles say so', async () => {
    const dir = await tmp();
    const result = await inspectBundle(await bundleAt(dir, { signer: undefined }));
    assert.equal(result.signed, false);
    assert.deepEqual(result.signatureKeyIds, []);
  });

  test('reads only the leading entries (a damaged payload does not matter)', async () => {
    const dir = await tmp();
    const path = await bundleAt(dir, { editEntries: tamper.flipByte(entryName(TINY, 'model.safetensors')) });
    const bytes = await readFile(path);
    await writeFile(path, bytes.subarray(0, 6000)); // and cut off most of it
    const result = await inspectBundle(path);
    assert.equal(result.manifest.repos.length, 2);
  });

  test('still checks that the manifest is the one SHA256SUMS lists', async () => {
    const dir = await tmp();
    await rejectsWith(inspectBundle(await bundleAt(dir, { editEntries: tamper.flipByte(MANIFEST_NAME) })), 'E_HASH_MISMATCH');
    await rejectsWith(inspectBundle(await bundleAt(dir, { editSums: (t) => t.split('\n').filter((l) => !l.endsWith('a.csv')).join('\n') })), 'E_MANIFEST_INVALID');
  });

  test('not a bundle / missing', async () => {
    const dir = await tmp();
    const path = join(dir, 'x.tar');
    await writeFile(path, 'hello');
    await rejectsWith(inspectBundle(path), 'E_BUNDLE_MALFORMED');
    await rejectsWith(inspectBundle(join(dir, 'missing.tar')), 'E_NOT_FOUND');
    await rejectsWith(inspectBundle(await bundleAt(dir, { editEntries: tamper.move(MANIFEST_NAME, 0) })), 'E_BUNDLE_MALFORMED');
    // a signature moved behind the manifest reads as an unsigned bundle (verify/import then refuse it)
    assert.equal((await inspectBundle(await bundleAt(dir, { editEntries: tamper.move(SIGNATURE_NAME, -1) }))).signed, false);
  });
});
