/**
 * What one repo of the hub cache looks like to a Hub client, read fresh on every request (the cache may
 * change while serving) with cache/hf-scan.ts. Every number a client needs comes from what import put
 * there — blob names are etags, sizes come from the file system, LFS pointer and tree ids are rebuilt
 * from them — so nothing is hashed to answer a listing or a HEAD.
 *
 * Trust decisions made here:
 * - only snapshot entries that are links into the repo's own `blobs/` with an etag-shaped name are
 *   files (a plain file in `snapshots/` has no name to check its bytes against: never served);
 * - a commit is visible only when a ref names it or an evidence record (written by import AFTER its
 *   commit) exists for it, so a snapshot that an import is still filling is never listed by commit.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { scanHfRepo, type CachedRevision } from '../cache/hf-scan.js';
import { readEvidence, type EvidenceRecord } from '../cache/evidence.js';
import { COMMIT_RE } from '../fs/safe-path.js';

export type ServedRepoType = 'model' | 'dataset';

export interface ServedFile {
  path: string;
  size: number;
  /** Blob name: sha256 (LFS) or git blob sha1. */
  etag: string;
  lfs: boolean;
  /** Git blob id: the etag for git files, the pointer's sha1 for LFS files. */
  oid: string;
  pointerSize: number | undefined;
  /** Absolute path of `blobs/<etag>` (may be a link into the shared store). */
  blobPath: string;
}

export interface ServedRevision {
  commit: string;
  refs: string[];
  files: ServedFile[];
  byPath: Map<string, ServedFile>;
  /** Directory path ('' = root) → git tree id, rebuilt from the files. */
  dirs: Map<string, string>;
  lastModified: string;
  evidence: EvidenceRecord | undefined;
}

export interface ServedRepo {
  type: ServedRepoType;
  id: string;
  folder: string;
  revisions: ServedRevision[];
  evidence: EvidenceRecord[];
}

const ETAG_RE = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

export function hfFolderName(type: ServedRepoType, id: string): string {
  return `${type}s--${id.split('/').join('--')}`;
}

function lfsPointer(sha256: string, size: number): string {
  return `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${size}\n`;
}

function gitSha1(kind: 'blob' | 'tree', body: Buffer): Buffer {
  return createHash('sha1').update(`${kind} ${body.length}\0`).update(body).digest();
}

/** Git tree ids for every directory, from the file ids (mode 100644 files, 40000 dirs, git's name order). */
export function treeIds(files: ReadonlyArray<Pick<ServedFile, 'path' | 'oid'>>): Map<string, string> {
  const children = new Map<string, Map<string, { dir: boolean; oid?: string }>>();
  const ensure = (dir: string) => children.get(dir) ?? children.set(dir, new Map()).get(dir)!;
  ensure('');
  for (const f of files) {
    const parts = f.path.split('/');
    for (let i = 0; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      const name = parts[i]!;
      const last = i === parts.length - 1;
      ensure(parent).set(name, last ? { dir: false, oid: f.oid } : { dir: true });
      if (!last) ensure(parts.slice(0, i + 1).join('/'));
    }
  }
  const ids = new Map<string, string>();
  const compute = (dir: string): Buffer => {
    const entries = [...ensure(dir).entries()].sort(([a, ea], [b, eb]) => {
      const ka = ea.dir ? `${a}/` : a;
      const kb = eb.dir ? `${b}/` : b;
      return Buffer.compare(Buffer.from(ka), Buffer.from(kb));
    });
    const body = Buffer.concat(
      entries.map(([name, e]) => {
        const id = e.dir ? compute(dir === '' ? name : `${dir}/${name}`) : Buffer.from(e.oid!, 'hex');
        return Buffer.concat([Buffer.from(`${e.dir ? '40000' : '100644'} ${name}\0`), id]);
      }),
    );
    const id = gitSha1('tree', body);
    ids.set(dir, id.toString('hex'));
    return id;
  };
  compute('');
  return ids;
}

async function toServed(repoDir: string, revision: CachedRevision, evidence: EvidenceRecord | undefined): Promise<ServedRevision> {
  const files: ServedFile[] = [];
  for (const f of revision.files) {
    if (f.blob === undefined || !ETAG_RE.test(f.blob)) continue;
    const lfs = f.blob.length === 64;
    const pointer = lfs ? Buffer.from(lfsPointer(f.blob, f.size)) : undefined;
    files.push({
      path: f.path,
      size: f.size,
      etag: f.blob,
      lfs,
      oid: pointer ? gitSha1('blob', pointer).toString('hex') : f.blob,
      pointerSize: pointer?.length,
      blobPath: join(repoDir, 'blobs', f.blob),
    });
  }
  const snapshot = await stat(join(repoDir, 'snapshots', revision.commit)).catch(() => undefined);
  return {
    commit: revision.commit,
    refs: revision.refs,
    files,
    byPath: new Map(files.map((f) => [f.path, f])),
    dirs: treeIds(files),
    lastModified: evidence?.importedAt ?? (snapshot ?? { mtime: new Date(0) }).mtime.toISOString(),
    evidence,
  };
}

/** The repo as it is on disk now, or undefined when the cache has no such repo (or nothing visible). */
export async function readServedRepo(cacheDir: string, type: ServedRepoType, id: string): Promise<ServedRepo | undefined> {
  const folder = hfFolderName(type, id);
  const { repo } = await scanHfRepo(cacheDir, folder);
  if (repo === undefined) return undefined;
  const evidence = await readEvidence(cacheDir, 'hf', folder);
  const byCommit = new Map(evidence.map((e) => [e.commit, e]));
  const revisions: ServedRevision[] = [];
  for (const revision of repo.revisions) {
    if (!COMMIT_RE.test(revision.commit)) continue;
    if (revision.refs.length === 0 && !byCommit.has(revision.commit)) continue;
    revisions.push(await toServed(join(cacheDir, folder), revision, byCommit.get(revision.commit)));
  }
  if (revisions.length === 0) return undefined;
  return { type, id, folder, revisions, evidence };
}

/** A branch, tag or `refs/pr/N` name, or a full commit. */
export function findRevision(repo: ServedRepo, revision: string): ServedRevision | undefined {
  if (COMMIT_RE.test(revision)) return repo.revisions.find((r) => r.commit === revision);
  return repo.revisions.find((r) => r.refs.includes(revision));
}

/** Every repo folder name of one type in the cache root. */
export function parseFolderName(name: string): { type: ServedRepoType; id: string } | undefined {
  const m = /^(models|datasets)--(.+)$/.exec(name);
  if (!m || m[2]!.includes('---')) return undefined;
  return { type: m[1] === 'models' ? 'model' : 'dataset', id: m[2]!.split('--').join('/') };
}
