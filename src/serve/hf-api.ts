/**
 * The Hugging Face Hub protocol over the hub cache (../../shared spec: hub-serve.md): resolve (HEAD/GET,
 * 200/206, no redirects), repo info, tree, paths-info, refs. Nothing Xet is ever sent: no `X-Xet-*`, no
 * `xetHash`, no xet `Link` — a client that saw one would skip plain HTTP.
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { isSafeRelativePath, unsafeRepoIdReason, unsafeRevisionReason } from '../fs/safe-path.js';
import { findRevision, hfFolderName, readServedRepo, type ServedFile, type ServedRepo, type ServedRepoType, type ServedRevision } from './hf-view.js';
import { decodeSegments, plainSegment, queryBool, sendHubError, sendJson, type RequestContext } from './http-util.js';
import { expectedFromEtag, openServable, parseRange, sendVerifiedBody, type BadFiles } from './verified-body.js';

/**
 * The seam for per-file security verdicts (`expand=securityFileStatus`, `securityStatus=true`): the
 * content analysers (src/content) plug in here; without one, no verdict is claimed.
 */
export interface SecurityStatusProvider {
  fileStatus(repo: { type: ServedRepoType; id: string }, revision: ServedRevision, file: ServedFile): Promise<Record<string, unknown> | undefined>;
}

export interface HfApiDeps {
  cacheDir: string;
  bad: BadFiles;
  /** Tree page size (the Hub's: 1000, 50 with expand). */
  pageSize: number;
  expandPageSize: number;
  security: SecurityStatusProvider | undefined;
  onIntegrityFailure(event: { path: string; repo: string; file: string; expected: string; actual: string }): void;
}

const ACTIONS = new Set(['revision', 'tree', 'paths-info', 'refs', 'resolve']);

/**
 * Where the repo id ends: `gpt2` (no organisation) or `acme/tiny`, decided by which folder the cache
 * has (then by whether the second segment is an action word).
 */
export async function splitRepo(cacheDir: string, type: ServedRepoType, segments: readonly string[]): Promise<{ id: string; rest: string[] } | undefined> {
  const split = await splitCandidate(cacheDir, type, segments);
  // a valid Hub id only: `a--b` would otherwise alias the folder of `a/b`
  return split && unsafeRepoIdReason(split.id) === undefined ? split : undefined;
}

async function splitCandidate(cacheDir: string, type: ServedRepoType, segments: readonly string[]): Promise<{ id: string; rest: string[] } | undefined> {
  const decoded = decodeSegments(segments.slice(0, 2));
  if (decoded === undefined || decoded.length === 0 || !decoded.every(plainSegment)) return undefined;
  const exists = async (id: string) =>
    access(join(cacheDir, hfFolderName(type, id))).then(
      () => true,
      () => false,
    );
  if (decoded.length >= 2) {
    const two = `${decoded[0]}/${decoded[1]}`;
    if (await exists(two)) return { id: two, rest: segments.slice(2) };
    if (await exists(decoded[0]!)) return { id: decoded[0]!, rest: segments.slice(1) };
    if (ACTIONS.has(decoded[1]!)) return { id: decoded[0]!, rest: segments.slice(1) };
    return { id: two, rest: segments.slice(2) };
  }
  return { id: decoded[0]!, rest: [] };
}

function typeName(type: ServedRepoType): string {
  return type === 'dataset' ? 'Dataset' : 'Model';
}

async function loadRepo(ctx: RequestContext, deps: HfApiDeps, type: ServedRepoType, id: string): Promise<ServedRepo | undefined> {
  ctx.log.repo = `${type === 'dataset' ? 'datasets/' : ''}${id}`;
  const repo = await readServedRepo(deps.cacheDir, type, id);
  if (repo === undefined) {
    sendHubError(ctx, 404, 'RepoNotFound', `${typeName(type)} ${id} is not in this airlock cache`);
  }
  return repo;
}

function loadRevision(ctx: RequestContext, repo: ServedRepo, revision: string): ServedRevision | undefined {
  ctx.log.revision = revision;
  const found = unsafeRevisionReason(revision) === undefined ? findRevision(repo, revision) : undefined;
  if (found === undefined) {
    sendHubError(ctx, 404, 'RevisionNotFound', `Invalid rev id: ${revision} (not imported for ${repo.id})`);
    return undefined;
  }
  ctx.log.commit = found.commit;
  return found;
}

/** `/{repo}/resolve/{rev}/{path}` (HEAD or GET). */
export async function handleResolve(ctx: RequestContext, deps: HfApiDeps, type: ServedRepoType, id: string, rawRev: string, rawPath: readonly string[]): Promise<void> {
  const [revision] = decodeSegments([rawRev]) ?? [];
  const pathSegments = decodeSegments(rawPath);
  if (revision === undefined || pathSegments === undefined || !pathSegments.every(plainSegment) || !isSafeRelativePath(pathSegments.join('/'))) {
    return sendHubError(ctx, 400, undefined, 'bad revision or file path in the request');
  }
  const path = pathSegments.join('/');
  ctx.log.file = path;
  const repo = await loadRepo(ctx, deps, type, id);
  if (!repo) return;
  const rev = loadRevision(ctx, repo, revision);
  if (!rev) return;
  const file = rev.byPath.get(path);
  if (file === undefined) {
    // X-Repo-Commit lets the client record .no_exist/<commit>/<path> (transformers relies on it)
    return sendHubError(ctx, 404, 'EntryNotFound', `${path} does not exist at ${rev.commit} of ${repo.id}`, { 'X-Repo-Commit': rev.commit });
  }
  const opened = await openServable(file.blobPath, deps.cacheDir, file.size, deps.bad);
  switch (opened.kind) {
    case 'ok':
      break;
    case 'outside':
      return sendHubError(ctx, 403, undefined, `${path} leads outside the cache and is not served`);
    case 'missing':
      return sendHubError(ctx, 404, 'EntryNotFound', `${path} is listed but its blob is gone`, { 'X-Repo-Commit': rev.commit });
    case 'bad':
    case 'size-mismatch':
      // 422, not 5xx: retrying cannot help until the blob is re-imported
      return sendHubError(ctx, 422, undefined, `${path}: its blob failed verification; re-import ${repo.id} from a verified bundle`);
  }
  const headers: Record<string, string> = {
    'Content-Type': 'application/octet-stream',
    'Accept-Ranges': 'bytes',
    ETag: `"${file.etag}"`,
    'X-Repo-Commit': rev.commit,
    'Cache-Control': 'private, max-age=0, must-revalidate',
  };
  if (file.lfs) {
    headers['X-Linked-Etag'] = `"${file.etag}"`;
    headers['X-Linked-Size'] = String(file.size);
  }
  const range = ctx.req.method === 'GET' ? parseRange(ctx.req.headers.range, file.size) : undefined;
  if (range === 'unsatisfiable') {
    await opened.handle.close();
    ctx.log.status = 416;
    ctx.res.writeHead(416, { ...headers, 'Content-Range': `bytes */${file.size}`, 'Content-Length': '0' });
    ctx.res.end();
    return;
  }
  if (ctx.req.method === 'HEAD') {
    await opened.handle.close();
    ctx.log.status = 200;
    ctx.res.writeHead(200, { ...headers, 'Content-Length': String(file.size) });
    ctx.res.end();
    return;
  }
  if (range !== undefined) {
    ctx.log.range = ctx.req.headers.range;
    ctx.log.status = 206;
    ctx.res.writeHead(206, { ...headers, 'Content-Range': `bytes ${range.start}-${range.end}/${file.size}`, 'Content-Length': String(range.end - range.start + 1) });
  } else {
    ctx.log.status = 200;
    ctx.res.writeHead(200, { ...headers, 'Content-Length': String(file.size) });
  }
  const outcome = await sendVerifiedBody(ctx.res, opened.handle, file.size, range, expectedFromEtag(file.etag), opened.identity);
  ctx.log.bytes = outcome.bytes;
  if (outcome.kind === 'mismatch') {
    deps.bad.mark(opened.realPath, opened.identity);
    ctx.log.error = `blob ${file.etag} does not match its name (got ${outcome.actual}); connection cut`;
    deps.onIntegrityFailure({ path: opened.realPath, repo: repo.id, file: path, expected: file.etag, actual: outcome.actual });
  } else if (outcome.kind === 'aborted') {
    ctx.log.error = 'client went away';
  }
}

function treeEntry(file: ServedFile): Record<string, unknown> {
  const entry: Record<string, unknown> = { type: 'file', oid: file.oid, size: file.size, path: file.path };
  if (file.lfs) entry['lfs'] = { oid: file.etag, size: file.size, pointerSize: file.pointerSize };
  return entry;
}

async function expandEntry(deps: HfApiDeps, repo: ServedRepo, rev: ServedRevision, entry: Record<string, unknown>, file: ServedFile | undefined): Promise<Record<string, unknown>> {
  entry['lastCommit'] = { id: rev.commit, title: rev.evidence ? `imported by airlock from ${rev.evidence.bundle.name}` : 'imported', date: rev.lastModified };
  if (file && deps.security) {
    const status = await deps.security.fileStatus({ type: repo.type, id: repo.id }, rev, file);
    if (status !== undefined) entry['securityFileStatus'] = status;
  }
  return entry;
}

/** Files and folders under `dir` ('' = root): direct children, or everything below when recursive. */
function listEntries(rev: ServedRevision, dir: string, recursive: boolean): Array<{ entry: Record<string, unknown>; file?: ServedFile }> {
  const prefix = dir === '' ? '' : `${dir}/`;
  const out: Array<{ path: string; entry: Record<string, unknown>; file?: ServedFile }> = [];
  const dirsSeen = new Set<string>();
  for (const file of rev.files) {
    if (!file.path.startsWith(prefix)) continue;
    const rest = file.path.slice(prefix.length).split('/');
    const depthLimit = recursive ? rest.length - 1 : Math.min(1, rest.length - 1);
    for (let i = 1; i <= depthLimit; i++) {
      const d = prefix + rest.slice(0, i).join('/');
      if (dirsSeen.has(d)) continue;
      dirsSeen.add(d);
      out.push({ path: d, entry: { type: 'directory', oid: rev.dirs.get(d), size: 0, path: d } });
    }
    if (recursive || rest.length === 1) out.push({ path: file.path, entry: treeEntry(file), file });
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

function pathEntry(rev: ServedRevision, path: string): { entry: Record<string, unknown>; file?: ServedFile } | undefined {
  const file = rev.byPath.get(path);
  if (file) return { entry: treeEntry(file), file };
  const oid = rev.dirs.get(path);
  if (oid !== undefined && path !== '') return { entry: { type: 'directory', oid, size: 0, path } };
  return undefined;
}

function siblings(rev: ServedRevision, blobs: boolean): Array<Record<string, unknown>> {
  return rev.files.map((f) => {
    if (!blobs) return { rfilename: f.path };
    const s: Record<string, unknown> = { rfilename: f.path, blobId: f.oid, size: f.size };
    if (f.lfs) s['lfs'] = { sha256: f.etag, size: f.size, pointerSize: f.pointerSize };
    return s;
  });
}

function defaultRevision(repo: ServedRepo): ServedRevision {
  return repo.revisions.find((r) => r.refs.includes('main')) ?? repo.revisions.find((r) => r.refs.length > 0) ?? repo.revisions[0]!;
}

/** `/api/{models,datasets}/{repo}[/…]`. */
export async function handleApi(ctx: RequestContext, deps: HfApiDeps, type: ServedRepoType, id: string, rest: readonly string[]): Promise<void> {
  const action = rest[0] === undefined ? 'info' : rest[0];
  const method = ctx.req.method ?? 'GET';
  const allowed = action === 'paths-info' ? ['POST'] : ['GET', 'HEAD'];
  if (!allowed.includes(method)) {
    ctx.log.status = 405;
    ctx.res.writeHead(405, { Allow: allowed.join(', '), 'Content-Length': '0' });
    ctx.res.end();
    return;
  }
  if (!['info', 'revision', 'tree', 'paths-info', 'refs'].includes(action)) {
    return sendHubError(ctx, 404, undefined, `no such API: ${ctx.rawPath}`);
  }
  const repo = await loadRepo(ctx, deps, type, id);
  if (!repo) return;

  if (action === 'refs') {
    const branches: unknown[] = [];
    const converts: unknown[] = [];
    const pullRequests: unknown[] = [];
    for (const rev of repo.revisions) {
      for (const name of rev.refs) {
        if (name.startsWith('refs/pr/')) pullRequests.push({ name, ref: name, targetCommit: rev.commit });
        else if (name.startsWith('refs/convert/')) converts.push({ name: name.slice('refs/convert/'.length), ref: name, targetCommit: rev.commit });
        else branches.push({ name, ref: `refs/heads/${name}`, targetCommit: rev.commit });
      }
    }
    return sendJson(ctx, 200, { branches, converts, tags: [], ...(queryBool(ctx.query, 'include_prs') ? { pullRequests } : {}) });
  }

  if (action === 'info' || action === 'revision') {
    let rev: ServedRevision | undefined;
    if (action === 'revision') {
      const decoded = decodeSegments(rest.slice(1));
      if (decoded === undefined || decoded.length === 0) return sendHubError(ctx, 400, undefined, 'bad revision');
      rev = loadRevision(ctx, repo, decoded.join('/'));
      if (!rev) return;
    } else {
      rev = defaultRevision(repo);
      ctx.log.commit = rev.commit;
    }
    const [author] = repo.id.includes('/') ? repo.id.split('/') : [undefined];
    const created = repo.revisions.map((r) => r.lastModified).sort()[0] ?? rev.lastModified;
    const full: Record<string, unknown> = {
      _id: rev.dirs.get('')!.slice(0, 24),
      id: repo.id,
      ...(type === 'model' ? { modelId: repo.id } : {}),
      ...(author ? { author } : {}),
      sha: rev.commit,
      lastModified: rev.lastModified,
      createdAt: created,
      private: false,
      gated: false,
      disabled: false,
      downloads: 0,
      likes: 0,
      tags: [],
      siblings: siblings(rev, queryBool(ctx.query, 'blobs')),
      ...(type === 'model' ? { spaces: [] } : {}),
    };
    const expand = ctx.query.getAll('expand');
    if (expand.length > 0) {
      const only: Record<string, unknown> = { _id: full['_id'], id: full['id'] };
      for (const field of expand) if (field in full) only[field] = full[field];
      return sendJson(ctx, 200, only);
    }
    return sendJson(ctx, 200, full);
  }

  if (action === 'tree') {
    const [revision] = decodeSegments(rest.slice(1, 2)) ?? [];
    const dirSegments = decodeSegments(rest.slice(2));
    if (revision === undefined || dirSegments === undefined) return sendHubError(ctx, 400, undefined, 'bad revision or path');
    const dir = dirSegments.join('/').replace(/\/+$/, '');
    if (dir !== '' && !isSafeRelativePath(dir)) return sendHubError(ctx, 400, undefined, 'bad path');
    const rev = loadRevision(ctx, repo, revision);
    if (!rev) return;
    if (dir !== '' && !rev.dirs.has(dir)) {
      return sendHubError(ctx, 404, 'EntryNotFound', `${dir} is not a folder at ${rev.commit} of ${repo.id}`, { 'X-Repo-Commit': rev.commit });
    }
    ctx.log.file = dir || undefined;
    const expand = queryBool(ctx.query, 'expand');
    const limitParam = Number(ctx.query.get('limit'));
    const pageSize = Number.isSafeInteger(limitParam) && limitParam > 0 ? Math.min(limitParam, expand ? deps.expandPageSize : deps.pageSize) : expand ? deps.expandPageSize : deps.pageSize;
    const all = listEntries(rev, dir, queryBool(ctx.query, 'recursive'));
    const cursor = ctx.query.get('cursor');
    const offset = cursor === null ? 0 : Number(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > all.length) return sendHubError(ctx, 400, undefined, 'bad cursor');
    const page = all.slice(offset, offset + pageSize);
    const body = expand ? await Promise.all(page.map((e) => expandEntry(deps, repo, rev, { ...e.entry }, e.file))) : page.map((e) => e.entry);
    const headers: Record<string, string> = { 'X-Repo-Commit': rev.commit };
    if (offset + pageSize < all.length) {
      const next = new URLSearchParams(ctx.query);
      next.set('cursor', Buffer.from(String(offset + pageSize)).toString('base64url'));
      headers['Link'] = `<${ctx.origin}${ctx.rawPath}?${next.toString()}>; rel="next"`;
    }
    return sendJson(ctx, 200, body, headers);
  }

  // paths-info (POST): form `paths=a&paths=b&expand=…` or JSON {"paths": [...], "expand": …}
  const decodedRev = decodeSegments(rest.slice(1));
  if (decodedRev === undefined || decodedRev.length === 0) return sendHubError(ctx, 400, undefined, 'bad revision');
  const rev = loadRevision(ctx, repo, decodedRev.join('/'));
  if (!rev) return;
  const body = ctx.body ?? Buffer.alloc(0);
  let paths: string[] = [];
  let expand = false;
  const contentType = String(ctx.req.headers['content-type'] ?? '');
  if (contentType.includes('json')) {
    try {
      const value = JSON.parse(body.toString('utf8')) as { paths?: unknown; expand?: unknown };
      paths = Array.isArray(value.paths) ? value.paths.filter((p): p is string => typeof p === 'string') : [];
      expand = value.expand === true || (typeof value.expand === 'string' && /^true$/i.test(value.expand));
    } catch {
      return sendHubError(ctx, 400, undefined, 'paths-info body is not JSON');
    }
  } else {
    const form = new URLSearchParams(body.toString('utf8'));
    paths = form.getAll('paths');
    expand = /^(true|1)$/i.test(form.get('expand') ?? '');
  }
  const found = [];
  for (const raw of paths.slice(0, 10_000)) {
    const path = raw.replace(/^\/+|\/+$/g, '');
    if (!isSafeRelativePath(path)) continue;
    const hit = pathEntry(rev, path);
    if (hit) found.push(expand ? await expandEntry(deps, repo, rev, { ...hit.entry }, hit.file) : hit.entry);
  }
  return sendJson(ctx, 200, found, { 'X-Repo-Commit': rev.commit });
}
