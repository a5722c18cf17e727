/**
 * Export lays a bundle out before downloading (src/bundle/tar-header.ts computes each entry's header
 * without its data). Those headers must be exactly what tar-stream writes for the same entry — the
 * library every other airlock tar comes from — or offsets would drift and readers would disagree.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { pack, type Header } from 'tar-stream';
import { ENTRY_MODE, ENTRY_MTIME } from '../../src/bundle/format.ts';
import { decodeTarNumber } from '../../src/bundle/tar-guard.ts';
import { fileHeaderBytes, paddingAfter, paxRecord } from '../../src/bundle/tar-header.ts';

function tarStreamEntry(name: string, size: number): Promise<Buffer> {
  const header: Header = { name, size, mode: ENTRY_MODE, mtime: ENTRY_MTIME, uid: 0, gid: 0, uname: '', gname: '', type: 'file', linkname: '', devmajor: 0, devminor: 0 };
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (c: unknown) => chunks.push(Buffer.from(c as Uint8Array)));
  return new Promise((resolve, reject) => {
    tar.on('end', () => resolve(Buffer.concat(chunks)));
    tar.on('error', reject);
    tar.entry(header, Buffer.alloc(size, 0x61), (error) => (error ? reject(error) : tar.finalize()));
  });
}

const segment = fc.stringMatching(/^[A-Za-z0-9._-]{1,60}$/);
const unicodeSegment = fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }).filter((s) => !s.includes('/') && !s.includes('\0'));

test('every header equals the bytes tar-stream packs for the same entry (ustar, prefix split, pax, unicode)', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.oneof(segment, unicodeSegment), { minLength: 1, maxLength: 8 }),
      fc.nat({ max: 3000 }),
      async (parts, size) => {
        const name = `payload/models/${parts.join('/')}`;
        const whole = await tarStreamEntry(name, size);
        const header = fileHeaderBytes(name, size);
        assert.deepEqual(whole.subarray(0, header.length), header, name);
        // header + data + padding + end-of-archive: nothing else in between
        assert.equal(whole.length, header.length + size + paddingAfter(size) + 1024);
      },
    ),
    { numRuns: 300 },
  );
});

test('sizes of 8 GiB and more use base-256, as tar-stream does', () => {
  const block = fileHeaderBytes('payload/big.bin', 9 * 1024 ** 3);
  assert.equal(block[124], 0x80);
  assert.equal(decodeTarNumber(block.subarray(124, 136)), 9 * 1024 ** 3); // what the reader's guard decodes
});

test('pax records count their own length digits', () => {
  for (const n of [0, 1, 5, 6, 7, 85, 86, 87, 990, 995, 996, 9990, 9995]) {
    const record = paxRecord('comment', 'x'.repeat(n));
    assert.equal(Number(record.slice(0, record.indexOf(' '))), Buffer.byteLength(record), `value of ${n} bytes`);
  }
});
