/**
 * The Hub's JSON, as it arrives, and its strict parse into domain types (spec hf-hub.md §2.3, §2.4).
 * Nothing here trusts the server: every field is checked, every problem of a page is reported at once
 * (E_HUB_PROTOCOL naming the URL), and every listed path is validated (E_UNSAFE_PATH naming the path
 * and the repo) before any of them can name a file on disk.
 */
import { AirlockError } from '../../errors.js';
import { COMMIT_RE, unsafeRelativePathReason } from '../../fs/safe-path.js';
import type { RemoteFile, RepoRef } from '../types.js';
import { formatRepoRef } from '../repo-ref.js';

/** `GET /api/{type}s/{id}/revision/{rev}` (only what we read). */
export interface WireRepoInfo {
  id?: string;
  sha?: string;
  private?: boolean;
  gated?: false | 'auto' | 'manual';
  disabled?: boolean;
}

/** One element of `GET /api/{type}s/{id}/tree/{rev}?recursive=true&expand=false`. */
export type WireTreeEntry =
  | {
      type: 'file';
      /** Git blob sha1 (of the LFS pointer for LFS files). */
      oid: string;
      size: number;
      path: string;
      lfs?: { oid: string; size: number; pointerSize?: number };
      xetHash?: string;
    }
  | { type: 'directory'; oid: string; size: number; path: string };

const SHA1_RE = /^[0-9a-f]{40}$/;
const SHA256_RE = /^[0-9a-f]{64}$/;
const MAX_PROBLEMS_SHOWN = 5;

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function isSize(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function protocolError(url: string, what: string, problems: string[]): AirlockError {
  const shown = problems.slice(0, MAX_PROBLEMS_SHOWN).join('; ');
  const more = problems.length > MAX_PROBLEMS_SHOWN ? ` (and ${problems.length - MAX_PROBLEMS_SHOWN} more)` : '';
  return new AirlockError('E_HUB_PROTOCOL', `malformed ${what} from ${url}: ${shown}${more}`, {
    subject: url,
    hint: 'the endpoint does not answer like a Hugging Face Hub; check --endpoint / HF_ENDPOINT',
  });
}

/** The commit `sha` of a repo-info answer: exactly 40 lowercase hex. */
export function parseRepoInfoCommit(json: unknown, url: string): string {
  if (!isObject(json)) throw protocolError(url, 'repo info', ['not a JSON object']);
  const sha = json['sha'];
  if (typeof sha !== 'string' || !COMMIT_RE.test(sha)) {
    throw protocolError(url, 'repo info', [`"sha" is ${sha === undefined ? 'missing' : JSON.stringify(sha)}, not a 40-character lowercase hex commit`]);
  }
  return sha;
}

/**
 * One tree page → its files (directories dropped). Checks every entry's shape, then every file path;
 * `seen` carries the paths of earlier pages, so a path listed twice is caught across pages too.
 */
export function parseTreePage(json: unknown, url: string, repo: RepoRef, seen: Set<string>): RemoteFile[] {
  if (!Array.isArray(json)) throw protocolError(url, 'tree listing', ['not a JSON array']);
  const problems: string[] = [];
  const files: RemoteFile[] = [];
  json.forEach((entry: unknown, index) => {
    const at = `entry ${index}`;
    if (!isObject(entry)) {
      problems.push(`${at} is not an object`);
      return;
    }
    const { type, path, oid, size, lfs } = entry;
    const name = typeof path === 'string' ? `${at} (${JSON.stringify(path)})` : at;
    if (typeof path !== 'string') problems.push(`${at}: "path" is not a string`);
    if (type === 'directory') return;
    if (type !== 'file') {
      problems.push(`${name}: unknown type ${JSON.stringify(type)}`);
      return;
    }
    if (typeof oid !== 'string' || !SHA1_RE.test(oid)) problems.push(`${name}: "oid" is not a git blob id`);
    if (!isSize(size)) problems.push(`${name}: "size" is not a non-negative integer`);
    let lfsSha256: string | undefined;
    let lfsSize: number | undefined;
    if (lfs !== undefined && lfs !== null) {
      if (!isObject(lfs)) problems.push(`${name}: "lfs" is not an object`);
      else {
        if (typeof lfs['oid'] !== 'string' || !SHA256_RE.test(lfs['oid'])) problems.push(`${name}: "lfs.oid" is not a sha256`);
        else lfsSha256 = lfs['oid'];
        if (!isSize(lfs['size'])) problems.push(`${name}: "lfs.size" is not a non-negative integer`);
        else lfsSize = lfs['size'];
      }
    }
    if (typeof path !== 'string' || typeof oid !== 'string' || !isSize(size)) return;
    if (seen.has(path)) {
      problems.push(`${name}: listed twice`);
      return;
    }
    seen.add(path);
    const file: RemoteFile = { path, size: lfsSize ?? size, blobId: oid };
    if (lfsSha256 !== undefined) file.lfsSha256 = lfsSha256;
    files.push(file);
  });
  if (problems.length > 0) throw protocolError(url, 'tree listing', problems);

  // Only now, with a well-formed page: a hostile or broken hub must not name anything outside the snapshot.
  const unsafe = files.flatMap((f) => {
    const reason = unsafeRelativePathReason(f.path);
    return reason === undefined ? [] : [`${JSON.stringify(f.path)} (${reason})`];
  });
  if (unsafe.length > 0) {
    const more = unsafe.length > MAX_PROBLEMS_SHOWN ? ` (and ${unsafe.length - MAX_PROBLEMS_SHOWN} more)` : '';
    throw new AirlockError('E_UNSAFE_PATH', `${formatRepoRef(repo, false)} lists unsafe file paths: ${unsafe.slice(0, MAX_PROBLEMS_SHOWN).join('; ')}${more}`, {
      subject: formatRepoRef(repo, false),
      hint: 'nothing was written; such a repo cannot be exported safely (report it to the hub or mirror operator)',
    });
  }
  return files;
}

/** `Link: <url>; rel="next", …` → the next URL, if any. */
export function nextLink(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const re = /<([^>]*)>\s*((?:;\s*[^;,]*)*)/g;
  for (let m = re.exec(header); m !== null; m = re.exec(header)) {
    const params = m[2] ?? '';
    const rel = /;\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,]+))/i.exec(params);
    const rels = (rel?.[1] ?? rel?.[2] ?? '').toLowerCase().split(/\s+/);
    if (rels.includes('next')) return m[1];
  }
  return undefined;
}
