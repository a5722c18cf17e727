/**
 * `airlock pull`: one ModelPack artifact that `publish` made → the hub cache (or modelscope cache, or a
 * plain dir), with the guarantees of `import`:
 *
 * 1. Manifest, then the trust layers (SHA256SUMS, SHA256SUMS.asc, manifest.json; small, capped, digests
 *    checked). The signature is checked against the pinned keys, then SHA256SUMS ↔ manifest.json exactly
 *    as the bundle reader checks them (same functions).
 * 2. The artifact must be a repo of that signed manifest: its repository path names the repo, its tag
 *    (if any) is the repo's revision or commit, and its layers are exactly the repo's files in the signed
 *    SHA256SUMS — same path, size and digest, none extra, none missing. All of this before any byte is
 *    written anywhere.
 * 3. Layers download in parallel into import's staging sink (Range resume after a dropped connection,
 *    sha256 — and the git blob id for non-LFS files — computed while staging), and are committed through
 *    import's own verify-then-commit path (src/import/commit-path.ts): atomic, locked, cache unchanged on
 *    any failure.
 */
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { AirlockError, fsError } from '../errors.js';
import { MANIFEST_NAME, MAX_MANIFEST_BYTES, MAX_SIGNATURE_BYTES, MAX_SUMS_BYTES, SIGNATURE_NAME, SUMS_NAME, payloadEntryName } from '../bundle/format.js';
import { parseManifest, payloadEntries, type Manifest, type ManifestRepo, type PayloadEntry } from '../bundle/manifest.js';
import { checkManifestLine, checkSumsAgainstManifest, type PayloadSink } from '../bundle/reader.js';
import { parseSha256Sums } from '../integrity/sha256sums.js';
import { verifyDetachedSignature, type TrustPolicy, type VerifiedSigner } from '../signing/verify.js';
import { withRetries, markTransient, type RetryPolicy } from '../hub/retry.js';
import { stageThenCommit, type CommittedRepo } from '../import/commit-path.js';
import type { ContentPolicy } from '../content/index.js';
import type { ReadProgress } from '../import/progress-sink.js';
import { recordImportEvidence } from '../import/evidence.js';
import type { ContentOutcome } from '../import/summary.js';
import { watchInterrupts } from '../import/interrupt.js';
import type { ImportLayout } from '../import/staging-sink.js';
import type { RegistryClient } from './client.js';
import { parseArtifactManifest, type ArtifactLayer, type TrustRole } from './modelpack.js';
import { formatOciReference, registryRepoPath, tagsFor, type OciReference } from './reference.js';
import { inParallelBySize, laneLimits } from './parallel.js';
import { releaseNetworkGarbage } from '../fs/young-gc.js';
import { StreamDigest } from '../integrity/parallel-digest.js';

export interface PullOptions {
  reference: OciReference;
  client: RegistryClient;
  trust: TrustPolicy;
  allowUnsigned?: boolean;
  cacheDir: string;
  layout: ImportLayout;
  weightCheck?: boolean;
  spaceCheck?: boolean;
  /** What loading the files would execute (issue 17): refused unless the policy allows it, as for import. */
  contentPolicy?: ContentPolicy;
  retry: RetryPolicy;
  /** Layers downloaded at once (default: `laneLimits`, 4 large and 16 small). */
  concurrency?: number;
  onLayer?: (event: { path: string; size: number; done: boolean }) => void;
  /** Told about every layer byte as it is downloaded and hashed (the CLI's progress display). */
  progress?: ReadProgress;
  signal?: AbortSignal;
  handleSignals?: boolean;
}

export interface PullResult {
  reference: string;
  /** Digest of the OCI manifest that was pulled. */
  digest: string;
  cacheDir: string;
  layout: ImportLayout;
  signed: boolean;
  signers: VerifiedSigner[];
  repo: CommittedRepo;
  /** Bytes downloaded (resumed ranges counted once). */
  bytesDownloaded: number;
  /** Layers not downloaded: the target already held them, intact. */
  filesPresent: number;
  warnings: string[];
  /** Every downloaded file's content verdict, judged on this side (undefined when the check was off). */
  content: ContentOutcome | undefined;
}

/** What an artifact holds, checked against its own signed trust material (or not: `signatureChecked`). */
export interface CheckedArtifact {
  reference: string;
  digest: string;
  manifest: Manifest;
  repo: ManifestRepo;
  signed: boolean;
  signers: VerifiedSigner[];
  /** Layer per payload entry, for the download. */
  layers: Array<{ entry: PayloadEntry; layer: ArtifactLayer }>;
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

function refused(code: 'E_UNEXPECTED_ENTRY' | 'E_MISSING_ENTRY' | 'E_HASH_MISMATCH' | 'E_SIZE_MISMATCH' | 'E_DUPLICATE_ENTRY' | 'E_MANIFEST_INVALID', where: string, message: string, subject: string): AirlockError {
  return new AirlockError(code, `${where}: ${message}`, {
    subject,
    hint: 'the registry does not serve what the signer published (altered, swapped or mixed artifacts); nothing was written — publish the verified bundle again',
  });
}

/** Fetches the trust layers of an artifact; `keys` undefined means: do not check the signature (inspect). */
export async function readArtifact(
  client: RegistryClient,
  reference: OciReference,
  trust: { policy: TrustPolicy; allowUnsigned: boolean } | undefined,
): Promise<CheckedArtifact> {
  const where = formatOciReference(reference);
  const { repository } = reference;
  const fetched = await client.getManifest(repository, reference.reference!);
  const parsed = parseArtifactManifest(fetched.bytes, where);
  const roles = new Map<TrustRole, ArtifactLayer>();
  for (const layer of parsed.layers) {
    if (layer.role === undefined) continue;
    if (roles.has(layer.role)) throw refused('E_DUPLICATE_ENTRY', where, `two layers claim to be the bundle's ${layer.role}`, layer.descriptor.digest);
    roles.set(layer.role, layer);
  }
  const get = async (role: TrustRole, name: string, cap: number): Promise<Buffer | undefined> => {
    const layer = roles.get(role);
    if (layer === undefined) return undefined;
    return client.getSmallBlob(repository, layer.descriptor.digest, layer.size, cap, `${where} ${name}`);
  };
  const sumsBytes = await get('sums', SUMS_NAME, MAX_SUMS_BYTES);
  const manifestBytes = await get('manifest', MANIFEST_NAME, MAX_MANIFEST_BYTES);
  if (sumsBytes === undefined || manifestBytes === undefined) {
    throw new AirlockError('E_MISSING_ENTRY', `${where} carries no ${sumsBytes === undefined ? SUMS_NAME : MANIFEST_NAME} layer: it was not published by airlock`, {
      subject: where,
      hint: 'pull only artifacts `airlock publish` made: they carry the signed SHA256SUMS of their bundle',
    });
  }
  const signature = await get('signature', SIGNATURE_NAME, MAX_SIGNATURE_BYTES);
  let signers: VerifiedSigner[] = [];
  if (trust !== undefined) {
    if (signature !== undefined) {
      try {
        signers = await verifyDetachedSignature(sumsBytes, signature.toString('utf8'), trust.policy, `${where} ${SIGNATURE_NAME}`);
      } catch (error) {
        if (error instanceof AirlockError) throw error;
        throw new AirlockError('E_SIGNATURE_INVALID', `${where} ${SIGNATURE_NAME} cannot be checked: ${(error as Error).message}`, { subject: SIGNATURE_NAME, cause: error });
      }
    } else if (!trust.allowUnsigned) {
      throw new AirlockError('E_UNSIGNED', `${where} is not signed (it has no ${SIGNATURE_NAME} layer)`, {
        subject: where,
        hint: 'publish a signed bundle; pass --allow-unsigned only if you trust the registry and the way the artifact got there',
      });
    }
  }
  const sums = parseSha256Sums(new TextDecoder('utf-8', { fatal: true }).decode(sumsBytes), SUMS_NAME);
  checkManifestLine(sums, sha256(manifestBytes));
  const manifest = parseManifest(manifestBytes, MANIFEST_NAME);
  const entries = payloadEntries(manifest);
  checkSumsAgainstManifest(sums, entries);

  // which signed repo is this? the path names it, the tag must be its revision or commit
  const path = repository.toLowerCase();
  const named = manifest.repos.filter((r) => path === registryRepoPath(r) || path.endsWith(`/${registryRepoPath(r)}`));
  const tag = reference.reference!.startsWith('sha256:') ? undefined : reference.reference!;
  const candidates = named.filter((r) => tag === undefined || tagsFor(r).includes(tag));
  const repo = candidates.length === 1 ? candidates[0] : candidates.find((r) => matches(r, parsed.layers));
  if (repo === undefined) {
    const holds = manifest.repos.map((r) => `${registryRepoPath(r)}@${r.revision} (${r.commit})`).join(', ');
    throw refused('E_MANIFEST_INVALID', where, `the signed manifest of this artifact holds ${holds}, not ${repository}${tag === undefined ? '' : `:${tag}`}`, where);
  }
  if (repo.files.some((f) => f.reference)) throw refused('E_MANIFEST_INVALID', where, `the signed manifest is a delta bundle's`, where);

  // the layers must be exactly that repo's files, as signed
  const byPath = new Map(repo.files.map((f) => [f.path, f]));
  const layers: Array<{ entry: PayloadEntry; layer: ArtifactLayer }> = [];
  const seen = new Set<string>();
  for (const layer of parsed.layers) {
    if (layer.role !== undefined) continue;
    const file = layer.path === undefined ? undefined : byPath.get(layer.path);
    if (file === undefined) {
      throw refused('E_UNEXPECTED_ENTRY', where, `layer ${layer.descriptor.digest}${layer.path === undefined ? ' (no file path)' : ` (${layer.path})`} is not a file of ${repo.id} in the signed SHA256SUMS`, layer.path ?? layer.descriptor.digest);
    }
    if (seen.has(file.path)) throw refused('E_DUPLICATE_ENTRY', where, `two layers claim to be ${file.path}`, file.path);
    seen.add(file.path);
    if (layer.sha256 !== file.sha256) {
      throw refused('E_HASH_MISMATCH', where, `layer for ${file.path} has digest sha256:${layer.sha256}; the signed SHA256SUMS says sha256:${file.sha256}`, file.path);
    }
    if (layer.size !== file.size) throw refused('E_SIZE_MISMATCH', where, `layer for ${file.path} is ${layer.size} bytes; the signed manifest says ${file.size}`, file.path);
    layers.push({ entry: entries.get(payloadEntryName(repo.type, repo.id, repo.commit, file.path))!, layer });
  }
  const missing = repo.files.filter((f) => !seen.has(f.path));
  if (missing.length > 0) {
    throw refused('E_MISSING_ENTRY', where, `${missing.length} file(s) of ${repo.id} in the signed SHA256SUMS have no layer: ${missing.slice(0, 3).map((f) => f.path).join(', ')}${missing.length > 3 ? ' …' : ''}`, missing[0]!.path);
  }
  return { reference: where, digest: fetched.digest, manifest, repo, signed: signature !== undefined, signers, layers };
}

function matches(repo: ManifestRepo, layers: readonly ArtifactLayer[]): boolean {
  const files = new Map(repo.files.map((f) => [f.path, f.sha256]));
  const payload = layers.filter((l) => l.role === undefined);
  return payload.length === files.size && payload.every((l) => l.path !== undefined && files.get(l.path) === l.sha256);
}

/**
 * Downloads one layer into `sink` (Range resume), hashing while staging; finishes only when every hash
 * matched. An abort of `signal` (Ctrl-C) stops it at once — also a body that sends nothing — with the
 * signal's reason; it is never retried.
 */
async function downloadLayer(client: RegistryClient, repository: string, item: { entry: PayloadEntry; layer: ArtifactLayer }, sink: PayloadSink, retry: RetryPolicy, signal: AbortSignal, count: (n: number) => void): Promise<void> {
  const { entry, layer } = item;
  const { file } = entry;
  const target = await sink.open(entry);
  const stageError = (error: unknown): AirlockError => fsError(error, 'stage', `${repository} ${file.path}`);
  // SHA-256 on the hashing thread (and the git blob id — the hub cache etag of non-LFS files — as the
  // bundle reader checks it). Socket chunks (~64 KiB) are copied once, into the digest's ring; its 512 KiB
  // slots are written from there, one write in flight while the next slots fill: the main thread only
  // receives and hands slots over. A failing write (disk full, permissions) is the node's problem, not the
  // network's: it is not retried.
  const digest = new StreamDigest(file.size, {
    ...(file.lfs ? {} : { gitBlobSize: file.size }),
    write: (data) => target.write(data).catch((error: unknown) => Promise.reject(stageError(error))),
  });
  try {
    let have = 0;
    // an abort ends the retries too, also the wait between two attempts
    await withRetries({ policy: retry, what: `${repository} ${file.path}`, signal }, async (progressed) => {
      const { body, offset } = await client.getBlob(repository, layer.descriptor.digest, have);
      // a registry that ignores Range sends everything again: skip what we have
      let skip = have - offset;
      const stop = (): void => {
        body.destroy(signal.reason as Error);
      };
      signal.addEventListener('abort', stop, { once: true });
      try {
        signal.throwIfAborted();
        for await (const raw of body) {
          let chunk = raw as Buffer;
          if (skip > 0) {
            const drop = Math.min(skip, chunk.byteLength);
            skip -= drop;
            chunk = chunk.subarray(drop);
            if (chunk.byteLength === 0) continue;
          }
          if (have + chunk.byteLength > file.size) {
            throw new AirlockError('E_SIZE_MISMATCH', `${repository} ${file.path}: the registry sent more than the signed ${file.size} bytes`, { subject: file.path, hint: 'the registry serves altered content; nothing was written' });
          }
          await digest.update(chunk);
          have += chunk.byteLength;
          count(chunk.byteLength);
          releaseNetworkGarbage(chunk.byteLength);
          progressed();
        }
      } catch (error) {
        body.on('error', () => undefined);
        body.destroy();
        if (signal.aborted) throw signal.reason;
        if (error instanceof AirlockError) throw error;
        throw markTransient(new AirlockError('E_NETWORK', `${repository} ${file.path}: the download broke off after ${have} of ${file.size} bytes: ${(error as Error).message}`, { subject: file.path }), { status: 0 });
      } finally {
        signal.removeEventListener('abort', stop);
      }
      if (have < file.size) {
        throw markTransient(new AirlockError('E_NETWORK', `${repository} ${file.path}: the registry ended the download after ${have} of ${file.size} bytes`, { subject: file.path }), { status: 0 });
      }
    });
    const digested = await digest.digest();
    const actual = digested.sha256;
    if (actual !== file.sha256) {
      throw new AirlockError('E_HASH_MISMATCH', `${repository} ${file.path} does not match the signed SHA256SUMS: sha256 ${actual}, expected ${file.sha256}`, {
        subject: file.path,
        hint: 'the registry serves altered content (check its storage); nothing was written',
      });
    }
    if (!file.lfs && digested.gitSha1 !== file.etag) {
      throw new AirlockError('E_HASH_MISMATCH', `${repository} ${file.path}: git blob id does not match its etag ${file.etag}`, { subject: file.path });
    }
    await target.finish().catch((error: unknown) => Promise.reject(fsError(error, 'stage', `${repository} ${file.path}`)));
  } catch (error) {
    await digest.settled();
    await target.abort();
    throw error;
  } finally {
    digest.close();
  }
}

export async function pullArtifact(options: PullOptions): Promise<PullResult> {
  const interrupts = watchInterrupts(options.signal, options.handleSignals ?? true);
  const { signal } = interrupts;
  // every layer downloading listens for the interrupt (and its retry's back-off wait): a known number,
  // two per download plus the staging's own — not the leak Node warns about past 10
  const lanes = laneLimits(options.concurrency);
  setMaxListeners(2 * (lanes.large + lanes.small) + 10, signal);
  try {
    const checked = await readArtifact(options.client, options.reference, { policy: options.trust, allowUnsigned: options.allowUnsigned ?? false });
    const { repo } = checked;
    let bytesDownloaded = 0;
    let filesPresent = 0;
    const done = await stageThenCommit(
      {
        target: { cacheDir: options.cacheDir, layout: options.layout },
        weightCheck: options.weightCheck,
        contentPolicy: options.contentPolicy,
        spaceCheck: options.spaceCheck,
        repos: [`${repo.type === 'dataset' ? 'datasets/' : ''}${repo.id}@${repo.commit}`],
        signal,
      },
      async (sink) => {
        await sink.begin(checked.manifest);
        const { progress } = options;
        progress?.planned(checked.layers.reduce((n, l) => n + l.entry.file.size, 0), checked.layers.length);
        await inParallelBySize(checked.layers, (item) => item.entry.file.size, lanes, async (item) => {
          signal.throwIfAborted();
          // already in the target, complete and with the signed sha256? then nothing is downloaded: a
          // re-pull on a warm node costs one read of each file, which is hashed and judged by the same
          // content analysis and weight checks as a downloaded one (as import judges every entry)
          if (await sink.openExisting(item.entry)) {
            filesPresent += 1;
            progress?.start(item.entry.file.path, item.entry.file.size);
            progress?.bytes(item.entry.file.size, item.entry.file.path);
            progress?.finish(item.entry.file.path);
            options.onLayer?.({ path: item.entry.file.path, size: item.entry.file.size, done: true });
            return;
          }
          progress?.start(item.entry.file.path, item.entry.file.size);
          await downloadLayer(options.client, options.reference.repository, item, sink, options.retry, signal, (n) => {
            bytesDownloaded += n;
            progress?.bytes(n, item.entry.file.path);
          });
          progress?.finish(item.entry.file.path);
          options.onLayer?.({ path: item.entry.file.path, size: item.entry.file.size, done: true });
        });
        signal.throwIfAborted();
        return { manifest: checked.manifest };
      },
    );
    // after the commit, outside the cache: the evidence record `airlock serve` shows (as import keeps it)
    const evidenceWarnings =
      done.target.layout === 'dir'
        ? []
        : await recordImportEvidence({
            cacheDir: done.target.cacheDir,
            layout: done.target.layout,
            repos: done.selected,
            bundlePath: `${checked.reference}@${checked.digest}`,
            bundleSha256: undefined,
            bundleBytes: done.repos.reduce((n, r) => n + r.bytes, 0),
            signers: checked.signers,
            content: done.content,
          });
    return {
      reference: checked.reference,
      digest: checked.digest,
      cacheDir: options.cacheDir,
      layout: options.layout,
      signed: checked.signed,
      signers: checked.signers,
      repo: done.repos[0]!,
      bytesDownloaded,
      filesPresent,
      warnings: [...done.warnings, ...evidenceWarnings],
      content: done.content,
    };
  } finally {
    interrupts.dispose();
  }
}
