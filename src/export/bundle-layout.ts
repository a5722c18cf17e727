/**
 * Where every byte of a bundle goes, decided before the first download: the listing gives every
 * payload file's name and size, so each tar header and each file's data have a fixed offset. The
 * leading entries (SHA256SUMS, its signature, manifest.json) depend on the hashes and come first, so
 * export reserves room for them up front — an estimate from the listing with placeholder hashes, a
 * budget for the signature, and some slack — and writes them last (docs/bundle-format.md).
 *
 * The leading entries rarely fill the reserve exactly. The gap is closed with a pax extended header
 * on manifest.json carrying a POSIX `comment` record (a record every tar ignores by definition) of
 * exactly the right length, so the tar stays one standard archive with the same three leading
 * entries. If the real leading entries do not fit (an unusually large signature), export falls back
 * to copying the payload behind a fresh leading block (exporter.ts).
 */
import { pack, type Header } from 'tar-stream';
import { compareBytes, ENTRY_MODE, ENTRY_MTIME, MANIFEST_NAME, SIGNATURE_NAME, SUMS_NAME } from '../bundle/format.js';
import { BLOCK, END_OF_ARCHIVE_BYTES, fileHeaderBytes, paddingAfter, paxRecord } from '../bundle/tar-header.js';
import { MAX_EXTENDED_HEADER_BYTES } from '../bundle/tar-guard.js';
import type { BundleLeading } from '../bundle/writer.js';

/** Room kept for the detached signature: an armored RSA-4096 signature is under 1 KiB. */
export const SIGNATURE_BUDGET = 4096;
/** Extra room for manifest fields only known after download (safetensors summaries). */
const MANIFEST_SLACK = 2048;

export interface LayoutFile {
  /** Tar entry name (`payload/…`). */
  name: string;
  size: number;
  /** What the listing says the content is (sha256 or git blob id): part of the resume fingerprint. */
  expected: string;
}

export interface LayoutEntry extends LayoutFile {
  /** Its header bytes (pax header included when the name needs one). */
  header: Buffer;
  headerAt: number;
  dataAt: number;
}

export interface BundleLayout {
  /** Bytes before the first payload header: the leading entries, padded to exactly this. */
  reserve: number;
  /** Payload entries in bundle order. */
  entries: LayoutEntry[];
  /** Size of the whole tar, end-of-archive marker included. */
  size: number;
}

/** Bytes a tar entry with `size` bytes of data takes (one header block, no pax). */
function entryBytes(size: number): number {
  return BLOCK + size + paddingAfter(size);
}

/**
 * The reserve for leading entries of these sizes (estimates): SHA256SUMS is exact (fixed-length hashes),
 * the manifest gets slack, the signature a budget; plus one pax block pair for the padding record.
 */
export function leadingReserve(sumsBytes: number, manifestEstimate: number, signed: boolean): number {
  return entryBytes(sumsBytes) + (signed ? entryBytes(SIGNATURE_BUDGET) : 0) + entryBytes(manifestEstimate + MANIFEST_SLACK) + 2 * BLOCK;
}

export function layOut(files: readonly LayoutFile[], reserve: number): BundleLayout {
  const ordered = [...files].sort((a, b) => compareBytes(a.name, b.name));
  const entries: LayoutEntry[] = [];
  let at = reserve;
  for (const f of ordered) {
    const header = fileHeaderBytes(f.name, f.size);
    entries.push({ ...f, header, headerAt: at, dataAt: at + header.length });
    at += header.length + f.size + paddingAfter(f.size);
  }
  return { reserve, entries, size: at + END_OF_ARCHIVE_BYTES };
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
