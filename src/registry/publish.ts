/**
 * `airlock publish`: a verified bundle → one ModelPack artifact per repo in an OCI registry.
 *
 * 1. The leading entries (SHA256SUMS, its signature, manifest.json) are read by offset and checked
 *    against the trust policy: the signed listing names every blob and its digest.
 * 2. The whole bundle is verified exactly as `verify` does (same library call, same trust policy) while
 *    the upload runs beside it, and a bundle that does not verify publishes nothing: no blob is committed
 *    before the verification passed. A blob of one upload piece (1 MiB) waits for it; a larger one
 *    streams all but its last piece meanwhile, and that piece goes only then (a registry commits a blob
 *    after its last byte, checking the digest). A bundle found bad ends every upload unfinished.
 * 3. Per repo, per blob (several at a time): a POST that mounts the blob from the repo itself — 201,
 *    already there, skip (a re-publish uploads nothing); 202, the upload session for it. (A registry that
 *    refuses such a mount gets HEAD and a plain POST instead.) A blob this run saw in another repo: HEAD,
 *    then a cross-repository mount. Then a monolithic streamed PUT (chunked PATCH as fallback, the closing
 *    PUT held the same way). A layer's digest is the file's
 *    signed SHA-256, so the bytes stream straight out of the bundle. Each blob retries with backoff on
 *    its own; a re-run after a failure skips what landed.
 * 4. Config blob, then the manifest under the revision tag and the commit tag.
 */
import { createHash } from 'node:crypto';
import { AirlockError } from '../errors.js';
import { MANIFEST_NAME, SIGNATURE_NAME, SUMS_NAME, MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, MAX_SUMS_BYTES, payloadEntryName } from '../bundle/format.js';
import { parseManifest, payloadEntries, type Manifest, type ManifestRepo } from '../bundle/manifest.js';
import { checkManifestLine, checkSumsAgainstManifest } from '../bundle/reader.js';
import { openBundleBytes, type BundleBytes } from '../bundle/entry-offsets.js';
import { parseSha256Sums } from '../integrity/sha256sums.js';
import { verifyDetachedSignature, type TrustPolicy, type VerifiedSigner } from '../signing/verify.js';
import { verifyBundle } from '../import/index.js';
import { watchInterrupts } from '../import/interrupt.js';
import { stopIdleHashThreads } from '../integrity/parallel-digest.js';
import type { ContentPolicy } from '../content/index.js';
import type { ReadProgress } from '../import/progress-sink.js';
import { withRetries, type RetryPolicy } from '../hub/retry.js';
import { UPLOAD_PIECE_BYTES, type BlobReader, type OpenedUpload, type RegistryClient } from './client.js';
import { buildArtifact, OCI_MANIFEST_TYPE, type TrustBlob, type TrustRole } from './modelpack.js';
import { repositoryFor, tagsFor } from './reference.js';
import { inParallelBySize, laneLimits } from './parallel.js';

export interface PublishOptions {
  bundlePath: string;
  client: RegistryClient;
  /** Repository prefix inside the registry (`models`, `team/models`, or '' for none). */
  prefix: string;
  trust: TrustPolicy;
  allowUnsigned?: boolean;
  /** As for verify: files whose loading would run code outside the allow-list are refused unless allowed. */
  contentPolicy?: ContentPolicy;
  retry: RetryPolicy;
  /** Blobs uploaded at once (default: `laneLimits`, 4 large and 16 small). */
  concurrency?: number;
  /** Upload blobs larger than this in PATCH chunks of this size (default: one monolithic PUT). */
  chunkBytes?: number | undefined;
  onBlob?: (event: BlobEvent) => void;
  /** The verification pass and the upload, side by side: told about every byte (the CLI's progress display). */
  progress?: { verify: ReadProgress; upload: ReadProgress };
  signal?: AbortSignal;
  /** Default true: SIGINT/SIGTERM interrupt the publish (E_INTERRUPTED) instead of killing the process. */
  handleSignals?: boolean;
  /** How long a blob's last piece may wait for the verification (default 20 s, under proxies' idle timeouts). */
  holdLimitMs?: number;
}

const DEFAULT_HOLD_LIMIT_MS = 20_000;

/** A hold that lasted longer than allowed: the upload is abandoned and made again after the verification. */
export class HoldExpired extends AirlockError {
  constructor(ms: number) {
    super('E_INTERRUPTED', `the verification took longer than ${ms} ms after the upload reached its last piece`);
  }
}

/** `released`, or HoldExpired after `ms` — whichever comes first (`released`'s own failure passes through). */
export function heldAtMost(released: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new HoldExpired(ms)), ms);
  });
  return Promise.race([released, expired]).finally(() => clearTimeout(timer));
}

export type BlobAction = 'skipped' | 'mounted' | 'uploaded';

export interface BlobEvent {
  repository: string;
  /** Path in the repo, trust file name, or `config`. */
  name: string;
  digest: string;
  size: number;
  action: BlobAction;
}

export interface PublishedRepo {
  type: ManifestRepo['type'];
  id: string;
  revision: string;
  commit: string;
  repository: string;
  tags: string[];
  /** Digest of the OCI manifest. */
  digest: string;
  /** oci://… references, one per tag. */
  references: string[];
  layers: number;
  blobsUploaded: number;
  blobsMounted: number;
  blobsSkipped: number;
  bytesUploaded: number;
}

export interface PublishResult {
  bundlePath: string;
  registry: string;
  signed: boolean;
  signers: VerifiedSigner[];
  repos: PublishedRepo[];
  bytesUploaded: number;
  blobsUploaded: number;
  blobsSkipped: number;
  blobsMounted: number;
}

interface Blob {
  name: string;
  digest: string;
  size: number;
  read: BlobReader;
}

const fromMemory =
  (bytes: Buffer): BlobReader =>
  async (position, into, length) => {
    bytes.copy(into, 0, position, position + length);
  };

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

interface Head {
  manifest: Manifest;
  trust: Array<TrustBlob & { bytes: Buffer }>;
}

/** Re-reads the leading entries by offset and checks them again (cheap), so what we publish is what verified. */
async function readHead(bytes: BundleBytes, options: PublishOptions): Promise<Head> {
  const get = async (name: string, cap: number): Promise<Buffer | undefined> => {
    const entry = bytes.entries.get(name);
    if (entry === undefined) return undefined;
    if (entry.size > cap) throw new AirlockError('E_BUNDLE_MALFORMED', `${name} is ${entry.size} bytes; the limit is ${cap}`, { subject: name });
    return bytes.read(entry.offset, entry.size);
  };
  const sumsBytes = await get(SUMS_NAME, MAX_SUMS_BYTES);
  const manifestBytes = await get(MANIFEST_NAME, MAX_MANIFEST_BYTES);
  const signature = await get(SIGNATURE_NAME, MAX_SIGNATURE_BYTES);
  if (sumsBytes === undefined || manifestBytes === undefined) {
    throw new AirlockError('E_BUNDLE_MALFORMED', `${options.bundlePath}: the leading entries changed after verification`, { subject: options.bundlePath });
  }
  if (signature !== undefined) await verifyDetachedSignature(sumsBytes, signature.toString('utf8'), options.trust, SIGNATURE_NAME);
  else if (!options.allowUnsigned) throw new AirlockError('E_UNSIGNED', `${options.bundlePath} is not signed`, { subject: options.bundlePath });
  const sums = parseSha256Sums(sumsBytes.toString('utf8'), SUMS_NAME);
  checkManifestLine(sums, sha256(manifestBytes));
  const manifest = parseManifest(manifestBytes, MANIFEST_NAME);
  checkSumsAgainstManifest(sums, payloadEntries(manifest));
  const trust: Array<TrustBlob & { bytes: Buffer }> = [];
  const add = (role: TrustRole, b: Buffer | undefined): void => {
    if (b !== undefined) trust.push({ role, sha256: sha256(b), size: b.byteLength, bytes: b });
  };
  add('sums', sumsBytes);
  add('signature', signature);
  add('manifest', manifestBytes);
  return { manifest, trust };
}

export async function publishBundle(options: PublishOptions): Promise<PublishResult> {
  // Ctrl-C (or the caller's abort) ends the verification and every upload at its next piece, before
  // anything more is committed: E_INTERRUPTED, exit 130, no tag
  const interrupts = watchInterrupts(options.signal, options.handleSignals ?? true, 'nothing was published (no tag was written); blobs that landed are skipped when you run the command again');
  try {
    return await publishWithin(options, interrupts.signal);
  } finally {
    interrupts.dispose();
  }
}

async function publishWithin(options: PublishOptions, signal: AbortSignal): Promise<PublishResult> {
  const { client } = options;
  // the verification runs beside the upload; a failed upload ends it (and a caller's abort ends both)
  const stop = new AbortController();
  const verification = verifyBundle({
    bundlePath: options.bundlePath,
    trust: options.trust,
    allowUnsigned: options.allowUnsigned ?? false,
    ...(options.contentPolicy === undefined ? {} : { contentPolicy: options.contentPolicy }),
    signal: AbortSignal.any([signal, stop.signal]),
    ...(options.progress === undefined ? {} : { progress: options.progress.verify }),
  });
  let verifyFailure: { error: unknown } | undefined;
  const verified = verification.then(
    (result) => {
      // the verification pass is the last hashing publish does (the registry checks each digest itself)
      stopIdleHashThreads();
      return result;
    },
    (error: unknown) => {
      verifyFailure = { error };
      throw error;
    },
  );
  // what every blob waits on before the registry may commit it: the whole bundle verified
  const released: Promise<void> = verified.then(
    () => undefined,
    (error: unknown) => Promise.reject(error instanceof AirlockError ? error : new AirlockError('E_INTERRUPTED', `${options.bundlePath}: the verification stopped: ${String(error)}`, { subject: options.bundlePath })),
  );
  released.catch(() => undefined);
  // large blobs stream during the verification until one waited longer than `holdLimitMs` for it
  let overlapping = true;
  const holdLimitMs = options.holdLimitMs ?? DEFAULT_HOLD_LIMIT_MS;
  let bytes: BundleBytes;
  let head: Head;
  try {
    // the signed listing first (small, checked again here): it names every blob and its digest
    bytes = await openBundleBytes(options.bundlePath);
    try {
      head = await readHead(bytes, options);
    } catch (error) {
      await bytes.close();
      throw error;
    }
  } catch (error) {
    // a bundle this fails on fails the verification too, which says best what is wrong with it
    await verified;
    throw error;
  }
  const delta = head.manifest.repos.find((r) => r.files.some((f) => f.reference));
  if (delta !== undefined) {
    stop.abort();
    await bytes.close();
    await verified.catch(() => undefined);
    throw new AirlockError('E_USAGE', `${options.bundlePath} is a delta bundle (${delta.files.filter((f) => f.reference).length} files of ${delta.id} are not in it); only full bundles can be published`, {
      subject: options.bundlePath,
      hint: 'export the repo again without --have, then publish that bundle',
    });
  }
  try {
    // where each blob is known to be in this registry (this run), for cross-repository mounts
    const seenIn = new Map<string, string>();
    // until the registry refuses one (then HEAD and a plain POST, as every client does)
    let mountsFromItself = true;
    const published: PublishedRepo[] = [];
    for (const repo of head.manifest.repos) {
      const repository = repositoryFor(options.prefix, repo);
      const artifact = buildArtifact(head.manifest, repo, head.trust, sha256);
      const blobs: Blob[] = repo.files.map((file) => {
        const name = payloadEntryName(repo.type, repo.id, repo.commit, file.path);
        const entry = bytes.entries.get(name);
        if (entry === undefined || entry.size !== file.size) {
          throw new AirlockError('E_BUNDLE_MALFORMED', `${options.bundlePath}: ${name} is not where the verified bundle had it`, { subject: name });
        }
        return { name: file.path, digest: `sha256:${file.sha256}`, size: file.size, read: (position, into, length) => bytes.readInto(entry.offset + position, into, length) };
      });
      for (const t of head.trust) blobs.push({ name: t.role, digest: `sha256:${t.sha256}`, size: t.size, read: fromMemory(t.bytes) });
      blobs.push({ name: 'config', digest: artifact.manifest.config.digest, size: artifact.configBytes.byteLength, read: fromMemory(artifact.configBytes) });

      const counts = { uploaded: 0, mounted: 0, skipped: 0, bytes: 0 };
      // the same content twice in one repo is one blob
      const unique = [...new Map(blobs.map((b) => [b.digest, b])).values()];
      const progress = options.progress?.upload;
      progress?.planned(unique.reduce((n, b) => n + b.size, 0), unique.length);
      await inParallelBySize(unique, (blob) => blob.size, laneLimits(options.concurrency), async (blob) => {
        signal.throwIfAborted();
        progress?.start(blob.name, blob.size);
        let sent = 0;
        // bytes count as they are read for the socket (at most two buffers ahead of it); a retry counts
        // again from 0. A bundle found bad meanwhile stops every upload at its next piece.
        const read: BlobReader = async (position, into, length) => {
          if (verifyFailure !== undefined) throw verifyFailure.error;
          signal.throwIfAborted();
          await blob.read(position, into, length);
          if (progress !== undefined) {
            const delta = position + length - sent;
            sent = position + length;
            progress.bytes(delta, blob.name);
          }
        };
        const action = await withRetries({ policy: options.retry, what: `${repository} ${blob.name}` }, async (): Promise<BlobAction> => {
          const from = seenIn.get(blob.digest);
          const elsewhere = from !== undefined && from !== repository;
          // one request asks whether the repository has the blob and, when not, opens its upload (a
          // mount from the repository itself); it commits nothing new, so it need not wait for the
          // verification. Where the registry refuses that: HEAD, then a mount or a plain upload.
          let opened: OpenedUpload | undefined;
          if (!elsewhere && mountsFromItself) {
            opened = await client.openUpload(repository, blob.digest);
            if (opened === undefined) mountsFromItself = false;
          }
          if (opened?.present === true) return 'skipped';
          let session = opened?.session;
          if (opened === undefined) {
            if (await client.hasBlob(repository, blob.digest, blob.size)) return 'skipped';
            if (elsewhere) {
              // a cross-repository mount; when the registry opens an upload instead, that is the one used
              await released;
              const mounted = await client.openUpload(repository, blob.digest, from);
              if (mounted?.present === true) return 'mounted';
              session = mounted?.session;
            }
          }
          // a blob that fits one piece goes once the whole bundle verified; a larger one streams
          // meanwhile and its last piece waits for that (a registry commits a blob after its last byte)
          if (blob.size <= UPLOAD_PIECE_BYTES || !overlapping) {
            const waiting = Date.now();
            try {
              await released;
            } catch (error) {
              if (session !== undefined) await client.abandonUpload(repository, session);
              throw error;
            }
            // a session left idle that long may have been dropped (a proxy, a registry's upload expiry)
            if (session !== undefined && Date.now() - waiting > holdLimitMs) {
              await client.abandonUpload(repository, session);
              session = undefined;
            }
          }
          // a last piece held too long would meet a proxy's idle timeout (nginx: 60 s): after
          // `holdLimitMs` this attempt ends, later blobs wait for the verification before they start,
          // and this one goes again once it passed (not a failed attempt: the registry did nothing wrong)
          const hold = overlapping ? () => heldAtMost(released, holdLimitMs) : undefined;
          try {
            await client.uploadBlob(repository, blob.digest, blob.size, read, { chunkBytes: options.chunkBytes, hold, session });
          } catch (error) {
            if (!(error instanceof HoldExpired)) throw error;
            overlapping = false;
            await released;
            await client.uploadBlob(repository, blob.digest, blob.size, read, { chunkBytes: options.chunkBytes });
          }
          return 'uploaded';
        });
        if (sent < blob.size) progress?.bytes(blob.size - sent, blob.name);
        progress?.finish(blob.name);
        seenIn.set(blob.digest, repository);
        if (action === 'uploaded') {
          counts.uploaded += 1;
          counts.bytes += blob.size;
        } else if (action === 'mounted') counts.mounted += 1;
        else counts.skipped += 1;
        options.onBlob?.({ repository, name: blob.name, digest: blob.digest, size: blob.size, action });
      });
      const manifestBytes = Buffer.from(JSON.stringify(artifact.manifest), 'utf8');
      const tags = tagsFor(repo);
      let digest = `sha256:${sha256(manifestBytes)}`;
      // nothing is tagged (published) before the whole bundle verified
      await released;
      signal.throwIfAborted();
      for (const tag of tags) {
        digest = await withRetries({ policy: options.retry, what: `${repository}:${tag}` }, () => client.putManifest(repository, tag, manifestBytes, OCI_MANIFEST_TYPE));
      }
      published.push({
        type: repo.type,
        id: repo.id,
        revision: repo.revision,
        commit: repo.commit,
        repository,
        tags,
        digest,
        references: tags.map((t) => `oci://${client.registry}/${repository}:${t}`),
        layers: artifact.manifest.layers.length,
        blobsUploaded: counts.uploaded,
        blobsMounted: counts.mounted,
        blobsSkipped: counts.skipped,
        bytesUploaded: counts.bytes,
      });
    }
    const checked = await verified;
    return {
      bundlePath: options.bundlePath,
      registry: client.registry,
      signed: checked.signed,
      signers: checked.signers,
      repos: published,
      bytesUploaded: published.reduce((n, r) => n + r.bytesUploaded, 0),
      blobsUploaded: published.reduce((n, r) => n + r.blobsUploaded, 0),
      blobsSkipped: published.reduce((n, r) => n + r.blobsSkipped, 0),
      blobsMounted: published.reduce((n, r) => n + r.blobsMounted, 0),
    };
  } catch (error) {
    // the bundle's own fault, when the verification found one, is what to report (an upload that
    // stopped because of it says less); else the upload's error, and the verification is stopped
    if (verifyFailure !== undefined) throw verifyFailure.error;
    stop.abort();
    await verified.catch(() => undefined);
    throw error;
  } finally {
    await bytes.close();
  }
}
