/**
 * `airlock resign`: replace the bundle's signature, or add a second one, WITHOUT rewriting the payload.
 *
 * The three leading entries (SHA256SUMS, SHA256SUMS.asc, manifest.json) are the only ones that change;
 * since the signature's size changes, the leading entries are written anew and the payload region
 * (every byte after manifest.json, end-of-archive blocks included) is stream-copied unchanged into a
 * temp file next to the output, which is fsynced and renamed into place. SHA256SUMS and manifest.json
 * keep their exact bytes, so the new signature covers exactly what the old one did.
 *
 * Trust decision: by default the existing bundle must verify completely under the caller's trust
 * policy (its current signature against pinned keys, and every payload hash against SHA256SUMS) — a
 * re-signer vouches only for content a trusted key already vouched for. The check runs in the same
 * pass as the copy. `force` skips the existing signature (an unsigned bundle, or one whose old key was
 * lost or revoked) but still checks every payload hash against SHA256SUMS.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pack as tarPack, type Header } from 'tar-stream';
import { AirlockError, fsError } from '../errors.js';
import { tempPathFor, fsyncDir } from '../fs/atomic.js';
import type { Signer } from '../signing/sign.js';
import { mergeSignatures, readSignatures, verifyDetachedSignature, type TrustPolicy, type VerifiedSigner } from '../signing/verify.js';
import { ENTRY_MODE, ENTRY_MTIME, MANIFEST_NAME, MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, MAX_SUMS_BYTES, SIGNATURE_NAME, SUMS_NAME } from './format.js';
import { discardSink, readBundle } from './reader.js';

export interface ResignOptions {
  bundlePath: string;
  /** Default: replace `bundlePath` in place (atomically). */
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
}

interface RawEntry {
  name: string;
  data: Buffer;
}

interface Leading {
  sums: Buffer;
  signature: string | undefined;
  manifest: Buffer;
  /** Offset of the first byte after manifest.json's data (and padding). */
  payloadOffset: number;
}

function malformed(subject: string, message: string): AirlockError {
  return new AirlockError('E_BUNDLE_MALFORMED', `${subject}: ${message}`, {
    subject,
    hint: 'resign only rewrites bundles written by airlock; ask for a fresh copy',
  });
}

function cString(block: Buffer, start: number, length: number): string {
  const field = block.subarray(start, start + length);
  const end = field.indexOf(0);
  return field.subarray(0, end < 0 ? length : end).toString('utf8');
}

async function readAt(handle: FileHandle, offset: number, length: number, subject: string): Promise<Buffer> {
  const buffer = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await handle.read(buffer, got, length - got, offset + got);
    if (bytesRead === 0) throw malformed(subject, 'the tar is truncated in its leading entries');
    got += bytesRead;
  }
  return buffer;
}

/** One plain ustar file entry (what airlock's writer makes for the leading entries); anything else is refused. */
async function readRawEntry(handle: FileHandle, offset: number, cap: number, subject: string): Promise<{ entry: RawEntry; next: number }> {
  const block = await readAt(handle, offset, 512, subject);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  const recorded = parseInt(cString(block, 148, 8).trim() || 'x', 8);
  if (recorded !== sum) throw malformed(subject, `bad tar header checksum at offset ${offset}`);
  const type = String.fromCharCode(block[156]!);
  if (type !== '0' && type !== '\0') throw malformed(subject, `leading entry at offset ${offset} is not a plain file (type ${JSON.stringify(type)})`);
  const prefix = cString(block, 345, 155);
  const name = prefix === '' ? cString(block, 0, 100) : `${prefix}/${cString(block, 0, 100)}`;
  if ((block[124]! & 0x80) !== 0) throw malformed(subject, `${name} has a base-256 size; leading entries are small`);
  const size = parseInt(cString(block, 124, 12).trim() || '0', 8);
  if (!Number.isSafeInteger(size) || size < 0 || size > cap) throw malformed(subject, `${name} is ${size} bytes; the limit is ${cap}`);
  const data = await readAt(handle, offset + 512, size, subject);
  return { entry: { name, data }, next: offset + 512 + Math.ceil(size / 512) * 512 };
}

async function readLeadingRaw(handle: FileHandle, subject: string): Promise<Leading> {
  const first = await readRawEntry(handle, 0, MAX_SUMS_BYTES, subject);
  if (first.entry.name !== SUMS_NAME) throw malformed(subject, `expected ${SUMS_NAME} as the first entry, found ${JSON.stringify(first.entry.name)}`);
  const second = await readRawEntry(handle, first.next, Math.max(MAX_SIGNATURE_BYTES, MAX_MANIFEST_BYTES), subject);
  if (second.entry.name === MANIFEST_NAME) {
    return { sums: first.entry.data, signature: undefined, manifest: second.entry.data, payloadOffset: second.next };
  }
  if (second.entry.name !== SIGNATURE_NAME || second.entry.data.byteLength > MAX_SIGNATURE_BYTES) {
    throw malformed(subject, `expected ${SIGNATURE_NAME} or ${MANIFEST_NAME} after ${SUMS_NAME}, found ${JSON.stringify(second.entry.name)}`);
  }
  const third = await readRawEntry(handle, second.next, MAX_MANIFEST_BYTES, subject);
  if (third.entry.name !== MANIFEST_NAME) throw malformed(subject, `expected ${MANIFEST_NAME} after ${SIGNATURE_NAME}, found ${JSON.stringify(third.entry.name)}`);
  return { sums: first.entry.data, signature: second.entry.data.toString('utf8'), manifest: third.entry.data, payloadOffset: third.next };
}

function header(name: string, size: number): Header {
  return { name, size, mode: ENTRY_MODE, mtime: ENTRY_MTIME, uid: 0, gid: 0, uname: '', gname: '', type: 'file', linkname: '', devmajor: 0, devminor: 0 };
}

/** The leading entries as tar bytes, normalised like the writer's, WITHOUT the end-of-archive blocks. */
async function packLeading(entries: readonly RawEntry[]): Promise<Buffer> {
  const pack = tarPack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of pack) chunks.push(chunk as Buffer);
  })();
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => pack.entry(header(e.name, e.data.byteLength), e.data, (error) => (error ? reject(error) : resolve())));
  }
  pack.finalize();
  await collected;
  const all = Buffer.concat(chunks);
  const end = all.subarray(all.byteLength - 1024);
  if (end.byteLength !== 1024 || end.some((b) => b !== 0)) throw new AirlockError('E_INTERNAL', 'tar-stream did not end the archive with two zero blocks');
  return all.subarray(0, all.byteLength - 1024);
}

export async function resignBundle(options: ResignOptions): Promise<ResignResult> {
  const subject = options.bundlePath;
  const mode = options.mode ?? 'replace';
  const outPath = options.outPath ?? options.bundlePath;
  const inPlace = outPath === options.bundlePath;
  if (!options.force && options.trust === undefined) {
    throw new AirlockError('E_USAGE', 'resign needs the keys the existing signature must verify against', {
      hint: 'pass --trusted-keys (and pins), or --force to re-sign without checking the existing signature',
    });
  }
  if (!inPlace && !options.overwrite) {
    const exists = await stat(outPath).then(() => true, () => false);
    if (exists) throw new AirlockError('E_OUTPUT_EXISTS', `${outPath} already exists`, { subject: outPath, hint: 'pass --force-output, or another -o' });
  }

  let handle: FileHandle;
  try {
    handle = await open(options.bundlePath, 'r');
  } catch (error) {
    throw fsError(error, 'open', options.bundlePath);
  }
  let leading: Leading;
  let fileSize: number;
  try {
    fileSize = (await handle.stat()).size;
    leading = await readLeadingRaw(handle, subject);
  } finally {
    await handle.close();
  }

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
    const already = existing.some((p) =>
      own !== undefined ? own.getKeys(p.issuerKeyID).length > 0 : false,
    );
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

  const newLeading = await packLeading([
    { name: SUMS_NAME, data: leading.sums },
    { name: SIGNATURE_NAME, data: Buffer.from(signature, 'utf8') },
    { name: MANIFEST_NAME, data: leading.manifest },
  ]);
  // what the verifier reads: the OLD leading entries (its signature checked against the trust policy),
  // or with --force the leading entries without any signature (hashes only), then the payload region
  const verifyLeading = options.force
    ? await packLeading([
        { name: SUMS_NAME, data: leading.sums },
        { name: MANIFEST_NAME, data: leading.manifest },
      ])
    : await packLeading([
        { name: SUMS_NAME, data: leading.sums },
        { name: SIGNATURE_NAME, data: Buffer.from(leading.signature!, 'utf8') },
        { name: MANIFEST_NAME, data: leading.manifest },
      ]);

  const temp = tempPathFor(outPath);
  let out: FileHandle | undefined;
  const hash = createHash('sha256');
  let written = 0;
  let payloadBytes = 0;
  const writeAll = async (chunk: Buffer): Promise<void> => {
    let offset = 0;
    while (offset < chunk.byteLength) {
      const { bytesWritten } = await out!.write(chunk, offset, chunk.byteLength - offset);
      offset += bytesWritten;
    }
    hash.update(chunk);
    written += chunk.byteLength;
  };
  try {
    out = await open(temp, 'wx', 0o644).catch((error: unknown) => {
      throw fsError(error, 'create', temp);
    });
    await writeAll(newLeading).catch((error: unknown) => {
      throw fsError(error, 'write', temp);
    });
    const bundlePath = options.bundlePath;
    const payloadOffset = leading.payloadOffset;
    async function* copyAndFeed(): AsyncGenerator<Buffer> {
      yield verifyLeading;
      for await (const chunk of createReadStream(bundlePath, { start: payloadOffset, highWaterMark: 1024 * 1024 })) {
        const buffer = chunk as Buffer;
        await writeAll(buffer).catch((error: unknown) => {
          throw fsError(error, 'write', temp);
        });
        payloadBytes += buffer.byteLength;
        yield buffer;
      }
    }
    await readBundle(Readable.from(copyAndFeed()), {
      ...(options.force ? { trust: { keys: [] }, allowUnsigned: true } : { trust: options.trust! }),
      subject,
      sink: discardSink,
    });
    if (payloadBytes !== fileSize - payloadOffset) {
      throw malformed(subject, `copied ${payloadBytes} payload bytes, expected ${fileSize - payloadOffset} (the file changed while it was read?)`);
    }
    await out.sync();
    await out.close();
    out = undefined;
    await rename(temp, outPath).catch((error: unknown) => {
      throw fsError(error, 'rename into place', outPath);
    });
    await fsyncDir(outPath.replace(/[^/]*$/, '') || '.');
  } catch (error) {
    await out?.close().catch(() => undefined);
    await rm(temp, { force: true });
    throw error;
  }
  return {
    path: outPath,
    bundleSha256: hash.digest('hex'),
    bundleBytes: written,
    signer: { fingerprint: options.signer.fingerprint, userIds: options.signer.userIds },
    mode,
    previousSigners,
    signatures,
    payloadBytes,
  };
}
