/**
 * `airlock export`: resolve → download + hash (per repo, pinned to one commit) → manifest →
 * SHA256SUMS → signature → one tar written in a single pass. The work dir keeps verified downloads
 * until the bundle is safely renamed into place, so a failed export can be re-run without
 * downloading completed files again.
 */
import { readdir, rm, rmdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { formatPartsIndex, indexPathFor, type PartsIndex } from '../bundle/parts.js';
import { writeFileAtomic } from '../fs/atomic.js';
import type { Inventory } from '../cache/inventory.js';
import { AirlockError } from '../errors.js';
import { FORMAT_VERSION, MANIFEST_NAME, payloadEntryName } from '../bundle/format.js';
import { formatManifest, type Manifest, type ManifestFile, type ManifestRepo } from '../bundle/manifest.js';
import { writeBundle, type BundlePayloadFile, type WrittenBundle } from '../bundle/writer.js';
import { formatSha256Sums, type SumsEntry } from '../integrity/sha256sums.js';
import { sha256Hex } from '../integrity/digest.js';
import type { Signer } from '../signing/sign.js';
import type { HubClient, RemoteFile, RepoRef } from '../hub/types.js';
import { checkIndexFile, checkSafetensorsFile, isSafetensorsPath, isShardIndexPath } from '../integrity/weights.js';
import type { ModelScopeClient } from '../hub/modelscope/client.js';
import type { ModelScopeRemoteFile } from '../hub/modelscope/wire.js';
import { toolVersion } from '../version.js';
import { downloadSnapshot, planSnapshot, repoWorkDir, snapshotWorkDir, verifiedRecordPath, type FetchOptions, type FetchProgress, type SnapshotPlan } from './fetch.js';
import { checkFreeSpace } from './space.js';
import type { Throttle } from '../hub/download.js';
import type { RetryPolicy } from '../hub/retry.js';

/** One repo to export; its own client and patterns (a bundle spec mixes sources) override the defaults. */
export interface ExportRepo extends RepoRef {
  client?: HubClient | undefined;
  include?: readonly string[] | undefined;
  exclude?: readonly string[] | undefined;
}

export interface ExportOptions {
  /** Default client for repos without their own. */
  client?: HubClient | undefined;
  repos: readonly ExportRepo[];
  include: readonly string[];
  exclude: readonly string[];
  /** Default true: check every `*.safetensors` header and every shard index before writing the bundle. */
  weightCheck?: boolean | undefined;
  outPath: string;
  workDir: string;
  /** Undefined only when the user asked for an unsigned bundle explicitly. */
  signer: Signer | undefined;
  overwrite?: boolean;
  keepWorkDir?: boolean;
  onProgress?: FetchProgress;
  /** Bytes as they arrive, per file (deltas). */
  onBytes?: ((bytes: number, path: string) => void) | undefined;
  /** Called once every repo is planned, before the first download: sizes for a progress display. */
  onPlanned?: ((plans: readonly SnapshotPlan[]) => void) | undefined;
  /** Files at once (default 4). */
  concurrency?: number | undefined;
  /** Range requests at once per large file (default 1). */
  connectionsPerFile?: number | undefined;
  retry?: RetryPolicy | undefined;
  throttle?: Throttle | undefined;
  /** Default true: refuse to start when the remaining downloads or the bundle would not fit. */
  spaceCheck?: boolean | undefined;
  /**
   * Delta export: what the offline cache already holds (`airlock cache inventory`). LFS files whose
   * blob it lists for the same repo are left out of the bundle (not even downloaded) and recorded in
   * the manifest as references.
   */
  have?: Inventory | undefined;
  /** Write split volumes of at most this many bytes (plus a signed parts index). */
  splitSize?: number | undefined;
  now?: () => Date;
}

export interface ExportedRepo {
  type: ManifestRepo['type'];
  id: string;
  revision: string;
  commit: string;
  files: number;
  bytes: number;
  /** Delta export: files left out because the offline cache holds them (counted in files/bytes). */
  referenced: number;
  referencedBytes: number;
}

export interface ExportResult {
  bundle: WrittenBundle;
  repos: ExportedRepo[];
  signer: { fingerprint: string; userIds: readonly string[] } | undefined;
  manifestSha256: string;
}


/**
 * Removes only what this export downloaded (a user's --work-dir may hold other things), then the
 * folders that became empty.
 */
async function removeWorkFiles(workDir: string, refs: readonly RepoRef[], repos: readonly ManifestRepo[]): Promise<void> {
  for (const repo of repos) {
    const ref = refs.find((r) => r.type === repo.type && r.id === repo.id) ?? repo;
    const snapshotDir = snapshotWorkDir(workDir, ref, repo.commit);
    await rm(snapshotDir, { recursive: true, force: true });
    await rm(verifiedRecordPath(workDir, ref, repo.commit), { force: true });
    await rm(join(repoWorkDir(workDir, ref), 'refs', encodeURIComponent(ref.revision)), { force: true });
    for (const sub of ['verified', 'refs']) await rmdir(join(repoWorkDir(workDir, ref), sub)).catch(() => undefined);
    await rmdir(dirname(snapshotDir)).catch(() => undefined);
  }
  await rmdir(workDir).catch(() => undefined);
}

/**
 * The parts index and its detached signature, next to the parts. Signed by the same key as
 * SHA256SUMS: a reader checks it before reading any part, so a swapped or damaged part is named.
 */
async function writePartsIndex(outPath: string, parts: PartsIndex, signer: Signer | undefined): Promise<void> {
  const path = indexPathFor(outPath);
  const bytes = formatPartsIndex(parts);
  await writeFileAtomic(path, bytes);
  if (signer) await writeFileAtomic(`${path}.asc`, Buffer.from(await signer.sign(bytes), 'utf8'));
  else await rm(`${path}.asc`, { force: true });
}

/** Output paths an export would write: the bundle, or its parts and parts index. */
async function existingOutputs(outPath: string): Promise<string[]> {
  const dir = dirname(outPath);
  const base = basename(outPath);
  const names = await readdir(dir).catch(() => [] as string[]);
  const index = basename(indexPathFor(outPath));
  return names
    .filter((n) => n === base || n === index || n === `${index}.asc` || (n.startsWith(`${base}.`) && /^\d{3,}$/.test(n.slice(base.length + 1))))
    .map((n) => join(dir, n));
}

/**
 * Delta export: takes out of the plan the LFS files whose blob (sha256 and size) the offline cache
 * already holds for the same repo. Git files (named by a git blob id, not a sha256) always travel:
 * they are small, and the manifest needs their sha256.
 */
function leaveOutHeld(plan: SnapshotPlan, have: Inventory | undefined, references: Map<SnapshotPlan, RemoteFile[]>): SnapshotPlan {
  if (have === undefined) return plan;
  const repo = have.repos.find((r) => r.type === plan.repo.type && r.id === plan.repo.id);
  if (repo === undefined) return plan;
  const blobs = new Map(repo.blobs.map((b) => [b.etag, b.size]));
  const held = plan.selected.filter((f) => f.lfsSha256 !== undefined && blobs.get(f.lfsSha256) === f.size);
  if (held.length === 0) return plan;
  const heldPaths = new Set(held.map((f) => f.path));
  const heldBytes = held.reduce((n, f) => n + f.size, 0);
  const pending = held.filter((f) => !plan.done.has(f.path)).reduce((n, f) => n + f.size, 0);
  const reduced: SnapshotPlan = {
    ...plan,
    selected: plan.selected.filter((f) => !heldPaths.has(f.path)),
    totalBytes: plan.totalBytes - heldBytes,
    remainingBytes: Math.max(0, plan.remainingBytes - pending),
  };
  references.set(reduced, held);
  return reduced;
}

export async function exportBundle(options: ExportOptions): Promise<ExportResult> {
  if (options.repos.length === 0) throw new AirlockError('E_USAGE', 'no repository given', { hint: 'airlock export acme/tiny-llm -o tiny.airlock.tar …' });
  const previous = await existingOutputs(options.outPath);
  if (previous.length > 0 && !options.overwrite) {
    throw new AirlockError('E_OUTPUT_EXISTS', `${previous[0]} already exists`, {
      subject: previous[0]!,
      hint: 'choose another -o path, or pass --force to replace it',
    });
  }

  const clientOf = (ref: ExportRepo): HubClient => {
    const client = ref.client ?? options.client;
    if (client === undefined) throw new AirlockError('E_INTERNAL', `no hub client for ${ref.id}`);
    return client;
  };
  const optionsFor = (ref: ExportRepo): FetchOptions => ({
    ...fetchOptions,
    include: [...(ref.include ?? options.include)],
    exclude: [...(ref.exclude ?? options.exclude)],
  });
  const fetchOptions: FetchOptions = {
    include: [...options.include],
    exclude: [...options.exclude],
    workDir: options.workDir,
    onProgress: options.onProgress,
    onBytes: options.onBytes,
    concurrency: options.concurrency,
    connectionsPerFile: options.connectionsPerFile,
    retry: options.retry,
    throttle: options.throttle,
  };
  // Plan every repo first (resolve or take the pinned commit, list, find completed files) so the
  // free-space check sees the whole export before the first byte is downloaded.
  const plans: SnapshotPlan[] = [];
  const planned: ExportRepo[] = [];
  /** plan → the files left out as references (delta export) */
  const references = new Map<SnapshotPlan, RemoteFile[]>();
  const seen = new Set<string>();
  for (const ref of options.repos) {
    const plan = leaveOutHeld(await planSnapshot(clientOf(ref), ref, optionsFor(ref)), options.have, references);
    const key = `${ref.type}:${ref.id}:${plan.commit}`;
    if (seen.has(key)) continue; // the same snapshot named twice (e.g. by branch and by commit)
    seen.add(key);
    plans.push(plan);
    planned.push(ref);
  }
  if (options.spaceCheck !== false) {
    await checkFreeSpace(options.workDir, dirname(options.outPath), {
      workBytes: plans.reduce((n, p) => n + p.remainingBytes, 0),
      outputBytes: plans.reduce((n, p) => n + p.totalBytes, 0),
    });
  }
  options.onPlanned?.(plans);

  const repos: ManifestRepo[] = [];
  const payload: BundlePayloadFile[] = [];
  const sums: SumsEntry[] = [];
  for (const [i, plan] of plans.entries()) {
    const ref = plan.repo;
    const client = clientOf(planned[i]!);
    const snapshot = await downloadSnapshot(client, plan, optionsFor(planned[i]!));
    const files: ManifestFile[] = snapshot.files.map((f) => {
      const entry: ManifestFile = { path: f.remote.path, size: f.size, sha256: f.sha256, etag: f.etag, blobId: f.remote.blobId, lfs: f.lfs };
      const lastCommit = (f.remote as Partial<ModelScopeRemoteFile>).lastCommit;
      if (client.kind === 'modelscope' && typeof lastCommit === 'string' && /^[0-9a-f]{40}$/.test(lastCommit)) entry.lastCommit = lastCommit;
      return entry;
    });
    const held = references.get(plan) ?? [];
    if (options.weightCheck !== false) {
      // before the bundle is written: a truncated shard or an index naming a missing one never leaves here
      const where = `${ref.type === 'dataset' ? 'datasets/' : ''}${ref.id}@${snapshot.commit}`;
      const paths = [...snapshot.files.map((f) => f.remote.path), ...held.map((f) => f.path)];
      for (const [n, f] of snapshot.files.entries()) {
        if (isSafetensorsPath(f.remote.path)) files[n]!.safetensors = await checkSafetensorsFile(f.localPath, f.size, where, f.remote.path);
        else if (isShardIndexPath(f.remote.path)) await checkIndexFile(f.localPath, f.size, f.remote.path, paths, where);
      }
    }
    const source: ManifestRepo['source'] = { kind: client.kind, endpoint: client.endpoint };
    if (client.kind === 'modelscope') {
      const createdAt = (client as ModelScopeClient).resolved?.(ref)?.createdAt;
      if (createdAt !== undefined && Number.isSafeInteger(createdAt) && createdAt >= 0) source.createdAt = createdAt;
    }
    for (const f of held) {
      files.push({ path: f.path, size: f.size, sha256: f.lfsSha256!, etag: f.lfsSha256!, blobId: f.blobId, lfs: true, reference: true });
    }
    repos.push({ type: ref.type, id: ref.id, revision: ref.revision, commit: snapshot.commit, source, files });
    for (const f of snapshot.files) {
      const name = payloadEntryName(ref.type, ref.id, snapshot.commit, f.remote.path);
      payload.push({ name, localPath: f.localPath, size: f.size });
      sums.push({ path: name, sha256: f.sha256 });
    }
  }

  const manifest: Manifest = {
    format: 'model-airlock-bundle',
    formatVersion: FORMAT_VERSION,
    tool: { name: 'model-airlock', version: toolVersion },
    createdAt: (options.now?.() ?? new Date()).toISOString(),
    repos,
  };
  const manifestBytes = formatManifest(manifest);
  const manifestSha256 = sha256Hex(manifestBytes);
  const sumsBytes = Buffer.from(formatSha256Sums([...sums, { path: MANIFEST_NAME, sha256: manifestSha256 }]), 'utf8');
  const signature = options.signer ? await options.signer.sign(sumsBytes) : undefined;

  // --force: a previous export's extra parts would otherwise sit beside the new ones
  if (options.overwrite) for (const path of await existingOutputs(options.outPath)) await rm(path, { force: true });
  const bundle = await writeBundle(options.outPath, { sums: sumsBytes, signature, manifest: manifestBytes }, payload, {
    ...(options.splitSize === undefined ? {} : { splitSize: options.splitSize }),
  });
  if (bundle.parts !== undefined) await writePartsIndex(options.outPath, bundle.parts, options.signer);
  if (!options.keepWorkDir) await removeWorkFiles(options.workDir, options.repos, repos);

  return {
    bundle,
    manifestSha256,
    signer: options.signer ? { fingerprint: options.signer.fingerprint, userIds: options.signer.userIds } : undefined,
    repos: repos.map((r) => ({
      type: r.type,
      id: r.id,
      revision: r.revision,
      commit: r.commit,
      files: r.files.length,
      bytes: r.files.reduce((n, f) => n + f.size, 0),
      referenced: r.files.filter((f) => f.reference).length,
      referencedBytes: r.files.filter((f) => f.reference).reduce((n, f) => n + f.size, 0),
    })),
  };
}
