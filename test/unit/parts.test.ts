/**
 * Split volumes: parts cut at awkward places (inside a tar header, inside a file) concatenate to
 * exactly the single tar, and reading them back names a missing, truncated, swapped, corrupted or
 * extra part precisely — without modifying any part.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readFile, readdir, rename, rm, truncate, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { pack } from 'tar-stream';
import { writeTar } from '../../src/bundle/writer.ts';
import { checkPartsPresent, formatPartsIndex, indexPathFor, parsePartsIndex, parseSize, readParts, splitBundleOf, type PartsIndex } from '../../src/bundle/parts.ts';
import { isAirlockError } from '../../src/errors.ts';

let dir: string;
let files: Array<{ name: string; localPath: string; size: number }>;
const leading = { sums: Buffer.from('sums\n'), signature: 'sig', manifest: Buffer.from('{"m":1}\n') };

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-parts-'));
  files = [];
  for (const [name, size] of [['a.bin', 3000], ['b.bin', 10], ['c.bin', 70_000]] as const) {
    const localPath = join(dir, name);
    await writeFile(localPath, Buffer.alloc(size, name.charCodeAt(0)));
    files.push({ name: `payload/models/x/y/${'0'.repeat(40)}/${name}`, localPath, size });
  }
});
after(() => rm(dir, { recursive: true, force: true }));

/** A small bundle-shaped tar (leading entries, then the payload files), as a stream. */
function bundleTar(): AsyncIterable<Uint8Array> {
  const tar = pack();
  void (async () => {
    const add = (name: string, data: Buffer): Promise<void> =>
      new Promise((resolve, reject) => tar.entry({ name, size: data.length, mtime: new Date(0), mode: 0o644 }, data, (e) => (e ? reject(e) : resolve())));
    await add('SHA256SUMS', leading.sums);
    await add('SHA256SUMS.asc', Buffer.from(leading.signature));
    await add('manifest.json', leading.manifest);
    for (const f of files) await add(f.name, await readFile(f.localPath));
    tar.finalize();
  })();
  return tar as unknown as AsyncIterable<Uint8Array>;
}

async function splitInto(sub: string, splitSize: number): Promise<{ dir: string; bundle: string; index: PartsIndex }> {
  const out = join(dir, sub);
  await mkdir(out, { recursive: true });
  const bundle = join(out, 'm.airlock.tar');
  const written = await writeTar(bundle, bundleTar(), splitSize);
  assert.ok(written.parts);
  return { dir: out, bundle, index: written.parts };
}

test('sizes: binary and decimal units', () => {
  assert.equal(parseSize('3.9GiB'), Math.floor(3.9 * 1024 ** 3));
  assert.equal(parseSize('700MB'), 700_000_000);
  assert.equal(parseSize('512'), 512);
  assert.equal(parseSize('1 k'), 1000);
  for (const bad of ['', 'lots', '-1', '0', '3.9 GiBs']) assert.throws(() => parseSize(bad), (e) => isAirlockError(e, 'E_USAGE'));
});

test('names: the index never matches the parts glob, and a part or index leads back to the bundle', () => {
  assert.equal(indexPathFor('/m/x.airlock.tar'), '/m/x.airlock.parts.json');
  assert.equal(splitBundleOf('/m/x.airlock.tar.003'), '/m/x.airlock.tar');
  assert.equal(splitBundleOf('/m/x.airlock.parts.json'), '/m/x.airlock.tar');
  assert.equal(splitBundleOf('/m/x.airlock.tar'), undefined);
});

for (const size of [512, 700, 1000, 4096, 65_537]) {
  test(`split at ${size} bytes: cat of the parts is exactly the single tar, and reads back verified`, async () => {
    const single = join(dir, `single-${size}.tar`);
    const whole = await writeTar(single, bundleTar());
    const { dir: out, index } = await splitInto(`split-${size}`, size);
    const names = (await readdir(out)).filter((n) => /\.\d{3}$/.test(n)).sort();
    assert.deepEqual(names, index.parts.map((p) => p.name));
    assert.ok(index.parts.every((p, i) => (i < index.parts.length - 1 ? p.size === size : p.size <= size)));
    const joined = Buffer.concat(await Promise.all(names.map((n) => readFile(join(out, n)))));
    assert.ok(joined.equals(await readFile(single)), 'parts join to the single tar');
    assert.equal(index.sha256, whole.sha256);
    await checkPartsPresent(index, out);
    assert.ok((await buffer(readParts(index, out))).equals(joined));
  });
}

describe('damaged parts are named', () => {
  let index: PartsIndex;
  let out: string;
  before(async () => {
    ({ index, dir: out } = await splitInto('damaged', 4096));
    assert.ok(index.parts.length >= 5);
  });
  async function copyParts(name: string): Promise<string> {
    const d = join(dir, name);
    await mkdir(d);
    for (const p of index.parts) await copyFile(join(out, p.name), join(d, p.name));
    return d;
  }

  test('a flipped byte in part 3', async () => {
    const d = await copyParts('flip');
    const path = join(d, index.parts[3]!.name);
    const data = await readFile(path);
    data[100] = data[100]! ^ 1;
    await writeFile(path, data);
    await checkPartsPresent(index, d);
    await assert.rejects(buffer(readParts(index, d)), (e) => isAirlockError(e, 'E_HASH_MISMATCH') && e.message.includes(index.parts[3]!.name));
    assert.deepEqual(await readFile(path), data, 'the part is not modified');
  });

  test('a missing part', async () => {
    const d = await copyParts('missing');
    await rm(join(d, index.parts[2]!.name));
    await assert.rejects(checkPartsPresent(index, d), (e) => isAirlockError(e, 'E_MISSING_ENTRY') && e.message.includes(index.parts[2]!.name));
  });

  test('a truncated part', async () => {
    const d = await copyParts('truncated');
    await truncate(join(d, index.parts[1]!.name), 100);
    await assert.rejects(checkPartsPresent(index, d), (e) => isAirlockError(e, 'E_SIZE_MISMATCH') && e.message.includes(index.parts[1]!.name));
  });

  test('two parts swapped', async () => {
    const d = await copyParts('swapped');
    const [a, b] = [join(d, index.parts[1]!.name), join(d, index.parts[2]!.name)];
    await rename(a, `${a}.tmp`);
    await rename(b, a);
    await rename(`${a}.tmp`, b);
    await checkPartsPresent(index, d);
    await assert.rejects(buffer(readParts(index, d)), (e) => isAirlockError(e, 'E_HASH_MISMATCH') && e.message.includes(`holds the content of ${index.parts[2]!.name}`));
  });

  test('an extra part from somewhere else', async () => {
    const d = await copyParts('extra');
    await writeFile(join(d, `m.airlock.tar.${String(index.parts.length).padStart(3, '0')}`), 'stray');
    await assert.rejects(checkPartsPresent(index, d), (e) => isAirlockError(e, 'E_UNEXPECTED_ENTRY'));
  });

  test('the index parser is strict', () => {
    const good = formatPartsIndex(index);
    assert.deepEqual(parsePartsIndex(good, 'i'), index);
    const mutate = (f: (v: PartsIndex) => void) => {
      const v = JSON.parse(good.toString()) as PartsIndex;
      f(v);
      return Buffer.from(JSON.stringify(v));
    };
    for (const bad of [
      mutate((v) => { v.parts[1]!.name = 'other.tar.001'; }),
      mutate((v) => { v.size += 1; }),
      mutate((v) => { v.parts[0]!.size = 10; }),
      mutate((v) => { v.bundle = '../x.tar'; }),
      mutate((v) => { v.parts = []; }),
      Buffer.from('not json'),
    ]) {
      assert.throws(() => parsePartsIndex(bad, 'i'), (e) => isAirlockError(e, 'E_BUNDLE_MALFORMED'));
    }
  });
});
