/**
 * The evidence record `import` keeps for every revision it committed: who signed it, from which bundle
 * and source commit, when it was imported and last re-verified, and the files with their SHA-256.
 * `airlock serve` reads it for its page, for the ModelScope API (whose cache has no hashes on disk) and
 * as the mark that a revision is complete (it is written after the commit).
 *
 * It lives NEXT TO the cache, never inside it, so huggingface_hub's and modelscope's scanners see
 * nothing new: `<cache>.airlock/evidence/<layout>/<repo folder>/<commit>.json`.
 */
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { randomSuffix } from '../fs/atomic.js';
import { ownerIsDead, ownerTag } from '../fs/owner.js';
import { COMMIT_RE, isSafeRelativePath } from '../fs/safe-path.js';

export type EvidenceLayout = 'hf' | 'modelscope';

export interface EvidenceFile {
  path: string;
  size: number;
  sha256: string;
  /** The hub cache's blob name (sha256 for LFS files, else the git blob sha1). */
  etag: string;
  lfs: boolean;
  /** ModelScope: the last commit that touched the file. */
  lastCommit?: string;
  /** What loading the file would import, as judged on this side when it was imported (issue 17). */
  content?: { verdict: 'safe' | 'unsafe' | 'unscannable' | 'no-code'; globals: string[]; unsafeGlobals: string[] };
}

export interface EvidenceRecord {
  record: 'model-airlock-evidence';
  recordVersion: 1;
  layout: EvidenceLayout;
  type: 'model' | 'dataset';
  id: string;
  /** What the bundle asked for (branch, tag or commit). */
  revision: string;
  commit: string;
  /** The repo folder relative to the cache root (`models--acme--tiny`, `models/acme/tiny`). */
  folder: string;
  source: { kind: string; endpoint: string; createdAt?: number };
  bundle: { name: string; sha256: string | null; bytes: number };
  signers: Array<{ fingerprint: string; userIds: string[]; signedAt: string }>;
  importedAt: string;
  lastVerifiedAt: string;
  tool: { name: 'model-airlock'; version: string };
  files: EvidenceFile[];
}

/** `<cache>.airlock/evidence`: a sibling of the cache root. */
export function evidenceRoot(cacheDir: string): string {
  const root = resolve(cacheDir);
  return join(dirname(root), `${basename(root)}.airlock`, 'evidence');
}

function recordPath(root: string, layout: EvidenceLayout, folder: string, commit: string): string {
  return join(root, layout, ...folder.split('/'), `${commit}.json`);
}

/**
 * Writes (or refreshes) one record atomically. A revision imported again keeps its first `importedAt`
 * and gets a new `lastVerifiedAt` (the whole bundle verified again).
 */
export async function writeEvidence(cacheDir: string, record: EvidenceRecord): Promise<string> {
  const path = recordPath(evidenceRoot(cacheDir), record.layout, record.folder, record.commit);
  const previous = await readEvidenceFile(path);
  const merged: EvidenceRecord = previous ? { ...record, importedAt: previous.importedAt } : record;
  await mkdir(dirname(path), { recursive: true });
  await sweepDeadTemps(path);
  // the writer's owner tag in the temp name: a later write can tell a dead writer's leftover (kill -9
  // between write and rename) from a concurrent writer's file in flight
  const temp = `${path}.${ownerTag()}-${randomSuffix()}.tmp`;
  try {
    await writeFile(temp, `${JSON.stringify(merged, null, 2)}\n`);
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
  return path;
}

/** Removes temp files of this record left by writers that died (never a live writer's). */
async function sweepDeadTemps(path: string): Promise<void> {
  const prefix = `${basename(path)}.`;
  const names = await readdir(dirname(path)).catch(() => [] as string[]);
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith('.tmp')) continue;
    if (ownerIsDead(name.slice(prefix.length, -'.tmp'.length))) await rm(join(dirname(path), name), { force: true }).catch(() => undefined);
  }
}

async function readEvidenceFile(path: string): Promise<EvidenceRecord | undefined> {
  let value: unknown;
  try {
    value = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    return undefined;
  }
  return isRecord(value) ? value : undefined;
}

/** Shape check: a record that does not look right is ignored, never trusted in part. */
function isRecord(value: unknown): value is EvidenceRecord {
  const v = value as Partial<EvidenceRecord> | null;
  return (
    typeof v === 'object' &&
    v !== null &&
    v.record === 'model-airlock-evidence' &&
    v.recordVersion === 1 &&
    (v.layout === 'hf' || v.layout === 'modelscope') &&
    (v.type === 'model' || v.type === 'dataset') &&
    typeof v.id === 'string' &&
    typeof v.revision === 'string' &&
    typeof v.commit === 'string' &&
    COMMIT_RE.test(v.commit) &&
    typeof v.importedAt === 'string' &&
    typeof v.lastVerifiedAt === 'string' &&
    Array.isArray(v.signers) &&
    Array.isArray(v.files) &&
    v.files.every(
      (f) =>
        typeof f === 'object' &&
        f !== null &&
        typeof f.path === 'string' &&
        isSafeRelativePath(f.path) &&
        Number.isSafeInteger(f.size) &&
        f.size >= 0 &&
        typeof f.sha256 === 'string' &&
        /^[0-9a-f]{64}$/.test(f.sha256) &&
        typeof f.etag === 'string',
    )
  );
}

/** Every record of one repo folder, newest import first (nothing when there is none). */
export async function readEvidence(cacheDir: string, layout: EvidenceLayout, folder: string): Promise<EvidenceRecord[]> {
  const dir = join(evidenceRoot(cacheDir), layout, ...folder.split('/'));
  const names = await readdir(dir).catch(() => [] as string[]);
  const out: EvidenceRecord[] = [];
  for (const name of names) {
    const m = /^([0-9a-f]{40})\.json$/.exec(name);
    if (!m) continue;
    const record = await readEvidenceFile(join(dir, name));
    if (record && record.commit === m[1] && record.folder === folder && record.layout === layout) out.push(record);
  }
  return out.sort((a, b) => (a.importedAt < b.importedAt ? 1 : a.importedAt > b.importedAt ? -1 : 0));
}

/**
 * After `cache verify` re-hashed every blob: records `lastVerifiedAt` for each revision whose files all
 * resolved to blobs that matched their names. Returns how many records were refreshed.
 */
export async function refreshVerifiedEvidence(
  cacheDir: string,
  revisions: ReadonlyArray<{ folder: string; commit: string; allBlobsGood: boolean }>,
  at: Date = new Date(),
): Promise<number> {
  let refreshed = 0;
  for (const revision of revisions) {
    if (!revision.allBlobsGood) continue;
    const path = recordPath(evidenceRoot(cacheDir), 'hf', revision.folder, revision.commit);
    const record = await readEvidenceFile(path);
    if (record === undefined || record.commit !== revision.commit) continue;
    await writeEvidence(cacheDir, { ...record, lastVerifiedAt: at.toISOString() });
    refreshed++;
  }
  return refreshed;
}
