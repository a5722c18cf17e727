/**
 * The tar header bytes of one bundle entry, computed without its data: export lays the whole bundle
 * out from the listing (every size is known before the first byte arrives) and downloads each file
 * straight into its place, so it needs each header's exact bytes and length up front.
 *
 * tar-stream (which writes the leading entries and every other tar airlock makes) only produces
 * headers while streaming an entry's data, and does not export its encoder; so this is its encoder
 * for the one kind of entry a bundle has (regular file, normalised metadata), byte for byte — a
 * property test (test/unit/tar-header.test.ts) packs random entries with tar-stream and compares.
 * A name that fits ustar's 100-byte name + 155-byte prefix (ASCII only) gets one 512-byte block;
 * any other gets a pax header carrying `path`, as tar-stream does.
 */
import { ENTRY_MODE, ENTRY_MTIME } from './format.js';

export const BLOCK = 512;
/** Two zero blocks: tar-stream's (and POSIX's) end-of-archive marker. */
export const END_OF_ARCHIVE_BYTES = 2 * BLOCK;

/** Bytes of padding after `size` bytes of data. */
export function paddingAfter(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

function octal(value: number, digits: number): string {
  const text = value.toString(8);
  if (text.length > digits) return `${'7'.repeat(digits)} `;
  return `${'0'.repeat(digits - text.length)}${text} `;
}

function writeSize(block: Buffer, size: number): void {
  if (size.toString(8).length > 11) {
    // base-256 for ≥ 8 GiB, as tar-stream and GNU tar write it
    block[124] = 0x80;
    let n = size;
    for (let i = 11; i > 0; i--) {
      block[124 + i] = n & 0xff;
      n = Math.floor(n / 0x100);
    }
  } else {
    block.write(octal(size, 11), 124, 'latin1');
  }
}

/** One ustar block, or undefined when the name does not fit ustar (then a pax header is needed). */
function ustarBlock(fullName: string, size: number, typeflag: number): Buffer | undefined {
  let name = fullName;
  let prefix = '';
  if (Buffer.byteLength(name) !== name.length) return undefined; // not ASCII
  while (Buffer.byteLength(name) > 100) {
    const i = name.indexOf('/');
    if (i === -1) return undefined;
    prefix += prefix ? `/${name.slice(0, i)}` : name.slice(0, i);
    name = name.slice(i + 1);
  }
  if (Buffer.byteLength(name) > 100 || Buffer.byteLength(prefix) > 155) return undefined;
  const block = Buffer.alloc(BLOCK);
  block.write(name, 0, 'utf8');
  block.write(octal(ENTRY_MODE & 0o7777, 6), 100, 'latin1');
  block.write(octal(0, 6), 108, 'latin1');
  block.write(octal(0, 6), 116, 'latin1');
  writeSize(block, size);
  block.write(octal(Math.trunc(ENTRY_MTIME.getTime() / 1000), 11), 136, 'latin1');
  block[156] = 48 + typeflag;
  block.write('ustar\u0000', 257, 'latin1');
  block.write('00', 263, 'latin1');
  block.write(octal(0, 6), 329, 'latin1');
  block.write(octal(0, 6), 337, 'latin1');
  if (prefix) block.write(prefix, 345, 'utf8');
  let sum = 8 * 32;
  for (let i = 0; i < 148; i++) sum += block[i]!;
  for (let i = 156; i < BLOCK; i++) sum += block[i]!;
  block.write(octal(sum, 6), 148, 'latin1');
  return block;
}

/** `<len> <key>=<value>\n`, where len counts the whole record including its own digits. */
export function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const len = Buffer.byteLength(body);
  let digits = Math.floor(Math.log10(len)) + 1;
  if (len + digits >= 10 ** digits) digits++;
  return `${len + digits}${body}`;
}

/** Everything before a file entry's data: one ustar block, or pax header + its data + ustar block. */
export function fileHeaderBytes(name: string, size: number): Buffer {
  const plain = ustarBlock(name, size, 0);
  if (plain !== undefined) return plain;
  const pax = Buffer.from(paxRecord('path', name), 'utf8');
  const paxHeader = ustarBlock('PaxHeader', pax.byteLength, 72) as Buffer;
  const header = ustarBlock('PaxHeader', size, 0) as Buffer;
  return Buffer.concat([paxHeader, pax, Buffer.alloc(paddingAfter(pax.byteLength)), header]);
}
