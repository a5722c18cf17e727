/**
 * Finding split volumes without their index (bundle/parts-unindexed.ts): any suffix of 3 or more
 * digits (export may write fixed-width `.0000` names for 1000+ parts), numbered 0…n-1; a gap names the
 * missing part, a number claimed twice is refused, and the joined stream is the parts in numeric order.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findParts, readPartsWithoutIndex } from '../../src/bundle/parts-unindexed.ts';
import { rejectsWith } from '../support/assert-error.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-unindexed-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function media(name: string, parts: Record<string, string>): Promise<string> {
  const d = join(dir, name);
  await mkdir(d);
  for (const [file, data] of Object.entries(parts)) await writeFile(join(d, file), data);
  return join(d, 'b.tar');
}

test('parts in numeric order, whatever the width; other files ignored', async () => {
  const bundle = await media('widths', { 'b.tar.0010': 'k', 'b.tar.002': 'c', 'b.tar.000': 'a', 'b.tar.001': 'b', 'b.tar.003': 'd', 'b.tar.003.partial': 'x', 'b.parts.json.asc': 'x', 'c.tar.004': 'x', ...Object.fromEntries([4, 5, 6, 7, 8, 9].map((i) => [`b.tar.${String(i).padStart(4, '0')}`, String.fromCharCode(97 + i)])) });
  const parts = await findParts(bundle);
  assert.deepEqual(parts.map((p) => p.name), ['b.tar.000', 'b.tar.001', 'b.tar.002', 'b.tar.003', 'b.tar.0004', 'b.tar.0005', 'b.tar.0006', 'b.tar.0007', 'b.tar.0008', 'b.tar.0009', 'b.tar.0010']);
  assert.deepEqual(parts.map((p) => p.size), Array(11).fill(1));
  await rejectsWith(findParts(await media('gap3', { 'b.tar.000': 'a', 'b.tar.001': 'b', 'b.tar.002': 'c', 'b.tar.0004': 'e' })), 'E_MISSING_ENTRY', (e) => assert.match(e.message, /part b\.tar\.003 is missing/));
});

test('a gap names the missing part; a number claimed twice is refused; no parts at all is not found', async () => {
  await rejectsWith(findParts(await media('gap', { 'b.tar.000': 'a', 'b.tar.002': 'c' })), 'E_MISSING_ENTRY', (e) => assert.match(e.message, /part b\.tar\.001 is missing/));
  await rejectsWith(findParts(await media('twice', { 'b.tar.000': 'a', 'b.tar.001': 'b', 'b.tar.0001': 'b' })), 'E_DUPLICATE_ENTRY', (e) => assert.match(e.message, /b\.tar\.0001/));
  await rejectsWith(findParts(await media('none', { 'b.parts.json': '{}' })), 'E_NOT_FOUND');
  // a mistyped index name (`NAME.tar.parts.json`): the message names that index, not a `.tar.tar` bundle
  await rejectsWith(findParts(`${await media('typo', { 'b.tar.000': 'a' })}.tar`), 'E_NOT_FOUND', (e) => {
    assert.match(e.message, /neither its index b\.tar\.parts\.json nor parts b\.tar\.tar\.000/);
    assert.match(e.hint ?? '', /NAME\.parts\.json next to parts NAME\.tar\.000/);
  });
});

test('the stream is the parts joined; a failure downstream says the damaged part cannot be named', async () => {
  const bundle = await media('stream', { 'b.tar.000': 'hello ', 'b.tar.001': 'air', 'b.tar.002': 'lock' });
  const parts = await findParts(bundle);
  const stream = readPartsWithoutIndex(parts, { index: 'b.parts.json', reason: 'missing', parts: parts.length });
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  assert.equal(Buffer.concat(chunks).toString(), 'hello airlock');
  const { AirlockError } = await import('../../src/errors.ts');
  const explained = (await stream.diagnose(new AirlockError('E_HASH_MISMATCH', 'payload/x: sha256 differs', { subject: 'payload/x' }))) as InstanceType<typeof AirlockError>;
  assert.equal(explained.code, 'E_HASH_MISMATCH');
  assert.match(explained.message, /b\.parts\.json is missing, so which part is damaged cannot be told without the index/);
  const untouched = new AirlockError('E_SIGNATURE_UNTRUSTED', 'SHA256SUMS.asc: not trusted');
  assert.equal(await stream.diagnose(untouched), untouched, 'signature errors are not about parts');
});
