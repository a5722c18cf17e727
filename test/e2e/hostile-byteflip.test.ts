/**
 * Byte-flip sweep (issue 7 §2): single-bit flips at many offsets spread over a real bundle (every tar
 * header byte of every entry, the signature, SHA256SUMS, the manifest, payload data, padding and the
 * end-of-archive marker). Each flipped bundle is imported into a cache that already holds a repo.
 * Every flip must be either rejected (an AirlockError, cache byte-for-byte unchanged, no staging) or
 * proven harmless: accepted only if the cache then equals, byte for byte, the cache the untouched
 * bundle produces (e.g. a flip in tar padding, which nothing reads).
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isAirlockError } from '../../src/errors.ts';
import { importBundle } from '../../src/import/index.ts';
import { buildBundle, makeTestKey, type BuilderRepo, type TestKey } from '../support/bundle-builder.ts';
import { formatTree, snapshotTree, stagingLeftovers } from '../support/cache-snapshot.ts';
import { tarLayout } from '../support/tar-layout.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';

let dir: string;
let key: TestKey;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-flip-'));
  key = await makeTestKey();
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const REPO: BuilderRepo = {
  id: 'acme/flip',
  revision: 'main',
  files: [
    { path: 'config.json', data: '{"model_type": "llama", "hidden_size": 16}\n' },
    { path: 'sub/dir/vocab.txt', data: 'hello\nworld\n' },
    { path: 'model.safetensors', data: safetensorsOf(Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 7) & 0xff))), lfs: true },
  ],
};
const RESIDENT: BuilderRepo = { id: 'acme/flip', revision: 'v0', files: [{ path: 'config.json', data: '{"model_type": "llama", "hidden_size": 16}\n' }, { path: 'old.txt', data: 'old\n' }] };

/** Offsets to flip: every header byte, then a stride through data, padding and the end marker. */
function offsets(tar: Buffer): number[] {
  const out = new Set<number>();
  for (const entry of tarLayout(tar)) {
    // the whole 512-byte header (names, mode, size, checksum, magic, …)
    for (let i = 0; i < 512; i += 3) out.add(entry.headerOffset + i);
    // data: first and last bytes, a stride through the middle, and the padding after it
    const end = entry.dataOffset + entry.size;
    for (let i = entry.dataOffset; i < end; i += Math.max(1, Math.floor(entry.size / 40))) out.add(i);
    out.add(entry.dataOffset);
    if (entry.size > 0) out.add(end - 1);
    for (let i = end; i < entry.dataOffset + Math.ceil(entry.size / 512) * 512; i += 97) out.add(i);
  }
  for (let i = tar.byteLength - 1024; i < tar.byteLength; i += 101) out.add(i);
  out.add(tar.byteLength - 1);
  return [...out].filter((o) => o < tar.byteLength).sort((a, b) => a - b);
}

describe('byte-flip sweep over a real bundle', () => {
  test('every flip is rejected with the cache unchanged, or proven harmless', async () => {
    const built = await buildBundle({ repos: [REPO], signer: key.signer });
    const pristine = join(dir, 'pristine');
    const resident = join(dir, 'resident.tar');
    await writeFile(resident, (await buildBundle({ repos: [RESIDENT], signer: key.signer })).bytes);
    await importBundle({ bundlePath: resident, trustedKeys: key.trustedKeys, cacheDir: pristine, handleSignals: false });
    const pristineTree = formatTree(await snapshotTree(pristine));

    // what the untouched bundle makes of that cache: the only acceptable outcome of an accepted flip
    const good = join(dir, 'good');
    await cp(pristine, good, { recursive: true, verbatimSymlinks: true });
    const goodBundle = join(dir, 'good.tar');
    await writeFile(goodBundle, built.bytes);
    await importBundle({ bundlePath: goodBundle, trustedKeys: key.trustedKeys, cacheDir: good, handleSignals: false });
    const goodTree = formatTree(await snapshotTree(good));

    const cache = join(dir, 'cache');
    await cp(pristine, cache, { recursive: true, verbatimSymlinks: true });
    const bundle = join(dir, 'flipped.tar');
    const flips = offsets(built.bytes);
    const codes = new Map<string, number>();
    const harmless: number[] = [];
    for (const offset of flips) {
      const bytes = Buffer.from(built.bytes);
      bytes[offset] = bytes[offset]! ^ 0x01;
      await writeFile(bundle, bytes);
      try {
        await importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache, handleSignals: false });
      } catch (error) {
        assert.ok(isAirlockError(error), `flip at ${offset}: not an AirlockError: ${String(error)}`);
        codes.set(error.code, (codes.get(error.code) ?? 0) + 1);
        assert.equal(formatTree(await snapshotTree(cache)), pristineTree, `flip at ${offset} (${error.code}) changed the cache`);
        assert.deepEqual(await stagingLeftovers(cache), [], `flip at ${offset} left staging`);
        continue;
      }
      // accepted: must be exactly what the untouched bundle gives
      assert.equal(formatTree(await snapshotTree(cache)), goodTree, `flip at ${offset} was accepted with a different result`);
      harmless.push(offset);
      await rm(cache, { recursive: true, force: true });
      await cp(pristine, cache, { recursive: true, verbatimSymlinks: true });
    }
    // every harmless flip sits in tar padding (after an entry's data, inside its last block), or in the
    // ASCII armor of the signature where the decoder ignores it (whitespace, the optional CRC24 line):
    // the decoded signature packet is the same, and the cache equality above proved the outcome
    const layout = tarLayout(built.bytes);
    const sig = layout.find((e) => e.name === 'SHA256SUMS.asc')!;
    const armor = built.bytes.subarray(sig.dataOffset, sig.dataOffset + sig.size).toString('latin1');
    const crcLine = armor.lastIndexOf('\n=');
    const where = (offset: number): string => {
      if (layout.some((e) => offset >= e.dataOffset + e.size && offset < e.dataOffset + Math.ceil(e.size / 512) * 512)) return 'padding';
      const inSig = offset - sig.dataOffset;
      if (inSig >= 0 && inSig < sig.size) {
        if (/\s/.test(armor[inSig]!)) return 'armor whitespace';
        if (crcLine >= 0 && inSig > crcLine && inSig < armor.indexOf('\n', crcLine + 1)) return 'armor checksum';
      }
      return `unexplained (${offset})`;
    };
    const regions = new Map<string, number>();
    for (const offset of harmless) regions.set(where(offset), (regions.get(where(offset)) ?? 0) + 1);
    for (const region of regions.keys()) assert.ok(!region.startsWith('unexplained'), `an accepted flip outside padding and armor: ${region}`);
    assert.ok(flips.length >= 500, `only ${flips.length} flips`);
    const summary = [...codes].sort().map(([c, n]) => `${c}=${n}`).join(' ');

    console.log(`# byte-flip sweep: ${flips.length} flips over ${built.bytes.byteLength} bytes; ${flips.length - harmless.length} rejected (${summary}); ${harmless.length} harmless (${[...regions].map(([r, n]) => `${r}=${n}`).join(' ')})`);
  });
});
