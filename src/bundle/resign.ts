/**
 * `airlock resign`: replace the bundle's signature, or add a second one, WITHOUT touching the payload.
 *
 * The three leading entries (SHA256SUMS, SHA256SUMS.asc, manifest.json) are the only ones that change.
 * Export writes them into a reserve closed by a pax `comment` record on manifest.json
 * (leading-block.ts); resign writes the new ones into the same reserve whenever they fit, so every
 * payload byte keeps its offset. Only if they do not fit (a much larger signature, or a bundle whose
 * leading block had no slack) do they go in front unpadded and the payload region moves as a whole.
 * SHA256SUMS and manifest.json keep their exact bytes, so the new signature covers exactly what the
 * old one did.
 *
 * A single tar is written to a temp file next to the output (the leading block, then the payload
 * region stream-copied unchanged), fsynced and renamed into place. Split volumes (NAME.tar.000, …)
 * keep their part size; only the parts whose bytes change (normally just the first) are written, under
 * temp names, and renamed over the old ones; then the parts index is written anew and signed by the new
 * key (the old key's signature cannot cover the changed first part). The old index is removed before
 * the first rename, so an interrupted resign leaves parts a reader verifies without the index
 * (parts-unindexed.ts) rather than an index that contradicts them.
 *
 * Trust decision: by default the existing bundle must verify completely under the caller's trust
 * policy (its current signature against pinned keys, and every payload hash against SHA256SUMS) — a
 * re-signer vouches only for content a trusted key already vouched for. The check reads the ORIGINAL
 * leading bytes and runs in the same pass as the copy. `force` skips the existing signature (an
 * unsigned bundle, or one whose old key was lost or revoked) but still checks every payload hash.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { Readable } from 'node:stream';
import { AirlockError, fsError } from '../errors.js';
import { fsyncDir, tempPathFor, writeFileAtomic } from '../fs/atomic.js';
import type { Signer } from '../signing/sign.js';
import { mergeSignatures, readSignatures, verifyDetachedSignature, type TrustPolicy, type VerifiedSigner } from '../signing/verify.js';
import { MANIFEST_NAME, MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, MAX_SUMS_BYTES, SIGNATURE_NAME, SUMS_NAME } from './format.js';
import { leadingBlock } from './leading-block.js';
import { firstPartPaths, formatPartsIndex, indexPathFor, parsePartsIndex, partCount, PARTS_FORMAT, partPath, splitBundleOf, type PartInfo, type PartsIndex } from './parts.js';
import { findParts } from './parts-unindexed.js';
import { discardSink, readBundle } from './reader.js';
import { MAX_EXTENDED_HEADER_BYTES } from './tar-guard.js';
import { BLOCK, paddingAfter } from './tar-header.js';

export interface ResignOptions {
  /** A single tar, or split volumes named by any part, the joined name (NAME.tar) or the parts index. */
  bundlePath: string;
  /** Default: replace `bundlePath` in place (atomically per file). For split volumes: the joined name. */
  outPath?: string;
  signer: Signer;
  /** 'replace' (default): the new signature alone; 'add': the existing signatures plus the new one. */
  mode?: 'replace' | 'add';
  /** Required unless `force`: what the existing signature must verify against. */
  trust?: TrustPolicy;
  /** Do not check the existing signature (hashes are still checked). */
  force?: boolean;
  /** Replace `outPath` if it exists (and is not the bundle itself). */
  overwrite?: boolean;
}

export interface ResignedParts {
  /** Parts written (the others were left untouched). */
  rewritten: number;
  count: number;
  /** The new parts index (signed by the new key). */
  index: string;
}

export interface ResignResult {
  path: string;
  bundleSha256: string;
  bundleBytes: number;
  signer: { fingerprint: string; userIds: readonly string[] };
  mode: 'replace' | 'add';
  /** Signers of the old signature that verified under the trust policy (empty with `force`). */
  previousSigners: VerifiedSigner[];
  /** Signature packets in the new SHA256SUMS.asc. */
  signatures: number;
  /** Payload bytes copied unchanged (everything after manifest.json). */
  payloadBytes: number;
  /** Whether the payload kept its offsets (the new leading entries fit the old reserve). */
  payloadInPlace: boolean;
  /** Split volumes only. */
  parts?: ResignedParts;
}

/** One file of the bundle on disk: the single tar, or one volume. */
interface Volume {
  path: string;
  size: number;
}

interface Located {
  /** The (joined) bundle name: NAME.tar. */
  bundlePath: string;
  volumes: Volume[];
  /** Split volumes: the part size to keep. */
  partSize: number | undefined;
}

interface Leading {
  sums: Buffer;
  signature: string | undefined;
  manifest: Buffer;
  /** Offset of the first byte after manifest.json's data (and padding): the start of the payload region. */
  payloadOffset: number;
}

function malformed(subject: string, message: string): AirlockError {
  return new AirlockError('E_BUNDLE_MALFORMED', `${subject}: ${message}`, {
    subject,
    hint: 'resign only rewrites bundles written by airlock; ask for a fresh copy',
  });
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

async function anyExists(paths: readonly string[]): Promise<boolean> {
  for (const path of paths) if (await exists(path)) return true;
  return false;
}

/** The single tar, or the parts (found on disk, in order) of split volumes. */
async function locate(path: string): Promise<Located> {
  const info = await stat(path).catch(() => undefined);
  if (info?.isDirectory()) {
    throw new AirlockError('E_USAGE', `${path} is a folder`, { subject: path, hint: 'name the bundle file (or the first part of a split bundle) itself' });
  }
  const split = splitBundleOf(path) ?? (info === undefined && (await anyExists(firstPartPaths(path))) ? path : undefined);
  if (split === undefined) {
    if (info === undefined) throw new AirlockError('E_NOT_FOUND', `bundle not found: ${path}`, { subject: path, hint: 'check the path' });
    return { bundlePath: path, volumes: [{ path, size: info.size }], partSize: undefined };
  }
  const found = await findParts(split);
  // keep the part size the export chose (the index says it; else the first of several parts is full)
  const indexBytes = await readFile(indexPathFor(split)).catch(() => undefined);
  const index = indexBytes === undefined ? undefined : parsePartsIndex(indexBytes, basename(indexPathFor(split)));
  return { bundlePath: split, volumes: found.map((p) => ({ path: p.path, size: p.size })), partSize: index?.partSize ?? found[0]!.size };
}

/** Reads `length` bytes at `offset` of the concatenated volumes. */
async function readAt(volumes: readonly Volume[], offset: number, length: number, subject: string): Promise<Buffer> {
  const out = Buffer.alloc(length);
  let got = 0;
  let start = 0;
  for (const v of volumes) {
    const end = start + v.size;
    if (got < length && offset + got < end && offset + got >= start) {
      const handle = await open(v.path, 'r').catch((error: unknown) => {
        throw fsError(error, 'open', v.path);
      });
      try {
        while (got < length && offset + got < end) {
          const want = Math.min(length - got, end - (offset + got));
          const { bytesRead } = await handle.read(out, got, want, offset + got - start);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
      } finally {
        await handle.close();
      }
    }
    start = end;
  }
  if (got < length) throw malformed(subject, 'the tar is truncated in its leading entries');
  return out;
}

function cString(block: Buffer, start: number, length: number): string {
  const field = block.subarray(start, start + length);
  const end = field.indexOf(0);
  return field.subarray(0, end < 0 ? length : end).toString('utf8');
}

/** Strict pax records; resign accepts only what the writer puts on a leading entry: `path` and `comment`. */
function paxRecords(data: Buffer, subject: string, offset: number): Map<string, string> {
  const records = new Map<string, string>();
  let at = 0;
  while (at < data.length) {
    const space = data.indexOf(32, at);
    const lenText = data.subarray(at, space < 0 ? at : space).toString('latin1');
    const len = Number(lenText);
    if (space < 0 || !/^[1-9][0-9]{0,8}$/.test(lenText) || at + len > data.length || data[at + len - 1] !== 10) {
      throw malformed(subject, `malformed pax header at offset ${offset}`);
    }
    const record = data.subarray(space + 1, at + len - 1).toString('utf8');
    const eq = record.indexOf('=');
    const key = record.slice(0, Math.max(0, eq));
    if (key !== 'path' && key !== 'comment') throw malformed(subject, `pax header at offset ${offset} has a ${JSON.stringify(key)} record; airlock writes only path and comment there`);
    if (records.has(key)) throw malformed(subject, `pax header at offset ${offset} has two ${key} records`);
    records.set(key, record.slice(eq + 1));
    at += len;
  }
  return records;
}

async function headerBlock(volumes: readonly Volume[], offset: number, subject: string): Promise<{ block: Buffer; type: string; size: number }> {
  const block = await readAt(volumes, offset, BLOCK, subject);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  const recorded = parseInt(cString(block, 148, 8).trim() || 'x', 8);
  if (recorded !== sum) throw malformed(subject, `bad tar header checksum at offset ${offset}`);
  if ((block[124]! & 0x80) !== 0) throw malformed(subject, `the entry at offset ${offset} has a base-256 size; leading entries are small`);
  const size = parseInt(cString(block, 124, 12).trim() || '0', 8);
  if (!Number.isSafeInteger(size) || size < 0) throw malformed(subject, `bad size in the tar header at offset ${offset}`);
  return { block, type: String.fromCharCode(block[156]!), size };
}

/**
 * One leading entry as airlock's writer makes it: a plain ustar file entry, optionally preceded by a
 * pax extended header carrying only `path` (a long name) and `comment` (the reserve's padding).
 */
async function readRawEntry(volumes: readonly Volume[], offset: number, cap: number, subject: string): Promise<{ name: string; data: Buffer; next: number }> {
  let at = offset;
  let header = await headerBlock(volumes, at, subject);
  let paxPath: string | undefined;
  if (header.type === 'x') {
    if (header.size > MAX_EXTENDED_HEADER_BYTES) throw malformed(subject, `the pax header at offset ${at} is ${header.size} bytes; the limit is ${MAX_EXTENDED_HEADER_BYTES}`);
    const records = paxRecords(await readAt(volumes, at + BLOCK, header.size, subject), subject, at);
    paxPath = records.get('path');
    at += BLOCK + header.size + paddingAfter(header.size);
    header = await headerBlock(volumes, at, subject);
  }
  if (header.type !== '0' && header.type !== '\0') throw malformed(subject, `leading entry at offset ${at} is not a plain file (type ${JSON.stringify(header.type)})`);
  const prefix = cString(header.block, 345, 155);
  const name = paxPath ?? (prefix === '' ? cString(header.block, 0, 100) : `${prefix}/${cString(header.block, 0, 100)}`);
  if (header.size > cap) throw malformed(subject, `${name} is ${header.size} bytes; the limit is ${cap}`);
  const data = await readAt(volumes, at + BLOCK, header.size, subject);
  return { name, data, next: at + BLOCK + header.size + paddingAfter(header.size) };
}

async function readLeadingRaw(volumes: readonly Volume[], subject: string): Promise<Leading> {
  const first = await readRawEntry(volumes, 0, MAX_SUMS_BYTES, subject);
  if (first.name !== SUMS_NAME) throw malformed(subject, `expected ${SUMS_NAME} as the first entry, found ${JSON.stringify(first.name)}`);
  const second = await readRawEntry(volumes, first.next, Math.max(MAX_SIGNATURE_BYTES, MAX_MANIFEST_BYTES), subject);
  if (second.name === MANIFEST_NAME) {
    return { sums: first.data, signature: undefined, manifest: second.data, payloadOffset: second.next };
  }
  if (second.name !== SIGNATURE_NAME || second.data.byteLength > MAX_SIGNATURE_BYTES) {
    throw malformed(subject, `expected ${SIGNATURE_NAME} or ${MANIFEST_NAME} after ${SUMS_NAME}, found ${JSON.stringify(second.name)}`);
  }
  const third = await readRawEntry(volumes, second.next, MAX_MANIFEST_BYTES, subject);
  if (third.name !== MANIFEST_NAME) throw malformed(subject, `expected ${MANIFEST_NAME} after ${SIGNATURE_NAME}, found ${JSON.stringify(third.name)}`);
  return { sums: first.data, signature: second.data.toString('utf8'), manifest: third.data, payloadOffset: third.next };
}

/** Bytes [from, end) of the concatenated volumes, in 1 MiB chunks. */
async function* readFrom(volumes: readonly Volume[], from: number): AsyncGenerator<Buffer> {
  let start = 0;
  for (const v of volumes) {
    const end = start + v.size;
    if (end > from && v.size > 0) {
      for await (const chunk of createReadStream(v.path, { start: Math.max(0, from - start), highWaterMark: 1024 * 1024 })) yield chunk as Buffer;
    }
    start = end;
  }
}

/** One output file: bytes [start, end) of the new tar; written to a temp file unless `keep` (unchanged on disk). */
interface Piece {
  start: number;
  end: number;
  path: string;
  keep: boolean;
  temp: string;
  hash: Hash;
  handle?: FileHandle;
}

/** Spreads the new tar's bytes over its pieces, hashing each and the whole; writes only the pieces that change. */
class Output {
  readonly pieces: Piece[];
  readonly whole = createHash('sha256');
  written = 0;

  constructor(pieces: Array<Omit<Piece, 'temp' | 'hash'>>) {
    this.pieces = pieces.map((p) => ({ ...p, temp: tempPathFor(p.path), hash: createHash('sha256') }));
  }

  async push(chunk: Buffer): Promise<void> {
    this.whole.update(chunk);
    let done = 0;
    while (done < chunk.byteLength) {
      const at = this.written;
      const piece = this.pieces.find((p) => at >= p.start && at < p.end);
      if (piece === undefined) throw new AirlockError('E_INTERNAL', `resign: byte ${at} is past the planned output`);
      const slice = chunk.subarray(done, done + Math.min(chunk.byteLength - done, piece.end - at));
      piece.hash.update(slice);
      if (!piece.keep) {
        piece.handle ??= await open(piece.temp, 'wx', 0o644).catch((error: unknown) => {
          throw fsError(error, 'create', piece.temp);
        });
        for (let off = 0; off < slice.byteLength; ) {
          const { bytesWritten } = await piece.handle.write(slice, off, slice.byteLength - off).catch((error: unknown) => {
            throw fsError(error, 'write', piece.temp);
          });
          off += bytesWritten;
        }
      }
      done += slice.byteLength;
      this.written += slice.byteLength;
      if (this.written === piece.end && piece.handle !== undefined) {
        await piece.handle.sync().catch((error: unknown) => {
          throw fsError(error, 'write', piece.temp);
        });
        await piece.handle.close();
        delete piece.handle;
      }
    }
  }

  async discard(): Promise<void> {
    for (const p of this.pieces) {
      await p.handle?.close().catch(() => undefined);
      if (!p.keep) await rm(p.temp, { force: true });
    }
  }
}

export async function resignBundle(options: ResignOptions): Promise<ResignResult> {
  const subject = options.bundlePath;
  const mode = options.mode ?? 'replace';
  if (!options.force && options.trust === undefined) {
    throw new AirlockError('E_USAGE', 'resign needs the keys the existing signature must verify against', {
      hint: 'pass --trusted-keys (and pins), or --force to re-sign without checking the existing signature',
    });
  }
  const source = await locate(options.bundlePath);
  const split = source.partSize !== undefined;
  const outPath = options.outPath === undefined || options.outPath === options.bundlePath ? source.bundlePath : (splitBundleOf(options.outPath) ?? options.outPath);
  const inPlace = outPath === source.bundlePath;
  if (!inPlace && !options.overwrite) {
    const taken = split ? [...firstPartPaths(outPath), indexPathFor(outPath)] : [outPath];
    for (const path of taken) {
      if (await exists(path)) throw new AirlockError('E_OUTPUT_EXISTS', `${path} already exists`, { subject: path, hint: 'pass --force-output, or another -o' });
    }
  }
  const fileSize = source.volumes.reduce((n, v) => n + v.size, 0);
  const leading = await readLeadingRaw(source.volumes, subject);

  // the existing signature, checked before anything is signed or written
  let previousSigners: VerifiedSigner[] = [];
  if (!options.force) {
    if (leading.signature === undefined) {
      throw new AirlockError('E_UNSIGNED', `${subject} is not signed; there is no signature to check before re-signing`, {
        subject,
        hint: 'pass --force to sign it anyway (every payload hash is still checked against SHA256SUMS)',
      });
    }
    previousSigners = await verifyDetachedSignature(leading.sums, leading.signature, options.trust!, SIGNATURE_NAME);
  }
  if (mode === 'add' && leading.signature !== undefined) {
    const own = options.signer.publicKey;
    const existing = (await readSignatures(leading.signature, SIGNATURE_NAME)).packets;
    const ownKeyId = options.signer.fingerprint.slice(-16).toLowerCase();
    const already = existing.some((p) => p.issuerKeyID.toHex() === ownKeyId || (own !== undefined && own.getKeys(p.issuerKeyID).length > 0));
    if (already) {
      throw new AirlockError('E_USAGE', `${subject} already carries a signature by ${options.signer.fingerprint}`, {
        subject,
        hint: 'a second signature must come from a different key (two-person rule); use resign without --add to replace it',
      });
    }
  }

  const fresh = await options.signer.sign(leading.sums);
  if (options.signer.publicKey !== undefined) {
    // never write a signature the signer's own key does not verify (text mode, another key, …)
    await verifyDetachedSignature(leading.sums, fresh, { keys: [{ key: options.signer.publicKey, source: 'the signing key' }] }, 'new signature');
  }
  const signature = mode === 'add' && leading.signature !== undefined ? await mergeSignatures([leading.signature, fresh]) : fresh;
  const signatures = (await readSignatures(signature)).packets.length;
  if (Buffer.byteLength(signature) > MAX_SIGNATURE_BYTES) throw new AirlockError('E_USAGE', `the new ${SIGNATURE_NAME} would exceed ${MAX_SIGNATURE_BYTES} bytes`);

  // into the old reserve when they fit (the payload keeps its offsets), else unpadded in front
  const next = { sums: leading.sums, signature, manifest: leading.manifest };
  const padded = await leadingBlock(next, leading.payloadOffset);
  const newLeading = padded ?? (await leadingBlock(next))!;
  const payloadInPlace = padded !== undefined;

  // what the verifier reads: the ORIGINAL leading bytes (their signature checked against the trust
  // policy), or with --force the leading entries without any signature (hashes only); then the payload
  const verifyLeading = options.force
    ? (await leadingBlock({ sums: leading.sums, signature: undefined, manifest: leading.manifest }))!
    : await readAt(source.volumes, 0, leading.payloadOffset, subject);

  const newSize = newLeading.byteLength + (fileSize - leading.payloadOffset);
  const planned: Array<Omit<Piece, 'temp' | 'hash'>> = [];
  if (!split) {
    planned.push({ start: 0, end: newSize, path: outPath, keep: false });
  } else {
    const partSize = source.partSize!;
    const count = partCount(newSize, partSize);
    // same cuts and the same count (so the same name width): a kept part keeps its name too
    const sameCuts = payloadInPlace && count === source.volumes.length && source.volumes.every((v, i) => v.size === Math.min(partSize, fileSize - i * partSize));
    for (let i = 0, at = 0; at < newSize; i++, at += partSize) {
      // a part wholly after the leading block, in place, with the same cuts: its bytes do not change
      const keep = inPlace && sameCuts && at >= newLeading.byteLength;
      planned.push({ start: at, end: Math.min(newSize, at + partSize), path: partPath(outPath, i, count), keep });
    }
  }
  const output = new Output(planned);
  let payloadBytes = 0;
  try {
    await output.push(newLeading);
    const volumes = source.volumes;
    const payloadOffset = leading.payloadOffset;
    async function* copyAndFeed(): AsyncGenerator<Buffer> {
      yield verifyLeading;
      for await (const buffer of readFrom(volumes, payloadOffset)) {
        await output.push(buffer);
        payloadBytes += buffer.byteLength;
        yield buffer;
      }
    }
    await readBundle(Readable.from(copyAndFeed()), {
      ...(options.force ? { trust: { keys: [] }, allowUnsigned: true } : { trust: options.trust! }),
      subject,
      sink: discardSink,
    });
    if (payloadBytes !== fileSize - payloadOffset || output.written !== newSize) {
      throw malformed(subject, `copied ${payloadBytes} payload bytes, expected ${fileSize - payloadOffset} (the file changed while it was read?)`);
    }
  } catch (error) {
    await output.discard();
    throw error;
  }

  const bundleSha256 = output.whole.digest('hex');
  let parts: ResignedParts | undefined;
  try {
    if (!split) {
      await rename(output.pieces[0]!.temp, outPath).catch((error: unknown) => {
        throw fsError(error, 'rename into place', outPath);
      });
    } else {
      const indexPath = indexPathFor(outPath);
      const index: PartsIndex = {
        format: PARTS_FORMAT,
        formatVersion: 1,
        bundle: basename(outPath),
        size: newSize,
        sha256: bundleSha256,
        partSize: source.partSize!,
        parts: output.pieces.map((p): PartInfo => ({ name: basename(p.path), size: p.end - p.start, sha256: p.hash.digest('hex') })),
      };
      const indexBytes = formatPartsIndex(index);
      const indexSignature = await options.signer.sign(indexBytes);
      // an index that contradicts the parts must never be left behind: remove it first (readers verify
      // parts without an index as one stream), then swap the changed parts in, then write the new one
      await rm(indexPath, { force: true });
      await rm(`${indexPath}.asc`, { force: true });
      for (const p of output.pieces) {
        if (p.keep) continue;
        await rename(p.temp, p.path).catch((error: unknown) => {
          throw fsError(error, 'rename into place', p.path);
        });
      }
      if (inPlace) {
        // the tar got shorter than before (an unpadded leading block replaced a padded one): drop the extra parts
        for (let i = output.pieces.length; i < source.volumes.length; i++) await rm(source.volumes[i]!.path, { force: true });
      }
      await writeFileAtomic(indexPath, indexBytes);
      await writeFileAtomic(`${indexPath}.asc`, Buffer.from(indexSignature, 'utf8'));
      parts = { rewritten: output.pieces.filter((p) => !p.keep).length, count: output.pieces.length, index: indexPath };
    }
    await fsyncDir(dirname(outPath));
  } catch (error) {
    await output.discard();
    throw error;
  }
  return {
    path: output.pieces[0]?.path ?? outPath,
    bundleSha256,
    bundleBytes: newSize,
    signer: { fingerprint: options.signer.fingerprint, userIds: options.signer.userIds },
    mode,
    previousSigners,
    signatures,
    payloadBytes,
    payloadInPlace,
    ...(parts === undefined ? {} : { parts }),
  };
}
