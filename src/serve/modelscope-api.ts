/**
 * The ModelScope `/api/v1` protocol (../../shared spec: modelscope.md §2) over what `import --layout
 * modelscope` wrote. That cache holds plain files and pickled indexes but no hashes, so everything a
 * client is told — revisions, commit, the file list with SHA-256 — comes from import's evidence record,
 * and every byte that completes a file is checked against that SHA-256 while it streams.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { evidenceRoot, readEvidence, type EvidenceRecord } from '../cache/evidence.js';
import { maskModelScopeName } from '../cache/modelscope.js';
import { isSafeRelativePath } from '../fs/safe-path.js';
import { decodeSegments, plainSegment, sendJson, type RequestContext } from './http-util.js';
import { openServable, parseRange, sendVerifiedBody, type BadFiles } from './verified-body.js';

export interface ModelScopeDeps {
  /** The ModelScope cache root (`<C>`: models under `<C>/models/`). */
  root: string;
  evidenceCacheDir: string;
  bad: BadFiles;
  onIntegrityFailure(event: { path: string; repo: string; file: string; expected: string; actual: string }): void;
}

function envelope(ctx: RequestContext, status: number, code: number, message: string, data: unknown): void {
  const requestId = String(ctx.req.headers['x-request-id'] ?? '');
  if (status >= 400) ctx.log.error = message;
  sendJson(ctx, status, { Code: code, Success: code === 200, Message: message, RequestId: requestId, Data: data });
}

/** The newest record of a repo folder: the revision its files on disk belong to (one per repo). */
export async function currentModelScopeRecord(cacheDir: string, type: 'model' | 'dataset', owner: string, name: string): Promise<EvidenceRecord | undefined> {
  const folder = [type === 'dataset' ? 'datasets' : 'models', owner, maskModelScopeName(name)].join('/');
  return (await readEvidence(cacheDir, 'modelscope', folder))[0];
}

/** Every imported ModelScope repo (newest record of each), for the page. */
export async function listModelScopeRecords(cacheDir: string): Promise<EvidenceRecord[]> {
  const out: EvidenceRecord[] = [];
  const base = join(evidenceRoot(cacheDir), 'modelscope');
  for (const kind of ['models', 'datasets']) {
    for (const owner of await readdir(join(base, kind)).catch(() => [] as string[])) {
      for (const name of await readdir(join(base, kind, owner)).catch(() => [] as string[])) {
        const [record] = await readEvidence(cacheDir, 'modelscope', `${kind}/${owner}/${name}`);
        if (record) out.push(record);
      }
    }
  }
  return out;
}

function createdAt(record: EvidenceRecord): number {
  return record.source.createdAt ?? Math.floor(Date.parse(record.importedAt) / 1000);
}

function listing(record: EvidenceRecord, root: string, recursive: boolean): Array<Record<string, unknown>> {
  const prefix = root === '' || root === '/' ? '' : `${root.replace(/^\/+|\/+$/g, '')}/`;
  const dirs = new Set<string>();
  const out: Array<Record<string, unknown>> = [];
  for (const f of record.files) {
    if (!f.path.startsWith(prefix)) continue;
    const rest = f.path.slice(prefix.length).split('/');
    for (let i = 1; i < rest.length && (recursive || i === 1); i++) {
      const d = prefix + rest.slice(0, i).join('/');
      if (!dirs.has(d)) {
        dirs.add(d);
        out.push({ Name: rest[i - 1], Path: d, Type: 'tree', Size: 0, Mode: '40000', Revision: record.commit });
      }
    }
    if (!recursive && rest.length > 1) continue;
    out.push({
      Name: rest[rest.length - 1],
      Path: f.path,
      Type: 'blob',
      Size: f.size,
      Sha256: f.sha256,
      Revision: f.lastCommit ?? record.commit,
      IsLFS: f.lfs,
      Mode: '33188',
    });
  }
  return out;
}

/** `raw` = the path segments after `/api/v1/`. */
export async function handleModelScope(ctx: RequestContext, deps: ModelScopeDeps, raw: readonly string[]): Promise<void> {
  const method = ctx.req.method ?? 'GET';
  if (method !== 'GET' && method !== 'HEAD') {
    ctx.log.status = 405;
    ctx.res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Length': '0' });
    ctx.res.end();
    return;
  }
  const decoded = decodeSegments(raw);
  if (decoded === undefined || decoded.length < 3 || (decoded[0] !== 'models' && decoded[0] !== 'datasets') || !plainSegment(decoded[1]!) || !plainSegment(decoded[2]!)) {
    return envelope(ctx, 404, 404, `no such API: ${ctx.rawPath}`, null);
  }
  const type = decoded[0] === 'datasets' ? 'dataset' : 'model';
  const [owner, name] = [decoded[1]!, decoded[2]!];
  const rest = decoded.slice(3).join('/');
  ctx.log.repo = `${owner}/${name}`;
  const record = await currentModelScopeRecord(deps.evidenceCacheDir, type, owner, name);
  if (record === undefined) return envelope(ctx, 404, 10010205001, `${type} ${owner}/${name} is not in this airlock cache`, null);

  if (rest === '') {
    return envelope(ctx, 200, 200, 'success', { Id: `${owner}/${name}`, Name: name, Path: owner, Namespace: owner, Private: false, LastUpdatedTime: createdAt(record), Revision: record.revision });
  }
  if (rest === 'revisions') {
    const item = { Revision: record.revision, CreatedAt: createdAt(record), CommitId: record.commit, Description: '' };
    return envelope(ctx, 200, 200, 'success', { RevisionMap: { Branches: [item], Tags: [] } });
  }
  const revision = ctx.query.get('Revision') ?? 'master';
  ctx.log.revision = revision;
  if (revision !== record.revision && revision !== record.commit) {
    return envelope(ctx, 404, 10010205002, `revision ${revision} of ${owner}/${name} is not imported (have ${record.revision})`, null);
  }
  ctx.log.commit = record.commit;
  if (rest === 'repo/files' || rest === 'repo/tree') {
    const recursive = /^true$/i.test(ctx.query.get('Recursive') ?? 'false');
    const all = listing(record, ctx.query.get('Root') ?? '', recursive);
    const pageSize = Number(ctx.query.get('PageSize') ?? '0');
    const pageNumber = Number(ctx.query.get('PageNumber') ?? '1');
    const page = Number.isSafeInteger(pageSize) && pageSize > 0 && Number.isSafeInteger(pageNumber) && pageNumber > 0 ? all.slice((pageNumber - 1) * pageSize, pageNumber * pageSize) : all;
    return envelope(ctx, 200, 200, 'success', { Files: page });
  }
  if (rest !== 'repo') return envelope(ctx, 404, 404, `no such API: ${ctx.rawPath}`, null);

  const filePath = ctx.query.get('FilePath') ?? '';
  ctx.log.file = filePath;
  if (!isSafeRelativePath(filePath)) return envelope(ctx, 400, 400, 'FilePath is missing or not a safe relative path', null);
  const file = record.files.find((f) => f.path === filePath);
  if (file === undefined) return envelope(ctx, 404, 10010205003, `file ${filePath} not found in ${owner}/${name}@${record.revision}`, null);
  const repoDir = join(deps.root, ...record.folder.split('/'));
  const opened = await openServable(join(repoDir, ...file.path.split('/')), repoDir, file.size, deps.bad);
  if (opened.kind !== 'ok') {
    const status = opened.kind === 'missing' ? 404 : opened.kind === 'outside' ? 403 : 422;
    return envelope(ctx, status, status, `${filePath} cannot be served (${opened.kind}); re-import ${owner}/${name} from a verified bundle`, null);
  }
  const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream', 'Accept-Ranges': 'bytes', ETag: `"${file.sha256}"` };
  const range = method === 'GET' ? parseRange(ctx.req.headers.range, file.size) : undefined;
  if (range === 'unsatisfiable' || method === 'HEAD') {
    await opened.handle.close();
    const status = range === 'unsatisfiable' ? 416 : 200;
    ctx.log.status = status;
    ctx.res.writeHead(status, { ...headers, ...(status === 416 ? { 'Content-Range': `bytes */${file.size}`, 'Content-Length': '0' } : { 'Content-Length': String(file.size) }) });
    ctx.res.end();
    return;
  }
  if (range !== undefined) {
    ctx.log.status = 206;
    ctx.res.writeHead(206, { ...headers, 'Content-Range': `bytes ${range.start}-${range.end}/${file.size}`, 'Content-Length': String(range.end - range.start + 1) });
  } else {
    ctx.log.status = 200;
    ctx.res.writeHead(200, { ...headers, 'Content-Length': String(file.size) });
  }
  const outcome = await sendVerifiedBody(ctx.res, opened.handle, file.size, range, { kind: 'sha256', hex: file.sha256 }, opened.identity);
  ctx.log.bytes = outcome.bytes;
  if (outcome.kind === 'mismatch') {
    deps.bad.mark(opened.realPath, opened.identity);
    ctx.log.error = `${filePath} does not match its SHA-256 (got ${outcome.actual}); connection cut`;
    deps.onIntegrityFailure({ path: opened.realPath, repo: `${owner}/${name}`, file: filePath, expected: file.sha256, actual: outcome.actual });
  }
}
