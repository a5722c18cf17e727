/**
 * `airlock export`: resolve → download + hash (per repo, pinned to one commit) → manifest →
 * SHA256SUMS → signature → one tar written in a single pass. The work dir keeps verified downloads
 * until the bundle is safely renamed into place, so a failed export can be re-run without
 * downloading completed files again.
 */
import { lstat, mkdir, open, readdir, rm, rmdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { checkPartCount, formatPartsIndex, indexPathFor, PARTS_FORMAT, type PartsIndex } from '../bundle/parts.js';
import { holderPid, tryAcquireLock } from '../fs/lock.js';
import { watchInterrupts } from '../import/interrupt.js';
import { writeFileAtomic } from '../fs/atomic.js';
import type { Inventory } from '../cache/inventory.js';
import { AirlockError, fsError } from '../errors.js';
import { FORMAT_VERSION, MANIFEST_NAME, payloadEntryName } from '../bundle/format.js';
import { formatManifest, type Manifest, type ManifestFile, type ManifestRepo } from '../bundle/manifest.js';
import { BundleFile } from './bundle-file.js';
import { layOut, leadingBlock, leadingReserve, type BundleLayout, type LayoutEntry } from './bundle-layout.js';
import { writeTar, type BundleLeading, type WrittenBundle } from '../bundle/writer.js';
import { formatSha256Sums, type SumsEntry } from '../integrity/sha256sums.js';
import { Digester, sha256Hex, type Digests } from '../integrity/digest.js';
import type { Signer } from '../signing/sign.js';
import { etagOf, type HubClient, type RemoteFile, type RepoRef } from '../hub/types.js';
import { checkIndexAt, checkSafetensorsAt, isSafetensorsPath, isShardIndexPath, type TensorInfo } from '../integrity/weights.js';
import type { ModelScopeClient } from '../hub/modelscope/client.js';
import { allowList, analyseAt, verdictOf, type FileContent } from '../content/index.js';
import type { ManifestContent } from '../bundle/manifest.js';
import type { ModelScopeRemoteFile } from '../hub/modelscope/wire.js';
import { toolVersion } from '../version.js';
import { downloadSnapshot, planSnapshot, repoWorkDir, snapshotWorkDir, verifiedRecordPath, type FetchOptions, type FetchProgress, type Placement, type SnapshotPlan } from './fetch.js';
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
  /** Default true: record in the manifest what loading each file would execute (pickle globals); never refuses. */
  contentCheck?: boolean | undefined;
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
  /**
   * Also compute the SHA-256 of the whole bundle (one more read of it at the end: the leading entries
   * come first but are written last). Always done for split volumes, whose index lists it.
   */
  bundleSha256?: boolean | undefined;
  now?: () => Date;
  /** Stops the export (E_INTERRUPTED): the partial bundle keeps what arrived, for a re-run to resume. */
  signal?: AbortSignal | undefined;
  /** Turn SIGINT/SIGTERM into that same stop while the export runs (default false; the CLI sets it). */
  handleSignals?: boolean | undefined;
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
  /** Each bundled file's content verdict (empty when the check was off). */
  content: FileContent[];
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

/** Stands in for hashes not known yet: same length, so the layout does not move when they arrive. */
const PLACEHOLDER_SHA256 = '0'.repeat(64);
/** A generous single-dtype summary: most shards have one dtype and fewer than 100,000 tensors. */
const PLACEHOLDER_TENSORS: TensorInfo = { tensors: 99999, dtypes: { BF16: 99999 } };
/** Room for a content record: pickle-ish files usually import fewer than a dozen globals (more only costs a relayout). */
const PICKLEISH = /\.(bin|pt|pth|ckpt|pkl|pickle|joblib|npy|npz|p|pck|dat|data)$/i;
function placeholderContent(path: string): ManifestContent {
  return PICKLEISH.test(path) || !/\.[a-z0-9]+$/i.test(path)
    ? { verdict: 'unscannable', format: 'torch-legacy', globals: Array.from({ length: 12 }, () => 'x'.repeat(40)) }
    : { verdict: 'unscannable', format: 'torch-legacy' };
}

/**
 * The draft export sizes the leading reserve from, for a finished manifest: each file's summaries
 * replaced by the placeholders the exporter lays the bundle out with (hashes keep their length). For
 * writers that must lay a bundle out exactly as export does (the test bundle builder).
 */
export function draftManifestOf(manifest: Manifest): Manifest {
  return {
    ...manifest,
    repos: manifest.repos.map((repo) => ({
      ...repo,
      files: repo.files.map((f) => ({
        ...f,
        ...(f.safetensors === undefined ? {} : { safetensors: PLACEHOLDER_TENSORS }),
        ...(f.content === undefined ? {} : { content: placeholderContent(f.path) }),
      })),
    })),
  };
}

/** The manifest's repos for these plans, with each file's sha256 and safetensors summary from the callbacks. */
function describeRepos(
  plans: readonly SnapshotPlan[],
  clients: readonly HubClient[],
  references: Map<SnapshotPlan, RemoteFile[]>,
  sha256Of: (plan: SnapshotPlan, file: RemoteFile) => string,
  tensorsOf: (file: RemoteFile, plan: SnapshotPlan) => TensorInfo | undefined,
  contentOf: (file: RemoteFile, plan: SnapshotPlan) => ManifestContent | undefined = () => undefined,
): ManifestRepo[] {
  return plans.map((plan, i) => {
    const client = clients[i]!;
    const ref = plan.repo;
    const files: ManifestFile[] = plan.selected.map((f) => {
      const entry: ManifestFile = { path: f.path, size: f.size, sha256: sha256Of(plan, f), etag: etagOf(f), blobId: f.blobId, lfs: f.lfsSha256 !== undefined };
      const lastCommit = (f as Partial<ModelScopeRemoteFile>).lastCommit;
      if (client.kind === 'modelscope' && typeof lastCommit === 'string' && /^[0-9a-f]{40}$/.test(lastCommit)) entry.lastCommit = lastCommit;
      const tensors = tensorsOf(f, plan);
      if (tensors !== undefined) entry.safetensors = tensors;
      const content = contentOf(f, plan);
      if (content !== undefined) entry.content = content;
      return entry;
    });
    for (const f of references.get(plan) ?? []) {
      files.push({ path: f.path, size: f.size, sha256: f.lfsSha256!, etag: f.lfsSha256!, blobId: f.blobId, lfs: true, reference: true });
    }
    const source: ManifestRepo['source'] = { kind: client.kind, endpoint: client.endpoint };
    if (client.kind === 'modelscope') {
      const createdAt = (client as ModelScopeClient).resolved?.(ref)?.createdAt;
      if (createdAt !== undefined && Number.isSafeInteger(createdAt) && createdAt >= 0) source.createdAt = createdAt;
    }
    return { type: ref.type, id: ref.id, revision: ref.revision, commit: plan.commit, source, files };
  });
}

function manifestOf(repos: ManifestRepo[], createdAt: string): Manifest {
  return { format: 'model-airlock-bundle', formatVersion: FORMAT_VERSION, tool: { name: 'model-airlock', version: toolVersion }, createdAt, repos };
}

function sumsOf(
  plans: readonly SnapshotPlan[],
  sha256Of: (plan: SnapshotPlan, file: RemoteFile) => string,
  nameOf: (plan: SnapshotPlan, path: string) => string,
  manifestSha256: string,
): Buffer {
  const sums: SumsEntry[] = plans.flatMap((plan) => plan.selected.map((f) => ({ path: nameOf(plan, f.path), sha256: sha256Of(plan, f) })));
  return Buffer.from(formatSha256Sums([...sums, { path: MANIFEST_NAME, sha256: manifestSha256 }]), 'utf8');
}

/**
 * A file an earlier run completed in the partial bundle: an LFS file is named by its sha256 (the
 * run checked it before marking it); a git file's sha256 is not in the listing, so it is read again
 * (they are small) and must still match its blob id.
 */
async function completedEarlier(bundle: BundleFile, index: number, file: RemoteFile): Promise<Digests | undefined> {
  if (file.lfsSha256 !== undefined) return { size: file.size, sha256: file.lfsSha256 };
  const entry = bundle.layout.entries[index]!;
  const digester = new Digester(file.size);
  const buffer = Buffer.allocUnsafe(Math.min(1024 * 1024, Math.max(1, file.size)));
  for (let at = 0; at < file.size; ) {
    const n = await bundle.read(buffer.subarray(0, Math.min(buffer.length, file.size - at)), entry.dataAt + at);
    if (n === 0) return undefined;
    digester.update(buffer.subarray(0, n));
    at += n;
  }
  const digests = digester.digest();
  if (digests.gitSha1 === file.blobId) return digests;
  await bundle.note(index, 0);
  return undefined;
}

/** Copies a verified work-dir file into its place in the bundle. */
async function copyInto(bundle: BundleFile, entry: LayoutEntry, localPath: string): Promise<void> {
  const handle = await open(localPath, 'r').catch((error: unknown) => {
    throw fsError(error, 'read', localPath);
  });
  try {
    const buffer = Buffer.allocUnsafe(1024 * 1024);
    for (let at = 0; at < entry.size; ) {
      const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, entry.size - at), at).catch((error: unknown) => {
        throw fsError(error, 'read', localPath);
      });
      if (bytesRead === 0) {
        throw new AirlockError('E_IO', `${localPath} changed size since it was verified`, { subject: localPath, hint: 'something modified the work dir during export; run the export again' });
      }
      await bundle.write(buffer.subarray(0, bytesRead), entry.dataAt + at);
      at += bytesRead;
    }
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** The unsigned parts index of a bundle written in place as volumes. */
function partsIndexOf(outPath: string, splitSize: number, size: number, sums: Awaited<ReturnType<BundleFile['digest']>>): PartsIndex {
  return {
    format: PARTS_FORMAT,
    formatVersion: 1,
    bundle: basename(outPath),
    size,
    sha256: sums.sha256,
    partSize: splitSize,
    parts: sums.pieces.map((p) => ({ name: basename(p.path), size: p.size, sha256: p.sha256 })),
  };
}

/** The whole tar with `leading` in front, for a copy when the leading entries outgrew their reserve. */
async function* relaidOut(bundle: BundleFile, layout: BundleLayout, leading: BundleLeading): AsyncGenerator<Uint8Array> {
  yield (await leadingBlock(leading))!;
  const buffer = Buffer.allocUnsafe(1024 * 1024);
  for (let at = layout.reserve; at < layout.size; ) {
    const n = await bundle.read(buffer, at);
    if (n === 0) throw new AirlockError('E_IO', `the partial bundle ended at byte ${at} of ${layout.size}`);
    yield Buffer.from(buffer.subarray(0, n));
    at += n;
  }
}

/** The lock beside the output: a dot file, so `cat NAME.tar.*` never picks it up. */
export function outputLockPath(outPath: string): string {
  return join(dirname(outPath), `.${basename(outPath)}.lock`);
}

/** The lock inside the work dir (two exports sharing a --work-dir would remove each other's files). */
export function workLockPath(workDir: string): string {
  return join(workDir, '.airlock-export.lock');
}

/**
 * Takes the export's exclusive lock at `path` (no waiting: a second export to the same output is
 * refused, with the holder's pid) and returns its release function.
 */
async function lockFor(path: string, what: string, outPath: string): Promise<() => Promise<void>> {
  const got = await tryAcquireLock(path);
  if ('release' in got) return got.release;
  const pid = got.holder === undefined ? undefined : holderPid(got.holder);
  throw new AirlockError('E_OUTPUT_BUSY', `another export (${pid === undefined ? 'unknown process' : `pid ${pid}`}) is ${what}`, {
    subject: outPath,
    hint: `wait for it to finish, or choose another -o${what.includes('work dir') ? ' / --work-dir' : ''}; if no export is running (one on another host sharing this folder?), remove ${path}`,
  });
}

/**
 * Checks every path the export will write before anything is downloaded: the output's folder exists
 * (created if missing, as `keys generate` and `import` do) and is a folder; the work dir can be
 * created; an output of an earlier export is a regular file (a directory or device there is refused
 * even with --force, never removed).
 */
async function prepareOutputs(outPath: string, workDir: string): Promise<void> {
  const outDir = dirname(outPath);
  await mkdir(outDir, { recursive: true }).catch((error: unknown) => {
    throw fsError(error, 'create the output folder', outDir);
  });
  const self = await lstat(outPath).catch(() => undefined);
  if (self?.isDirectory() === true) {
    throw new AirlockError('E_USAGE', `${outPath} is a directory`, {
      subject: outPath,
      hint: `name the bundle file, or end the path with / to write <name>.airlock.tar inside it`,
    });
  }
  const partial = await lstat(`${outPath}.partial`).catch(() => undefined);
  for (const [path, info] of [...(await Promise.all((await existingOutputs(outPath)).map(async (p) => [p, await lstat(p).catch(() => undefined)] as const))), [`${outPath}.partial`, partial] as const]) {
    if (info !== undefined && !info.isFile()) {
      throw new AirlockError('E_OUTPUT_EXISTS', `${path} exists and is not a regular file`, {
        subject: path,
        hint: 'airlock only replaces files it wrote (not even with --force): move it away, or choose another -o path',
      });
    }
  }
  await mkdir(workDir, { recursive: true }).catch((error: unknown) => {
    throw fsError(error, 'create the work dir', workDir);
  });
}

export async function exportBundle(options: ExportOptions): Promise<ExportResult> {
  if (options.repos.length === 0) throw new AirlockError('E_USAGE', 'no repository given', { hint: 'airlock export acme/tiny-llm -o tiny.airlock.tar …' });
  await prepareOutputs(options.outPath, options.workDir);
  const releases: Array<() => Promise<void>> = [];
  const interrupts = watchInterrupts(
    options.signal,
    options.handleSignals ?? false,
    `the partial bundle (${basename(options.outPath)}${options.splitSize === undefined ? '' : '.000'}.partial${options.splitSize === undefined ? '' : ', …'}) keeps what was downloaded: run the same export again to resume`,
  );
  try {
    releases.push(await lockFor(outputLockPath(options.outPath), `writing ${options.outPath}`, options.outPath));
    releases.push(await lockFor(workLockPath(options.workDir), `using the work dir ${options.workDir}`, options.outPath));
    const { signal } = interrupts;
    signal.throwIfAborted();
    const work = exportLocked(options, signal);
    // an interruption ends the export now; what is in flight is abandoned, as after a kill -9 — the
    // partial bundle records progress only after each write, so a re-run resumes from it
    work.catch(() => undefined);
    const stopped = new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true }));
    stopped.catch(() => undefined);
    return await Promise.race([work, stopped]);
  } finally {
    interrupts.dispose();
    for (const release of releases.reverse()) await release();
    if (!options.keepWorkDir) await rmdir(options.workDir).catch(() => undefined);
  }
}

async function exportLocked(options: ExportOptions, signal: AbortSignal): Promise<ExportResult> {
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
  const createdAt = (options.now?.() ?? new Date()).toISOString();
  // Every size is known: lay the bundle out now, with placeholders where hashes will go.
  const nameOf = (plan: SnapshotPlan, path: string): string => payloadEntryName(plan.repo.type, plan.repo.id, plan.commit, path);
  const draftSha256 = (_plan: SnapshotPlan, f: RemoteFile): string => f.lfsSha256 ?? PLACEHOLDER_SHA256;
  const draft = describeRepos(plans, planned.map(clientOf), references, draftSha256, (f) => (isSafetensorsPath(f.path) ? PLACEHOLDER_TENSORS : undefined), (f) =>
    options.contentCheck === false ? undefined : placeholderContent(f.path),
  );
  const draftSums = sumsOf(plans, draftSha256, nameOf, PLACEHOLDER_SHA256);
  const draftManifest = formatManifest(manifestOf(draft, createdAt));
  const reserve = leadingReserve(draftSums.byteLength, draftManifest.byteLength, options.signer !== undefined);
  const layout = layOut(
    plans.flatMap((plan) => plan.selected.map((f) => ({ name: nameOf(plan, f.path), size: f.size, expected: f.lfsSha256 ?? f.blobId }))),
    reserve,
  );
  const indexOf = new Map(layout.entries.map((e, i) => [e.name, i]));
  const entryIndex = (plan: SnapshotPlan, f: RemoteFile): number => indexOf.get(nameOf(plan, f.path))!;
  // the bundle's size is known now: too many parts is refused before anything is written
  if (options.splitSize !== undefined) checkPartCount(options.splitSize, layout.size, '--split-size');

  const bundle = await BundleFile.open(options.outPath, layout, options.splitSize, signal);
  let published = false;
  try {
    // What an earlier run of this very export left in the partial bundle.
    const placements = new Map<SnapshotPlan, Placement>();
    // The bundle is written in place at its final size (sparse): it needs its size minus what an
    // earlier run already wrote into it — once, not a work copy plus a bundle.
    let writtenEarlier = 0;
    let workBytes = 0;
    for (const [i, plan] of plans.entries()) {
      if (clientOf(planned[i]!).rangeSource === undefined) {
        workBytes += plan.remainingBytes;
        continue;
      }
      const done = new Map<string, Digests>();
      let remaining = 0;
      for (const f of plan.selected) {
        const k = entryIndex(plan, f);
        const earlier = bundle.earlier(k);
        const digests = earlier.complete ? await completedEarlier(bundle, k, f) : undefined;
        if (digests !== undefined) done.set(f.path, digests);
        else remaining += f.size - earlier.kept;
        writtenEarlier += digests !== undefined ? f.size : earlier.kept;
      }
      plan.remainingBytes = remaining;
      placements.set(plan, {
        done,
        target: (f) => bundle.target(entryIndex(plan, f)),
        completed: (f) => bundle.note(entryIndex(plan, f), f.size, true),
      });
    }
    if (options.spaceCheck !== false) {
      await checkFreeSpace(options.workDir, dirname(options.outPath), { workBytes, outputBytes: layout.size - writtenEarlier }).catch(async (error: unknown) => {
        // nothing of an earlier run to keep: do not leave an empty partial bundle behind
        if (layout.entries.every((_, k) => bundle.earlier(k).kept === 0)) await bundle.discard();
        throw error;
      });
    }
    options.onPlanned?.(plans);
    for (const e of layout.entries) await bundle.write(e.header, e.headerAt);

    const digestsOf = new Map<string, Digests>();
    for (const [i, plan] of plans.entries()) {
      const client = clientOf(planned[i]!);
      const placement = placements.get(plan);
      const snapshot = await downloadSnapshot(client, plan, { ...optionsFor(planned[i]!), placement });
      for (const f of snapshot.files) {
        digestsOf.set(nameOf(plan, f.remote.path), { size: f.size, sha256: f.sha256 });
        // sources without Range support land in the work dir first: copy into place
        if (placement === undefined) await copyInto(bundle, layout.entries[entryIndex(plan, f.remote)]!, f.localPath);
      }
    }

    const tensors = new Map<string, TensorInfo>();
    if (options.weightCheck !== false) {
      // before the leading entries are written: a truncated shard or an index naming a missing one never leaves here
      for (const plan of plans) {
        const where = `${plan.repo.type === 'dataset' ? 'datasets/' : ''}${plan.repo.id}@${plan.commit}`;
        const paths = [...plan.selected.map((f) => f.path), ...(references.get(plan) ?? []).map((f) => f.path)];
        for (const f of plan.selected) {
          const entry = layout.entries[entryIndex(plan, f)]!;
          const read = (buffer: Buffer, position: number): Promise<number> =>
            bundle.read(buffer.subarray(0, Math.max(0, Math.min(buffer.length, f.size - position))), entry.dataAt + position);
          if (isSafetensorsPath(f.path)) tensors.set(entry.name, await checkSafetensorsAt(read, f.size, where, f.path));
          else if (isShardIndexPath(f.path)) await checkIndexAt(read, f.size, f.path, paths, where);
        }
      }
    }

    // what loading each file would execute, recorded for the offline side to compare (it judges again itself)
    const content = new Map<string, FileContent>();
    if (options.contentCheck !== false) {
      const allowed = allowList();
      for (const plan of plans) {
        const where = `${plan.repo.type === 'dataset' ? 'datasets/' : ''}${plan.repo.id}@${plan.commit}`;
        for (const f of plan.selected) {
          const entry = layout.entries[entryIndex(plan, f)]!;
          const read = (buffer: Buffer, position: number): Promise<number> =>
            bundle.read(buffer.subarray(0, Math.max(0, Math.min(buffer.length, f.size - position))), entry.dataAt + position);
          content.set(entry.name, { repo: where, path: f.path, ...verdictOf(await analyseAt(f.path, f.size, read), allowed) });
        }
      }
    }
    const contentOf = (f: RemoteFile, plan: SnapshotPlan): ManifestContent | undefined => {
      const c = content.get(nameOf(plan, f.path));
      return c === undefined ? undefined : { verdict: c.verdict, format: c.format, ...(c.globals.length > 0 ? { globals: c.globals } : {}) };
    };
    const repos = describeRepos(plans, planned.map(clientOf), references, (plan, f) => digestsOf.get(nameOf(plan, f.path))!.sha256, (f, plan) => tensors.get(nameOf(plan, f.path)), contentOf);
    const manifestBytes = formatManifest(manifestOf(repos, createdAt));
    const manifestSha256 = sha256Hex(manifestBytes);
    const sumsBytes = sumsOf(plans, (plan, f) => digestsOf.get(nameOf(plan, f.path))!.sha256, nameOf, manifestSha256);
    const signature = options.signer ? await options.signer.sign(sumsBytes) : undefined;
    const leading = { sums: sumsBytes, signature, manifest: manifestBytes };

    // --force: a previous export's extra parts would otherwise sit beside the new ones
    if (options.overwrite) for (const path of await existingOutputs(options.outPath)) await rm(path, { force: true });
    const block = await leadingBlock(leading, layout.reserve);
    let written: WrittenBundle;
    if (block !== undefined) {
      await bundle.write(block, 0);
      const sums = options.splitSize !== undefined || options.bundleSha256 === true ? await bundle.digest() : undefined;
      await bundle.publish();
      published = true;
      written = { path: options.outPath, bytes: layout.size, ...(sums ? { sha256: sums.sha256 } : {}) };
      if (sums !== undefined && options.splitSize !== undefined) written.parts = partsIndexOf(options.outPath, options.splitSize, layout.size, sums);
    } else {
      // the leading entries outgrew their reserve (an unusually large signature): copy once behind them
      const relaidSize = (await leadingBlock(leading))!.length + layout.size - layout.reserve;
      written = await writeTar(options.outPath, relaidOut(bundle, layout, leading), options.splitSize, relaidSize);
      published = true;
      await bundle.discard();
    }
    if (written.parts !== undefined) await writePartsIndex(options.outPath, written.parts, options.signer);
    if (!options.keepWorkDir) await removeWorkFiles(options.workDir, options.repos, repos);
    return result(written, repos, manifestSha256, [...content.values()]);
  } finally {
    if (!published) await bundle.close();
  }

  function result(bundleWritten: WrittenBundle, repos: ManifestRepo[], manifestSha256: string, content: FileContent[]): ExportResult {
  return {
    content,
    bundle: bundleWritten,
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
}
