/**
 * ModelScope's JSON, as it arrives, and its strict parse into domain types (spec modelscope.md §2.4–§2.6).
 * Every `/api/v1` answer is an envelope `{Code, Success, Message, RequestId, Data}`; success is
 * `Code == 200` and `Success != false`. Nothing here trusts the server: fields are checked, every problem
 * of an answer is reported at once (E_HUB_PROTOCOL naming the URL), and every listed path is validated
 * (E_UNSAFE_PATH) before it can name a file on disk.
 */
import { createHash } from 'node:crypto';
import { AirlockError } from '../../errors.js';
import { COMMIT_RE, unsafeRelativePathReason } from '../../fs/safe-path.js';
import { formatRepoRef } from '../repo-ref.js';
import type { RemoteFile, RepoRef } from '../types.js';

export interface MsEnvelope {
  /** `Code` (HTTP-like 200, or a long business code); undefined when absent. */
  code: number | undefined;
  success: boolean | undefined;
  message: string | undefined;
  requestId: string | undefined;
  data: unknown;
}

/** One branch or tag of `GET …/revisions` (`Data.RevisionMap.Branches[]` / `.Tags[]`). */
export interface MsRevision {
  name: string;
  kind: 'branch' | 'tag';
  /** Epoch seconds; written to `.mv` as `CreatedAt`. */
  createdAt: number | undefined;
  /** The commit the ref points at. */
  commitId: string | undefined;
}

/**
 * A ModelScope listing entry as a RemoteFile. ModelScope lists a SHA-256 for every file (normal and
 * LFS) but no git blob id, so every file is treated like an LFS file: `lfsSha256` = the listed
 * `Sha256` (the etag is then the sha256, downloads are checked against it), and `blobId` is the git
 * blob id of the LFS pointer for (sha256, size) — the real blob id for LFS files, a deterministic
 * stand-in for the others. The per-file last commit (`Revision`) is kept for the `.msc` index.
 */
export interface ModelScopeRemoteFile extends RemoteFile {
  lfsSha256: string;
  /** The listing's per-file `Revision`: the last commit that touched this file. */
  lastCommit: string;
  /** The listing's `IsLFS` (false when absent). */
  isLfs: boolean;
}

const SHA256_RE = /^[0-9a-f]{64}$/;
const MAX_PROBLEMS_SHOWN = 5;

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function isSize(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

export function protocolError(url: string, what: string, problems: string[]): AirlockError {
  const shown = problems.slice(0, MAX_PROBLEMS_SHOWN).join('; ');
  const more = problems.length > MAX_PROBLEMS_SHOWN ? ` (and ${problems.length - MAX_PROBLEMS_SHOWN} more)` : '';
  return new AirlockError('E_HUB_PROTOCOL', `malformed ${what} from ${url}: ${shown}${more}`, {
    subject: url,
    hint: 'the endpoint does not answer like a ModelScope hub; check --endpoint / MODELSCOPE_ENDPOINT / MODELSCOPE_DOMAIN',
  });
}

/** The git blob id of the LFS pointer file for content with this sha256 and size. */
export function lfsPointerBlobId(sha256: string, size: number): string {
  const pointer = `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${size}\n`;
  return createHash('sha1').update(`blob ${Buffer.byteLength(pointer)}\0`).update(pointer).digest('hex');
}

/** Reads an envelope; undefined when the value is not one (no `Code` and no `Data`/`Success`). */
export function readEnvelope(json: unknown): MsEnvelope | undefined {
  if (!isObject(json)) return undefined;
  if (!('Code' in json) && !('Success' in json) && !('Data' in json)) return undefined;
  const code = typeof json['Code'] === 'number' ? json['Code'] : typeof json['Code'] === 'string' && /^\d+$/.test(json['Code']) ? Number(json['Code']) : undefined;
  const message = typeof json['Message'] === 'string' ? json['Message'] : typeof json['message'] === 'string' ? json['message'] : undefined;
  return {
    code,
    success: typeof json['Success'] === 'boolean' ? json['Success'] : undefined,
    message,
    requestId: typeof json['RequestId'] === 'string' ? json['RequestId'] : undefined,
    data: json['Data'],
  };
}

/** `Code == 200` and `Success` not false (1.x `is_ok` / `raise_on_error`). */
export function envelopeOk(envelope: MsEnvelope): boolean {
  return envelope.code === 200 && envelope.success !== false;
}

/** `Data.RevisionMap.Branches[]` and `.Tags[]`, branches first, each list in the server's order. */
export function parseRevisions(data: unknown, url: string): MsRevision[] {
  const problems: string[] = [];
  const map = isObject(data) ? data['RevisionMap'] : undefined;
  if (!isObject(map)) throw protocolError(url, 'revision list', ['Data.RevisionMap is missing or not an object']);
  const out: MsRevision[] = [];
  for (const [key, kind] of [['Branches', 'branch'], ['Tags', 'tag']] as const) {
    const list = map[key];
    if (list === undefined || list === null) continue;
    if (!Array.isArray(list)) {
      problems.push(`RevisionMap.${key} is not an array`);
      continue;
    }
    list.forEach((item: unknown, i) => {
      if (!isObject(item) || typeof item['Revision'] !== 'string' || item['Revision'] === '') {
        problems.push(`RevisionMap.${key}[${i}] has no "Revision" name`);
        return;
      }
      const createdAt = item['CreatedAt'];
      const commitId = item['CommitId'];
      out.push({
        name: item['Revision'],
        kind,
        createdAt: typeof createdAt === 'number' && Number.isSafeInteger(createdAt) ? createdAt : undefined,
        commitId: typeof commitId === 'string' && commitId !== '' ? commitId.toLowerCase() : undefined,
      });
    });
  }
  if (problems.length > 0) throw protocolError(url, 'revision list', problems);
  return out;
}

/**
 * `Data.Files[]` of `GET …/repo/files?Recursive=True`: `tree` entries skipped, every `blob` checked
 * (safe `Path`, integer `Size`, 64-hex `Sha256`, non-empty `Revision`), duplicates refused.
 * `Data.Files` null or missing means an empty repo (1.x warns and returns []).
 */
export function parseFileList(data: unknown, url: string, repo: RepoRef): ModelScopeRemoteFile[] {
  if (!isObject(data)) throw protocolError(url, 'file listing', ['Data is not an object']);
  const list = data['Files'];
  if (list === null || list === undefined) return [];
  if (!Array.isArray(list)) throw protocolError(url, 'file listing', ['Data.Files is not an array']);
  const problems: string[] = [];
  const files: ModelScopeRemoteFile[] = [];
  const seen = new Set<string>();
  list.forEach((entry: unknown, i) => {
    if (!isObject(entry)) {
      problems.push(`Files[${i}] is not an object`);
      return;
    }
    const type = entry['Type'];
    if (type === 'tree') return;
    if (type !== 'blob') {
      problems.push(`Files[${i}].Type is ${JSON.stringify(type)}, not "blob" or "tree"`);
      return;
    }
    const path = entry['Path'];
    if (typeof path !== 'string') {
      problems.push(`Files[${i}].Path is not a string`);
      return;
    }
    const reason = unsafeRelativePathReason(path);
    if (reason !== undefined) {
      throw new AirlockError('E_UNSAFE_PATH', `${formatRepoRef(repo, false)}: the hub lists an unsafe file path ${JSON.stringify(path)} (${reason})`, {
        subject: path,
        hint: 'nothing was downloaded; the repo (or the server answering for it) cannot be exported safely',
      });
    }
    const size = entry['Size'];
    const sha = entry['Sha256'];
    const revision = entry['Revision'];
    const before = problems.length;
    if (!isSize(size)) problems.push(`${path}: Size ${JSON.stringify(size)} is not a byte count`);
    if (typeof sha !== 'string' || !SHA256_RE.test(sha.toLowerCase())) {
      problems.push(`${path}: Sha256 ${sha === undefined || sha === null ? 'is missing (airlock cannot verify the file)' : `${JSON.stringify(sha)} is not 64 hex digits`}`);
    }
    if (typeof revision !== 'string' || revision === '') problems.push(`${path}: Revision (the file's last commit) is missing`);
    if (seen.has(path)) problems.push(`${path} is listed twice`);
    seen.add(path);
    if (problems.length > before) return;
    const sha256 = (sha as string).toLowerCase();
    files.push({
      path,
      size: size as number,
      lfsSha256: sha256,
      blobId: lfsPointerBlobId(sha256, size as number),
      lastCommit: revision as string,
      isLfs: entry['IsLFS'] === true,
    });
  });
  if (problems.length > 0) throw protocolError(url, 'file listing', problems);
  return files;
}

/** Picks `name` among the branches and tags (a branch wins over a tag of the same name). */
export function findRevision(revisions: readonly MsRevision[], name: string): MsRevision | undefined {
  return revisions.find((r) => r.kind === 'branch' && r.name === name) ?? revisions.find((r) => r.name === name);
}

export { COMMIT_RE };

/** `GET /api/v1/datasets/{owner}/{name}` → `Data.Id`, the numeric hub id the 1.x listing is addressed by (§2.9). */
export function parseDatasetId(data: unknown, url: string): string {
  const id = isObject(data) ? data['Id'] : undefined;
  if (typeof id === 'number' && Number.isSafeInteger(id) && id >= 0) return String(id);
  if (typeof id === 'string' && /^\d{1,15}$/.test(id)) return id;
  throw protocolError(url, 'dataset info', [`Data.Id ${JSON.stringify(id ?? null)} is not a numeric dataset id`]);
}

/**
 * One page of `GET /api/v1/datasets/{hubId}/repo/tree?…&PageNumber=&PageSize=`: the raw `Data.Files`
 * entries (tree entries included: they count towards the page size), `[]` for null/missing.
 */
export function datasetPageEntries(data: unknown, url: string): unknown[] {
  if (!isObject(data)) throw protocolError(url, 'dataset file listing', ['Data is not an object']);
  const list = data['Files'];
  if (list === null || list === undefined) return [];
  if (!Array.isArray(list)) throw protocolError(url, 'dataset file listing', ['Data.Files is not an array']);
  return list;
}

/**
 * ModelScope datasets have no revisions endpoint the SDK uses (the ref name is passed through, never
 * resolved), so there is no commit to pin. airlock pins the listing instead: a 40-hex SHA-1 over the ref
 * and every file's path, size, sha256 and last commit. The same listing always gives the same id; any
 * change to the dataset gives another (a resumed export then notices).
 */
export function datasetSnapshotId(revision: string, files: readonly ModelScopeRemoteFile[]): string {
  const hash = createHash('sha1').update(`airlock modelscope dataset snapshot v1\n${revision}\n`);
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const f of sorted) hash.update(`${f.path}\0${f.size}\0${f.lfsSha256}\0${f.lastCommit}\n`);
  return hash.digest('hex');
}
