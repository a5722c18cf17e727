/**
 * Bounded property-based fuzzing (fast-check) of the pure parsers that see hostile bytes first
 * (issue 7 §3): SHA256SUMS, manifest.json, the safe-path / repo-id / revision checks, the raw tar
 * header guard, and the whole stream reader over mutated bundles. Each property says what must hold
 * for EVERY input: only the documented AirlockError (never a TypeError, a hang or a crash), and what
 * is accepted is really safe. Bounded by run count and a time limit so CI stays fast; the seed is
 * printed on failure, and any input that ever failed is kept in test/regressions/ and replayed.
 */
import { describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import type { AirlockError} from '../../src/errors.ts';
import { isAirlockError } from '../../src/errors.ts';
import { formatSha256Sums, parseSha256Sums } from '../../src/integrity/sha256sums.ts';
import { parseManifest, payloadEntries } from '../../src/bundle/manifest.ts';
import { unsafeRelativePathReason, unsafeRepoIdReason, unsafeRevisionReason } from '../../src/fs/safe-path.ts';
import { TarGuard, TarGuardError, paxKeys } from '../../src/bundle/tar-guard.ts';
import { discardSink, readBundle } from '../../src/bundle/reader.ts';
import { buildBundle, makeManifest, makeTestKey, serializeManifest, type BuilderRepo } from '../support/bundle-builder.ts';

/** Per property: at most this many runs, and at most this long (the suite budget is ~20 s in all). */
const RUNS = Number(process.env['AIRLOCK_FUZZ_RUNS'] ?? 20000);
const LIMIT_MS = Number(process.env['AIRLOCK_FUZZ_MS'] ?? 2500);
const params = (runs = RUNS): fc.Parameters<unknown> => ({ numRuns: runs, interruptAfterTimeLimit: LIMIT_MS, markInterruptAsFailure: false });
const stats: string[] = [];
async function fuzz<T>(name: string, arb: fc.Arbitrary<T>, check: (value: T) => void | Promise<void>, runs = RUNS): Promise<void> {
  let count = 0;
  const started = Date.now();
  await fc.assert(
    fc.asyncProperty(arb, async (value) => {
      count += 1;
      await check(value);
    }),
    params(runs) as fc.Parameters<[T]>,
  );
  stats.push(`${name}: ${count} runs in ${Date.now() - started} ms`);
}

function onlyCode(error: unknown, code: AirlockError['code']): void {
  if (!isAirlockError(error)) throw new Error(`not an AirlockError: ${(error as Error)?.stack ?? String(error)}`);
  assert.equal(error.code, code, error.message);
}

const hex = (n: number): fc.Arbitrary<string> => fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: n, maxLength: n });
/** Path-ish strings: heavy on the characters that matter (/, ., \, :, NUL, unicode twins). */
const pathish = fc.string({
  unit: fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom('a', 'b', 'Z', '0', '_', '-') },
    { weight: 4, arbitrary: fc.constantFrom('/', '.', '..', '\\', ':', ' ', '\u0000', '\n', 'é', 'e\u0301', 'C:', '~', '*', '?') },
    { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 1 }) },
  ),
  maxLength: 24,
});

describe('fuzz: SHA256SUMS', () => {
  test('any text: a list of safe-looking lines, or E_SUMS_INVALID; never anything else', async () => {
    const line = fc.oneof(
      fc.tuple(hex(64), pathish).map(([h, p]) => `${h}  ${p}`),
      fc.string({ maxLength: 80 }),
      fc.tuple(hex(64), fc.constantFrom(' ', '  *', '   ', '\t'), pathish).map(([h, s, p]) => `${h}${s}${p}`),
    );
    const text = fc.oneof(
      fc.array(line, { maxLength: 6 }).map((ls) => ls.map((l) => `${l}\n`).join('')),
      fc.array(line, { maxLength: 6 }).map((ls) => ls.join('\r\n')),
      fc.string({ maxLength: 200 }),
    );
    await fuzz('SHA256SUMS parse', text, (t) => {
      let entries;
      try {
        entries = parseSha256Sums(t);
      } catch (error) {
        onlyCode(error, 'E_SUMS_INVALID');
        return;
      }
      assert.ok(t.endsWith('\n') && !t.includes('\r'));
      assert.equal(new Set(entries.map((e) => e.path)).size, entries.length, 'no duplicates accepted');
      for (const e of entries) assert.match(e.sha256, /^[0-9a-f]{64}$/);
      // what parses re-formats to the very same bytes (the signed text is canonical)
      assert.equal(formatSha256Sums(entries), t);
    });
  });

  test('format → parse round trip for valid entries', async () => {
    const safePath = pathish.filter((p) => unsafeRelativePathReason(p) === undefined);
    const entries = fc.uniqueArray(fc.record({ path: safePath, sha256: hex(64) }), { selector: (e) => e.path, maxLength: 8 });
    await fuzz('SHA256SUMS round trip', entries, (es) => {
      if (es.length === 0) return;
      const parsed = parseSha256Sums(formatSha256Sums(es));
      assert.deepEqual(new Map(parsed.map((e) => [e.path, e.sha256])), new Map(es.map((e) => [e.path, e.sha256])));
    });
  });
});

describe('fuzz: safe paths, repo ids, revisions', () => {
  test('a path accepted as safe stays inside any root, on POSIX and on Windows', async () => {
    await fuzz('safe-path', pathish, (p) => {
      if (unsafeRelativePathReason(p) !== undefined) return;
      const joined = posix.join('/root/x', p);
      assert.ok(joined.startsWith('/root/x/'), `${JSON.stringify(p)} escapes to ${joined}`);
      assert.equal(posix.normalize(p), p, `${JSON.stringify(p)} is not normalised`);
      assert.ok(!p.includes('\\') && !p.includes(':') && !p.includes('\u0000'));
      assert.equal(p, p.normalize('NFC'));
      for (const seg of p.split('/')) assert.ok(seg !== '' && seg !== '.' && seg !== '..' && !/^[. ]+$/.test(seg));
    }, RUNS * 3);
  });

  test('an accepted repo id is one folder name; an accepted revision stays under refs/', async () => {
    await fuzz('repo id / revision', fc.tuple(pathish, pathish), ([id, rev]) => {
      if (unsafeRepoIdReason(id) === undefined) {
        const folder = `models--${id.split('/').join('--')}`;
        assert.ok(!folder.includes('/') && !folder.includes('..') && folder.split('--').length <= 3, folder);
      }
      if (unsafeRevisionReason(rev) === undefined) {
        const ref = posix.join('/c/refs', rev);
        assert.ok(ref.startsWith('/c/refs/') && posix.normalize(ref) === ref && !rev.includes('..'), `${JSON.stringify(rev)} → ${ref}`);
      }
    }, RUNS * 3);
  });
});

describe('fuzz: manifest.json', () => {
  const base: BuilderRepo = { id: 'acme/tiny', files: [{ path: 'config.json', data: '{}' }, { path: 'a/b.bin', data: 'x', lfs: true }] };

  test('mutated manifests: valid ones name only safe entries; the rest are E_MANIFEST_INVALID', async () => {
    const value: fc.Arbitrary<unknown> = fc.oneof(pathish, fc.integer(), fc.double(), fc.boolean(), fc.constant(null), hex(40), hex(64), fc.constant(-1), fc.constant(2 ** 60));
    const field = fc.constantFrom('id', 'revision', 'commit', 'type', 'path', 'size', 'sha256', 'etag', 'blobId', 'lfs', 'formatVersion', 'createdAt', 'extra');
    const mutation = fc.array(fc.tuple(field, value), { maxLength: 4 });
    await fuzz('manifest mutate', mutation, (edits) => {
      const { manifest } = makeManifest([base]);
      const m = manifest as unknown as Record<string, unknown> & { repos: Array<Record<string, unknown> & { files: Array<Record<string, unknown>> }> };
      for (const [f, v] of edits) {
        if (f === 'formatVersion' || f === 'createdAt' || f === 'extra') m[f] = v;
        else if (['path', 'size', 'sha256', 'etag', 'blobId', 'lfs'].includes(f)) m.repos[0]!.files[0]![f] = v;
        else m.repos[0]![f] = v;
      }
      let parsed;
      try {
        parsed = parseManifest(serializeManifest(manifest));
        payloadEntries(parsed);
      } catch (error) {
        onlyCode(error, 'E_MANIFEST_INVALID');
        return;
      }
      for (const repo of parsed.repos) {
        assert.equal(unsafeRepoIdReason(repo.id), undefined);
        assert.equal(unsafeRevisionReason(repo.revision), undefined);
        assert.match(repo.commit, /^[0-9a-f]{40}$/);
        for (const file of repo.files) {
          assert.equal(unsafeRelativePathReason(file.path), undefined);
          assert.ok(Number.isSafeInteger(file.size) && file.size >= 0);
        }
      }
    });
  });

  test('arbitrary bytes and JSON values: E_MANIFEST_INVALID, never anything else', async () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      fc.json({ maxDepth: 4 }).map((j) => new TextEncoder().encode(j)),
      fc.string().map((s) => new TextEncoder().encode(`{"format":"model-airlock-bundle","repos":${s}}`)),
    );
    await fuzz('manifest bytes', bytes, (b) => {
      try {
        parseManifest(b);
      } catch (error) {
        onlyCode(error, 'E_MANIFEST_INVALID');
      }
    });
  });
});

describe('fuzz: tar header guard and the stream reader', () => {
  test('the guard never throws anything but TarGuardError, and chunking does not change its verdict', async () => {
    const block = fc.oneof(
      fc.uint8Array({ minLength: 512, maxLength: 512 }).map((b) => Buffer.from(b)),
      fc.constant(Buffer.alloc(512)),
      fc.tuple(fc.constantFrom('0', 'x', 'g', 'L', 'K', '5', '2', '1'), fc.nat({ max: 200_000 }), pathish).map(([flag, size, name]) => header(name || 'n', size, flag)),
    );
    const input = fc.tuple(fc.array(block, { maxLength: 6 }), fc.array(fc.nat({ max: 700 }), { maxLength: 8 }));
    await fuzz('tar guard', input, ([blocks, cuts]) => {
      const tar = Buffer.concat(blocks);
      const whole = verdict(tar, [tar.byteLength]);
      const chunked = verdict(tar, cuts.length === 0 ? [1] : cuts);
      assert.equal(chunked, whole);
    });
  });

  test('pax records: keys or a reason, never a throw', async () => {
    await fuzz('pax records', fc.uint8Array({ maxLength: 120 }), (b) => {
      const keys = paxKeys(b);
      assert.ok(typeof keys === 'string' || Array.isArray(keys));
    });
  });

  test('mutated real bundles (bytes flipped, cut, spliced, re-chunked): verified or an AirlockError, never a hang', async () => {
    const key = await makeTestKey();
    const built = await buildBundle({ repos: [{ id: 'acme/fz', files: [{ path: 'c.json', data: '{}\n' }, { path: 'w.bin', data: Buffer.alloc(700, 3), lfs: true }] }], signer: key.signer });
    const good = built.bytes;
    const mutation = fc.oneof(
      fc.array(fc.tuple(fc.nat({ max: good.byteLength - 1 }), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }).map((flips) => {
        const b = Buffer.from(good);
        for (const [at, x] of flips) b[at] = b[at]! ^ x;
        return b;
      }),
      fc.nat({ max: good.byteLength }).map((n) => good.subarray(0, n)),
      fc.tuple(fc.nat({ max: good.byteLength }), fc.uint8Array({ maxLength: 1100 })).map(([at, extra]) => Buffer.concat([good.subarray(0, at), extra, good.subarray(at)])),
    );
    await fuzz('readBundle mutated', fc.tuple(mutation, fc.integer({ min: 1, max: 4096 })), async ([bytes, chunk]) => {
      const chunks: Buffer[] = [];
      for (let i = 0; i < bytes.byteLength; i += chunk) chunks.push(bytes.subarray(i, i + chunk));
      const timer = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('readBundle hung')), 5000).unref());
      try {
        await Promise.race([readBundle(Readable.from(chunks), { trustedKeys: key.trustedKeys, subject: 'fuzz', sink: discardSink }), timer]);
      } catch (error) {
        if (!isAirlockError(error)) throw new Error(`not an AirlockError: ${(error as Error)?.stack ?? String(error)}`);
      }
    }, 3000);
  });
});

describe('fuzz: kept regression inputs', () => {
  test('every input in test/regressions/*.json replays without a crash', () => {
    const dir = new URL('../regressions/', import.meta.url);
    const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
    assert.ok(files.length > 0, 'test/regressions holds the kept inputs');
    for (const f of files) {
      const kept = JSON.parse(readFileSync(new URL(f, dir), 'utf8')) as { parser: string; input: string; expect: string };
      const bytes = Buffer.from(kept.input, 'base64');
      let outcome = 'ok';
      try {
        if (kept.parser === 'sha256sums') parseSha256Sums(bytes.toString('utf8'));
        else if (kept.parser === 'manifest') parseManifest(bytes);
        else if (kept.parser === 'tar-guard') new TarGuard().push(bytes);
        else throw new Error(`unknown parser ${kept.parser} in ${f}`);
      } catch (error) {
        outcome = isAirlockError(error) ? error.code : error instanceof TarGuardError ? 'TarGuardError' : `crash: ${String(error)}`;
      }
      assert.equal(outcome, kept.expect, f);
    }
  });

  test('fuzz statistics', () => {
    console.log(`# fuzz: ${stats.join('; ')}`);
  });
});

function header(name: string, size: number, flag: string): Buffer {
  const b = Buffer.alloc(512);
  b.write(name, 0, 100, 'utf8');
  b.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  b.write(flag, 156, 'latin1');
  b.write('ustar\u000000', 257, 'latin1');
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return b;
}

function verdict(tar: Buffer, cuts: readonly number[]): string {
  const guard = new TarGuard();
  let at = 0;
  let i = 0;
  try {
    while (at < tar.byteLength) {
      const n = Math.max(1, cuts[i++ % cuts.length]!);
      guard.push(tar.subarray(at, at + n));
      at += n;
    }
    return 'ok';
  } catch (error) {
    if (!(error instanceof TarGuardError)) throw error;
    return error.message;
  }
}
