/**
 * The leading entries of a bundle (SHA256SUMS, its signature, manifest.json) as tar bytes, optionally
 * padded to exactly the space reserved for them: export writes them last into the reserve before the
 * payload (export/bundle-layout.ts), and resign writes them anew into the same reserve, so the payload
 * keeps its offsets. The gap is closed with a pax extended header on manifest.json carrying a POSIX
 * `comment` record of exactly the right length (docs/bundle-format.md).
 */
import { pack, type Header } from 'tar-stream';
import { ENTRY_MODE, ENTRY_MTIME, MANIFEST_NAME, SIGNATURE_NAME, SUMS_NAME } from './format.js';
import { BLOCK, END_OF_ARCHIVE_BYTES, paddingAfter, paxRecord } from './tar-header.js';
import { MAX_EXTENDED_HEADER_BYTES } from './tar-guard.js';
import type { BundleLeading } from './writer.js';

/** Bytes a tar entry with `size` bytes of data takes (one header block, no pax). */
function entryBytes(size: number): number {
  return BLOCK + size + paddingAfter(size);
}

function header(name: string, size: number, pax?: Record<string, string>): Header {
  return { name, size, mode: ENTRY_MODE, mtime: ENTRY_MTIME, uid: 0, gid: 0, uname: '', gname: '', type: 'file', linkname: '', devmajor: 0, devminor: 0, ...(pax ? { pax } : {}) };
}

async function packed(entries: Array<{ header: Header; data: Uint8Array }>): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (chunk: unknown) => chunks.push(Buffer.from(chunk as Uint8Array)));
  const ended = new Promise<void>((resolve, reject) => {
    tar.on('end', resolve);
    tar.on('error', reject);
  });
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => tar.entry(e.header, Buffer.from(e.data), (error) => (error ? reject(error) : resolve())));
  }
  tar.finalize();
  await ended;
  const all = Buffer.concat(chunks);
  return all.subarray(0, all.length - END_OF_ARCHIVE_BYTES); // the payload follows, not the end
}

const COMMENT = 'model-airlock: space reserved for the leading entries, written after the downloads';

/** A comment record value that makes the pax data exactly `bytes` long (with the path record). */
function paddingComment(bytes: number): string | undefined {
  const path = Buffer.byteLength(paxRecord('path', MANIFEST_NAME));
  for (let value = Math.max(0, bytes - path - 20); value <= bytes; value++) {
    const text = COMMENT.length <= value ? COMMENT.padEnd(value, '.') : '.'.repeat(value);
    const length = path + Buffer.byteLength(paxRecord('comment', text));
    if (length === bytes) return text;
    if (length > bytes) return undefined;
  }
  return undefined;
}

/**
 * The leading entries as tar bytes of exactly `reserve` length (default: no padding), or undefined
 * if they do not fit.
 * Made by tar-stream like every other tar airlock writes.
 */
export async function leadingBlock(leading: BundleLeading, reserve?: number): Promise<Buffer | undefined> {
  const entries = [{ header: header(SUMS_NAME, leading.sums.byteLength), data: leading.sums }];
  if (leading.signature !== undefined) {
    const signature = Buffer.from(leading.signature, 'utf8');
    entries.push({ header: header(SIGNATURE_NAME, signature.byteLength), data: signature });
  }
  const plain = [...entries, { header: header(MANIFEST_NAME, leading.manifest.byteLength), data: leading.manifest }];
  const used = plain.reduce((n, e) => n + entryBytes(e.data.byteLength), 0);
  const gap = (reserve ?? used) - used;
  if (gap === 0) return packed(plain);
  // a pax header block plus at least one block of records, within what readers accept
  if (gap < 2 * BLOCK || gap - BLOCK > MAX_EXTENDED_HEADER_BYTES) return undefined;
  const comment = paddingComment(gap - BLOCK);
  if (comment === undefined) return undefined;
  const bytes = await packed([...entries, { header: header(MANIFEST_NAME, leading.manifest.byteLength, { comment }), data: leading.manifest }]);
  return bytes.length === reserve ? bytes : undefined;
}
