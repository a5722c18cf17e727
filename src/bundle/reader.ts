/**
 * Reads a bundle as ONE sequential stream and verifies everything in that same pass, in the order
 * trust allows (STYLE habits 7, 8, 10):
 *
 *   1. `SHA256SUMS` (capped, buffered), 2. `SHA256SUMS.asc` (capped, buffered) — the signature is checked
 *      against the pinned keys right here, before another byte is read; 3. `manifest.json` (capped,
 *      buffered): its sha256 must be its SHA256SUMS line, and SHA256SUMS must list exactly the manifest and
 *      one line per promised payload file, with equal hashes;
 *   4. payload entries: only names the verified manifest promises (the allow-list), each once, regular
 *      files only, header size = manifest size (checked before any data is read); bytes are hashed
 *      (sha256, plus the git blob sha1 for non-LFS files) while they stream into the caller's sink;
 *   5. at the end, every promised entry must have been seen.
 *
 * Nothing the sink receives counts until `readBundle` resolves: the sink is told to finish an entry only
 * after its hashes matched, and the caller commits only after the whole stream verified.
 *
 * Every failure is an AirlockError naming the entry; tar-level errors become E_BUNDLE_MALFORMED. On
 * every error path the source and the tar parser are destroyed, so nothing hangs or leaks.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { extract as tarExtract, type Extract, type Header } from 'tar-stream';
import { AirlockError, fsError } from '../errors.js';
import { HASH_PIECE_BYTES, ParallelDigest } from '../integrity/parallel-digest.js';
import { parseSha256Sums, type SumsEntry } from '../integrity/sha256sums.js';
import { unsafeRelativePathReason } from '../fs/safe-path.js';
import { verifyDetachedSignature, type TrustedKey, type TrustPolicy, type VerifiedSigner } from '../signing/verify.js';
import {
  MANIFEST_NAME,
  MAX_MANIFEST_BYTES,
  MAX_SIGNATURE_BYTES,
  MAX_SUMS_BYTES,
  SIGNATURE_NAME,
  SUMS_NAME,
} from './format.js';
import { parseManifest, payloadEntries, type Manifest, type PayloadEntry } from './manifest.js';
import type { ReadPool } from './read-pool.js';
import { TarGuard, TarGuardError } from './tar-guard.js';

export type { PayloadEntry } from './manifest.js';

/** Where one payload entry's bytes go while they are being verified. */
export interface PayloadTarget {
  /**
   * Receives the next chunk. Its memory may be reused for later bytes of the bundle once the promise
   * settled (see ReadPool): whatever the target keeps longer, it must copy.
   */
  write(chunk: Buffer): Promise<void>;
  /** Every byte arrived and the size and hashes matched: make the bytes durable (fsync, close). */
  finish(): Promise<void>;
  /** The entry failed or the read was aborted: release and drop what was written. Must not throw. */
  abort(): Promise<void>;
}

/** Receives the payload of a bundle. `verify` discards it; `import` stages it. */
export interface PayloadSink {
  /** Called once, after the manifest was verified and before the first payload byte is read. */
  begin?(manifest: Manifest): Promise<void>;
  /** Called for each allowed payload entry (name, size already checked), before its bytes. */
  open(entry: PayloadEntry): Promise<PayloadTarget>;
}

const discardTarget: PayloadTarget = {
  write: async () => undefined,
  finish: async () => undefined,
  abort: async () => undefined,
};

/** A sink that hashes and drops everything (what `verify` uses: it writes nothing anywhere). */
export const discardSink: PayloadSink = {
  open: async () => discardTarget,
};

export interface ReadBundleOptions {
  /** Shorthand for `trust: { keys: trustedKeys }` (every key trusted, one signature required). */
  trustedKeys?: readonly TrustedKey[];
  /** Keys, pins and the number of signatures required; takes precedence over `trustedKeys`. */
  trust?: TrustPolicy;
  /** Accept a bundle without SHA256SUMS.asc. A signature that IS present is always checked. */
  allowUnsigned?: boolean;
  /** The bundle's path, for messages. */
  subject: string;
  sink: PayloadSink;
  /** Aborting destroys the streams; the read rejects with `signal.reason`. */
  signal?: AbortSignal;
  /**
   * Also compute the SHA-256 of the whole bundle stream (a second hash pass over every byte, on its
   * own thread). The payload is verified either way: every file against the signed SHA256SUMS.
   */
  bundleSha256?: boolean;
  /**
   * The reusable buffers `source` reads into (openBundle's `pool`): the reader releases them as the
   * sink finishes with each chunk. Without it the source allocates every buffer.
   */
  pool?: ReadPool;
}

export interface VerifiedBundle {
  manifest: Manifest;
  sums: SumsEntry[];
  signed: boolean;
  /** Empty for an unsigned bundle accepted with allowUnsigned. */
  signers: VerifiedSigner[];
  /** SHA-256 of the whole bundle file, as read; only when asked for (`bundleSha256`). */
  bundleSha256: string | undefined;
  bundleBytes: number;
  /** Payload files read and verified. */
  files: number;
  /** Payload bytes read and verified. */
  bytes: number;
}

/** What the leading entries say, before any signature check (for `inspect`). */
export interface BundleHead {
  manifest: Manifest;
  sums: SumsEntry[];
  sumsBytes: Buffer;
  /** The armored signature, when the bundle has one. */
  signature: string | undefined;
}

const READ_CHUNK = 1024 * 1024;
export { READ_CHUNK as BUNDLE_READ_CHUNK };

type Entry = Extract extends AsyncIterable<infer S> ? S : never;

function describeType(type: Header['type'] | null | undefined): string {
  switch (type) {
    case 'link':
      return 'a hard link';
    case 'symlink':
      return 'a symlink';
    case 'directory':
      return 'a directory';
    case 'block-device':
    case 'character-device':
      return 'a device';
    case 'fifo':
      return 'a FIFO';
    case 'contiguous-file':
      return 'a contiguous file';
    case 'file':
      return 'a regular file';
    default:
      return `an entry of unknown type ${JSON.stringify(type)}`;
  }
}

function malformed(subject: string, message: string, cause?: unknown): AirlockError {
  return new AirlockError('E_BUNDLE_MALFORMED', `${subject}: ${message}`, {
    subject,
    hint: 'the file is not a complete airlock bundle (damaged, truncated, or not made by airlock); ask for a fresh copy',
    ...(cause === undefined ? {} : { cause }),
  });
}

/**
 * One pass over the tar: a pump moves the source's bytes (hashed and counted on the way) into the
 * tar parser, and `next()` hands out entries one at a time. `abort()` tears everything down.
 */
class TarEntries {
  readonly #source: Readable;
  readonly #extract: Extract;
  readonly #iterator: AsyncIterator<Entry>;
  readonly #subject: string;
  /** Hashing off the main thread; undefined when only the head is read (nothing to hash). */
  readonly hashes: ParallelDigest | undefined;
  /** Sees every header block before tar-stream buffers anything for it (pax bombs, trailing data). */
  readonly #guard = new TarGuard();
  #bytes = 0;
  #stopped = false;
  #wake: (() => void) | undefined;
  /** The parser's own error: entry streams only see a generic "destroyed" when it fails. */
  #failure: Error | undefined;
  readonly #pumped: Promise<void>;
  /** Name of the last entry handed out, for messages about what comes after it. */
  lastName: string | undefined;

  constructor(source: Readable, subject: string, hashes: ParallelDigest | undefined) {
    this.#source = source;
    this.#subject = subject;
    this.hashes = hashes;
    this.#extract = tarExtract();
    // the iterator must listen before the first byte arrives
    this.#iterator = this.#extract[Symbol.asyncIterator]();
    const wake = (): void => this.#wakeUp();
    this.#extract.on('drain', wake);
    this.#extract.on('close', wake);
    this.#extract.on('error', (error: Error) => {
      this.#failure ??= error;
      wake();
    });
    this.#pumped = this.#pump();
  }

  get bytesRead(): number {
    return this.#bytes;
  }

  /** Only meaningful once the whole stream was read. */
  async sha256(): Promise<string> {
    if (this.hashes === undefined) throw new AirlockError('E_INTERNAL', 'the bundle hash was not computed');
    return this.hashes.bundleDigest();
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  async #pump(): Promise<void> {
    try {
      for await (const chunk of this.#source) {
        const buffer = chunk as Buffer;
        // pieces of at most 1 MiB: the ring slots and the parser's backpressure stay small
        for (let at = 0; at < buffer.byteLength; at += HASH_PIECE_BYTES) {
          if (this.#stopped || this.#extract.destroying) return;
          const piece = at === 0 && buffer.byteLength <= HASH_PIECE_BYTES ? buffer : buffer.subarray(at, at + HASH_PIECE_BYTES);
          // copied for the hashing threads BEFORE the parser sees it, so payload views can be found
          if (this.hashes !== undefined) await this.hashes.append(piece);
          if (this.#stopped || this.#extract.destroying) return;
          this.#bytes += piece.byteLength;
          try {
            this.#guard.push(piece);
          } catch (error) {
            if (!(error instanceof TarGuardError)) throw error;
            this.#extract.destroy(malformed(this.#subject, error.message, error));
            return;
          }
          if (!this.#extract.write(piece)) {
            await new Promise<void>((resolve) => {
              this.#wake = resolve;
            });
          }
        }
      }
      if (!this.#stopped && !this.#extract.destroying) this.#extract.end(undefined);
    } catch (error) {
      if (this.#stopped) return;
      // a hashing thread's failure keeps its code; else a read error of the bundle file itself (EIO, a vanished mount, …)
      this.#extract.destroy(error instanceof AirlockError ? error : fsError(error, 'read', this.#subject));
    }
  }

  /** The next entry, or undefined at the end of the tar. (Errors: see `failure`.) */
  async next(): Promise<Entry | undefined> {
    const result = await this.#iterator.next();
    if (result.done) return undefined;
    this.lastName = result.value.header.name;
    return result.value;
  }

  /**
   * The AirlockError to report for `error`: our own checks' errors as they are; a stream error is
   * replaced by the parser's (or the pump's) real reason once pending events have been delivered.
   */
  async failure(error: unknown): Promise<AirlockError> {
    if (error instanceof AirlockError) return error;
    await new Promise<void>((resolve) => setImmediate(resolve));
    const root = this.#failure ?? error;
    if (root instanceof AirlockError) return root;
    const where = this.lastName === undefined ? 'at the start' : `in or after entry ${this.lastName}`;
    const message = (root as Error | undefined)?.message ?? String(root);
    if (/unexpected end of data/i.test(message)) return malformed(this.#subject, `the tar is truncated (${where})`, root);
    return malformed(this.#subject, `not a valid tar (${where}): ${message}`, root);
  }

  /** Success: the tar ended; wait for the pump to have handed over its last bytes. */
  async finish(): Promise<void> {
    await this.#pumped;
  }

  /** Failure or early stop: destroy the parser and the source, and wait until the pump let go. */
  async abort(error?: AirlockError): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      this.#extract.destroy(error ?? null);
      this.#source.destroy();
      this.#wakeUp();
    }
    await this.#pumped;
  }
}

/** Copies a small leading entry whose size the header already said is within `cap` (a copy: read buffers are reused). */
async function readSmall(entry: Entry): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of entry) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function expectLeadingFile(entry: Entry | undefined, names: readonly string[], cap: number, subject: string, after: string | undefined): Entry {
  const expected = names.join(' or ');
  const where = after === undefined ? 'as the first entry' : `after ${after}`;
  if (entry === undefined) {
    throw malformed(subject, after === undefined ? 'the tar holds no entries' : `the tar ends ${where}; expected ${expected}`);
  }
  const { name, type, size } = entry.header;
  if (!names.includes(name)) throw malformed(subject, `expected ${expected} ${where}, found ${JSON.stringify(name)}`);
  if (type !== 'file') throw malformed(subject, `${name} is ${describeType(type)}; it must be a regular file`);
  if (!(size >= 0) || size > cap) throw malformed(subject, `${name} is ${size} bytes; the limit is ${cap} bytes`);
  return entry;
}

function decodeUtf8(bytes: Buffer, what: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (cause) {
    throw new AirlockError('E_SUMS_INVALID', `${what} is not valid UTF-8`, { subject: what, cause });
  }
}

/** The manifest's bytes must be exactly the ones SHA256SUMS (hence the signature) vouches for. */
export function checkManifestLine(sums: readonly SumsEntry[], manifestSha256: string): void {
  const line = sums.find((l) => l.path === MANIFEST_NAME);
  if (line === undefined) {
    throw new AirlockError('E_SUMS_INVALID', `${SUMS_NAME} has no line for ${MANIFEST_NAME}`, {
      subject: SUMS_NAME,
      hint: 'the bundle was not made by airlock or was altered; ask for a fresh copy',
    });
  }
  if (line.sha256 !== manifestSha256) {
    throw new AirlockError('E_HASH_MISMATCH', `${MANIFEST_NAME} does not match ${SUMS_NAME}: sha256 ${manifestSha256}, signed ${line.sha256}`, {
      subject: MANIFEST_NAME,
      hint: 'the manifest was changed after signing; do not use this bundle, ask for a fresh copy',
    });
  }
}

/**
 * Besides manifest.json, SHA256SUMS must list exactly one line per payload entry the manifest promises,
 * with the manifest's sha256 for it. Every disagreement is reported at once.
 */
export function checkSumsAgainstManifest(sums: readonly SumsEntry[], entries: ReadonlyMap<string, PayloadEntry>): void {
  const problems: Array<{ path: string; text: string; inSums: boolean }> = [];
  const listed = new Set<string>();
  for (const line of sums) {
    if (line.path === MANIFEST_NAME) continue;
    listed.add(line.path);
    const entry = entries.get(line.path);
    if (entry === undefined) problems.push({ path: line.path, text: `${SUMS_NAME} lists ${line.path}, which ${MANIFEST_NAME} does not`, inSums: true });
    else if (entry.file.sha256 !== line.sha256) {
      problems.push({ path: line.path, text: `${MANIFEST_NAME} gives ${line.path} sha256 ${entry.file.sha256}, ${SUMS_NAME} says ${line.sha256}`, inSums: false });
    }
  }
  for (const name of entries.keys()) {
    if (!listed.has(name)) problems.push({ path: name, text: `${MANIFEST_NAME} lists ${name}, which ${SUMS_NAME} does not`, inSums: false });
  }
  const first = problems[0];
  if (first === undefined) return;
  const shown = problems.slice(0, 10).map((p) => p.text);
  if (problems.length > shown.length) shown.push(`… and ${problems.length - shown.length} more`);
  throw new AirlockError(first.inSums ? 'E_SUMS_INVALID' : 'E_MANIFEST_INVALID', `${SUMS_NAME} and ${MANIFEST_NAME} disagree:\n  ${shown.join('\n  ')}`, {
    subject: first.path,
    hint: 'the bundle was not made by airlock or was altered; ask for a fresh copy',
  });
}

interface Leading {
  sumsBytes: Buffer;
  signature: string | undefined;
  manifestBytes: Buffer;
}

/**
 * Reads entries 1–3. When `onSignature` is given it runs right after entry 2 (before entry 3 is read);
 * when the bundle is unsigned, `onUnsigned` decides (it throws to refuse).
 */
async function readLeading(
  tar: TarEntries,
  subject: string,
  hooks: { onSignature?: (sums: Buffer, signature: string) => Promise<void>; onUnsigned?: () => void },
): Promise<Leading> {
  const sumsEntry = expectLeadingFile(await tar.next(), [SUMS_NAME], MAX_SUMS_BYTES, subject, undefined);
  const sumsBytes = await readSmall(sumsEntry);

  const second = expectLeadingFile(await tar.next(), [SIGNATURE_NAME, MANIFEST_NAME], Math.max(MAX_SIGNATURE_BYTES, MAX_MANIFEST_BYTES), subject, SUMS_NAME);
  let signature: string | undefined;
  let manifestEntry: Entry;
  if (second.header.name === SIGNATURE_NAME) {
    if (second.header.size > MAX_SIGNATURE_BYTES) {
      throw malformed(subject, `${SIGNATURE_NAME} is ${second.header.size} bytes; the limit is ${MAX_SIGNATURE_BYTES} bytes`);
    }
    signature = (await readSmall(second)).toString('utf8');
    // trust gate: nothing past the signature is read unless it verifies
    await hooks.onSignature?.(sumsBytes, signature);
    manifestEntry = expectLeadingFile(await tar.next(), [MANIFEST_NAME], MAX_MANIFEST_BYTES, subject, SIGNATURE_NAME);
  } else {
    hooks.onUnsigned?.();
    manifestEntry = second;
  }
  const manifestBytes = await readSmall(manifestEntry);
  return { sumsBytes, signature, manifestBytes };
}

function sumsAndManifest(leading: Leading): { sums: SumsEntry[]; manifest: Manifest; entries: Map<string, PayloadEntry> } {
  const sums = parseSha256Sums(decodeUtf8(leading.sumsBytes, SUMS_NAME), SUMS_NAME);
  // the manifest is parsed only once its bytes are known to be the ones SHA256SUMS lists
  checkManifestLine(sums, createHash('sha256').update(leading.manifestBytes).digest('hex'));
  const manifest = parseManifest(leading.manifestBytes, MANIFEST_NAME);
  const entries = payloadEntries(manifest);
  checkSumsAgainstManifest(sums, entries);
  return { sums, manifest, entries };
}

function unsignedError(subject: string): AirlockError {
  return new AirlockError('E_UNSIGNED', `${subject} is not signed (it has no ${SIGNATURE_NAME})`, {
    subject,
    hint: 'ask the sender for a signed bundle; pass --allow-unsigned only if you trust the way this file reached you',
  });
}

/** Sink failures (disk full, permissions) keep their own meaning: they are not tar errors. */
async function viaSink<T>(name: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw error instanceof AirlockError ? error : fsError(error, 'stage', name);
  }
}

/**
 * Streams one payload entry into the sink while a hashing thread hashes the same bytes, and checks it.
 * Writes are pipelined one deep: chunk N+1 is pulled from the parser (and queued for hashing) while
 * chunk N is being written; the sink still sees its writes one at a time, in order.
 */
async function readPayload(entry: Entry, expected: PayloadEntry, sink: PayloadSink, hashes: ParallelDigest, pool: ReadPool | undefined): Promise<number> {
  const { file, name } = expected;
  const target = await viaSink(name, () => sink.open(expected));
  let writing: Promise<void> | undefined;
  /** Stream offset just past the chunk being written, when it is a view of a pooled read buffer. */
  let writingEnd: number | undefined;
  const written = async (): Promise<void> => {
    await writing;
    writing = undefined;
    // the sink is done with that chunk (and, chunks coming in stream order, with every byte before it)
    if (writingEnd !== undefined) pool!.release(writingEnd);
  };
  try {
    const digester = hashes.file(file.size, file.lfs ? undefined : file.size);
    for await (const chunk of entry) {
      const buffer = chunk as Buffer;
      await digester.update(buffer);
      if (writing !== undefined) await written();
      const at = pool?.offsetOf(buffer);
      writingEnd = at === undefined ? undefined : at + buffer.byteLength;
      writing = viaSink(name, () => target.write(buffer));
      // awaited before the next write or at the end; this keeps a failure from counting as unhandled meanwhile
      writing.catch(() => undefined);
    }
    if (writing !== undefined) await written();
    const digests = await digester.digest();
    if (digests.size !== file.size) {
      throw new AirlockError('E_SIZE_MISMATCH', `${name} has ${digests.size} bytes; the manifest says ${file.size}`, { subject: name });
    }
    if (digests.sha256 !== file.sha256) {
      throw new AirlockError('E_HASH_MISMATCH', `${name} does not match the signed SHA256SUMS: sha256 ${digests.sha256}, expected ${file.sha256}`, {
        subject: name,
        hint: 'the file was changed after signing; do not use this bundle, ask for a fresh copy',
      });
    }
    if (!file.lfs && digests.gitSha1 !== file.etag) {
      throw new AirlockError('E_HASH_MISMATCH', `${name}: git blob id ${digests.gitSha1 ?? '?'} does not match its etag ${file.etag}`, {
        subject: name,
        hint: 'the manifest names this file by a blob id its content does not have; ask for a fresh export',
      });
    }
    // only now, with every byte hashed and matched, may the sink make the entry durable
    await viaSink(name, () => target.finish());
    return digests.size;
  } catch (error) {
    // a write still in flight must end before abort closes (and unlinks) what it writes to
    if (writing !== undefined) await writing.catch(() => undefined);
    await target.abort();
    throw error;
  }
}

function listFew(names: readonly string[], max = 3): string {
  const shown = names.slice(0, max).join(', ');
  return names.length > max ? `${shown} and ${names.length - max} more` : shown;
}

function onAbort(signal: AbortSignal | undefined, tar: TarEntries): () => void {
  if (signal === undefined) return () => undefined;
  const reasonError = (): AirlockError =>
    signal.reason instanceof AirlockError ? signal.reason : new AirlockError('E_INTERRUPTED', 'interrupted', { cause: signal.reason });
  const listener = (): void => void tar.abort(reasonError());
  if (signal.aborted) listener();
  else signal.addEventListener('abort', listener, { once: true });
  return () => signal.removeEventListener('abort', listener);
}

/** Reads and verifies a whole bundle from `source`, streaming payload into `options.sink`. */
export async function readBundle(source: Readable, options: ReadBundleOptions): Promise<VerifiedBundle> {
  const { subject, sink } = options;
  const hashes = new ParallelDigest({ wholeStream: options.bundleSha256 === true });
  const tar = new TarEntries(source, subject, hashes);
  const detach = onAbort(options.signal, tar);
  let clean = false;
  try {
    let signers: VerifiedSigner[] = [];
    const leading = await readLeading(tar, subject, {
      onSignature: async (sumsBytes, signature) => {
        try {
          signers = await verifyDetachedSignature(sumsBytes, signature, options.trust ?? { keys: options.trustedKeys ?? [] }, SIGNATURE_NAME);
        } catch (error) {
          if (error instanceof AirlockError) throw error;
          // openpgp can throw on packets readSignature let through: still a bad signature, not a bad tar
          throw new AirlockError('E_SIGNATURE_INVALID', `${SIGNATURE_NAME} cannot be checked: ${(error as Error).message}`, {
            subject: SIGNATURE_NAME,
            hint: 'the bundle was damaged or tampered with; ask for a fresh copy',
            cause: error,
          });
        }
      },
      onUnsigned: () => {
        if (!options.allowUnsigned) throw unsignedError(subject);
      },
    });
    const { sums, manifest, entries } = sumsAndManifest(leading);
    if (sink.begin !== undefined) await viaSink(subject, () => sink.begin!(manifest));

    const seen = new Set<string>([SUMS_NAME, MANIFEST_NAME, ...(leading.signature === undefined ? [] : [SIGNATURE_NAME])]);
    let files = 0;
    let bytes = 0;
    for (let entry = await tar.next(); entry !== undefined; entry = await tar.next()) {
      const { name, type, size } = entry.header;
      if (type !== 'file') {
        throw new AirlockError('E_ENTRY_TYPE', `${name} is ${describeType(type)}; bundles hold regular files only`, {
          subject: name,
          hint: 'links, directories and devices are refused: this bundle was not made by airlock or was altered',
        });
      }
      if (seen.has(name)) {
        throw new AirlockError('E_DUPLICATE_ENTRY', `${name} appears more than once in the bundle`, {
          subject: name,
          hint: 'a second copy of an entry could replace a verified one; this bundle was altered',
        });
      }
      if (name === SIGNATURE_NAME) throw malformed(subject, `${SIGNATURE_NAME} must come right after ${SUMS_NAME}, not after ${MANIFEST_NAME}`);
      const expected = entries.get(name);
      if (expected === undefined) {
        const reason = unsafeRelativePathReason(name);
        throw new AirlockError(reason === undefined ? 'E_UNEXPECTED_ENTRY' : 'E_UNSAFE_PATH', `${JSON.stringify(name)} is not an entry the signed manifest names${reason === undefined ? '' : ` (${reason})`}`, {
          subject: name,
          hint: 'only files listed in the signed SHA256SUMS are accepted; this bundle was not made by airlock or was altered',
        });
      }
      seen.add(name);
      if (size !== expected.file.size) {
        throw new AirlockError('E_SIZE_MISMATCH', `${name} is ${size} bytes in the tar; the signed manifest says ${expected.file.size}`, {
          subject: name,
          hint: 'the file was changed after signing; do not use this bundle, ask for a fresh copy',
        });
      }
      bytes += await readPayload(entry, expected, sink, hashes, options.pool);
      files += 1;
    }
    const missing = [...entries.keys()].filter((name) => !seen.has(name));
    if (missing.length > 0) {
      throw new AirlockError('E_MISSING_ENTRY', `${subject} lacks ${missing.length} file(s) its signed manifest lists: ${listFew(missing)}`, {
        subject: missing[0]!,
        hint: 'the bundle is incomplete (truncated or altered); ask for a fresh copy',
      });
    }
    await tar.finish();
    const bundleSha256 = options.bundleSha256 === true ? await tar.sha256() : undefined;
    clean = true;
    return {
      manifest,
      sums,
      signed: leading.signature !== undefined,
      signers,
      bundleSha256,
      bundleBytes: tar.bytesRead,
      files,
      bytes,
    };
  } catch (error) {
    const failure = await tar.failure(error);
    await tar.abort(failure);
    throw failure;
  } finally {
    detach();
    hashes.close(clean);
  }
}

/**
 * Reads only the three leading entries and checks that SHA256SUMS and manifest.json agree. Does NOT
 * check the signature (it needs no keys); it reads nothing past manifest.json.
 */
export async function readBundleHead(source: Readable, subject: string): Promise<BundleHead> {
  const tar = new TarEntries(source, subject, undefined);
  try {
    const leading = await readLeading(tar, subject, {});
    const { sums, manifest } = sumsAndManifest(leading);
    return { manifest, sums, sumsBytes: leading.sumsBytes, signature: leading.signature };
  } catch (error) {
    throw await tar.failure(error);
  } finally {
    await tar.abort();
  }
}
