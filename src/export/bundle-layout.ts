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
import { compareBytes } from '../bundle/format.js';
import { BLOCK, END_OF_ARCHIVE_BYTES, fileHeaderBytes, paddingAfter } from '../bundle/tar-header.js';

// made in src/bundle (resign rewrites it too); re-exported for the exporter
export { leadingBlock } from '../bundle/leading-block.js';

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
