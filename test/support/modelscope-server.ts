/**
 * A protocol-faithful ModelScope hub for tests (see /work/shared/specs/modelscope.md §2), in the style of
 * hub-server.ts: two node:http servers on two loopback HOSTS.
 * - `endpoint` (127.0.0.1): the `/api/v1` routes, every answer in the `{Code, Success, Message,
 *   RequestId, Data}` envelope; errors as the 1.x SDK sees them (404 = missing OR private without valid
 *   credentials, 401 for an invalid token, 400 for a bad parameter), with `x-request-id`.
 *   - `GET /api/v1/models/{owner}/{name}`                       repo info (`Data.Id`, …)
 *   - `GET /api/v1/models/{owner}/{name}/revisions[?EndTime=]`   `Data.RevisionMap.{Branches,Tags}[]`
 *   - `GET /api/v1/models/{owner}/{name}/repo/files?Revision=&Recursive=True[&Root=]`  `Data.Files[]`,
 *     `tree` entries for directories, per-file `Revision` = the last commit that touched the file
 *   - `GET /api/v1/models/{owner}/{name}/repo?Revision=&FilePath=`  the bytes (small files, Range
 *     honoured: 206) or a 302 to a signed CDN URL (LFS files)
 *   Datasets (§2.9), added with `addRepo({type: 'dataset'})`:
 *   - `GET /api/v1/datasets/{owner}/{name}`                     `Data.Id` (numeric hub id), `Data.Type`
 *   - `GET /api/v1/datasets/{hubId}/repo/tree?Revision=&Root=&Recursive=&PageNumber=&PageSize=`  one page
 *     of `Data.Files[]` (model fields; tree entries count towards the page); a page past the end is empty
 *   - `GET /api/v1/datasets/{owner}/{name}/repo?Source=SDK&Revision=&FilePath=&View=False`  as for models
 *   There is no dataset revisions or `repo/files` route: asking for one is a 404.
 * - `cdnOrigin` (127.0.0.2): LFS bytes behind signed, expiring URLs; never needs (and records) credentials.
 *
 * The token is accepted from the cookie `m_session_id=<token>` (1.x) or `Authorization: Bearer` (msh).
 * Faults can be injected per file path to exercise retries, resume and integrity checks; `setNetwork`
 * makes the link slow or stalls it at an exact byte count (a point to kill a client at), and
 * `contentBytesServed` / each record's `bodyBytes` count the file bytes handed to sockets, so a test can
 * tell how much a resumed export fetched again (as hub-server.ts does for the Hugging Face side).
 * Files added with `fileOnDisk` are streamed from disk, never held in memory (the bench).
 */
import { createHash, createHmac, randomBytes, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { createServer, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface MsFileInput {
  path: string;
  /** The content, or (from `fileOnDisk`) a file on disk streamed when served. */
  data: Buffer | string | MsDiskFile;
  /** Default: true for *.safetensors, *.bin, *.pt, *.pth, *.gguf, *.onnx or size >= 10 MiB. */
  lfs?: boolean;
}

/** A file on disk served by streaming, with its size and sha256 (`fileOnDisk` computes them). */
export interface MsDiskFile {
  kind: 'disk';
  path: string;
  size: number;
  sha256: string;
}

/** Hashes a file on disk once, for `data` of a `MsFileInput` that is never read into memory. */
export async function fileOnDisk(path: string): Promise<MsDiskFile> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { kind: 'disk', path, size, sha256: hash.digest('hex') };
}

/** How the link behaves for file bytes (API and CDN alike). `{}` is a healthy link. */
export interface MsNetwork {
  /** Content bytes per second, per response: a slow link. */
  bytesPerSecond?: number;
  /**
   * Stop sending content once `contentBytesServed` reaches this total (every connection then hangs
   * until `setNetwork` is called again or the client goes away): a precise point to kill a client at.
   */
  stallAtBytes?: number;
}

export interface MsFileInfo {
  path: string;
  size: number;
  sha256: string;
  lfs: boolean;
  /** The commit that last touched the file (the listing's per-file `Revision`). */
  lastCommit: string;
}

export interface MsAddedCommit {
  commit: string;
  /** Epoch seconds of the commit (the ref's `CreatedAt`). */
  createdAt: number;
  /** Every file of the snapshot after this commit. */
  files: MsFileInfo[];
}

export interface MsAddRepoOptions {
  /** `owner/name`. */
  id: string;
  files: MsFileInput[];
  /** Default 'master'. */
  branch?: string;
  tags?: string[];
  private?: boolean;
  /** Default 'model'. */
  type?: 'model' | 'dataset';
}

export type MsFault =
  /** Answer this HTTP status (with an envelope) instead of the file, `times` times. */
  | { kind: 'status'; status: number; times?: number; retryAfter?: number }
  /** Send the headers and `after` bytes, then drop the connection. */
  | { kind: 'cut'; after: number; times?: number }
  /** Serve the right length with one byte flipped. */
  | { kind: 'corrupt'; times?: number }
  /** Ignore Range (always answer 200 with the whole file). */
  | { kind: 'no-range'; times?: number };

export interface MsRequestRecord {
  method: string;
  host: string;
  /** Raw request target: path and query. */
  url: string;
  authorization: string | undefined;
  cookie: string | undefined;
  range: string | undefined;
  snapshot: string | undefined;
  snapshotIdentifier: string | undefined;
  userAgent: string | undefined;
  requestId: string | undefined;
  status: number;
  /** File content bytes written for this request (0 for everything but file bytes). */
  bodyBytes: number;
}

export interface ModelScopeServer {
  endpoint: string;
  cdnOrigin: string;
  requests: MsRequestRecord[];
  addRepo(options: MsAddRepoOptions): MsAddedCommit;
  /** Adds or replaces `files` on `branch` (default master); other files keep their last commit. */
  addCommit(id: string, files: MsFileInput[], options?: { branch?: string; tags?: string[]; remove?: string[]; type?: 'model' | 'dataset' }): MsAddedCommit;
  /** Injects a fault on downloads of `path` (any repo). */
  fault(path: string, fault: MsFault): void;
  /** Makes every listing answer with `Data` replaced by this (for malformed-listing tests). */
  overrideListing(id: string, data: unknown, type?: 'model' | 'dataset'): void;
  /** The numeric hub id of a dataset (what its listing is addressed by). */
  datasetHubId(id: string): number;
  /** Replaces how the link behaves for file bytes (`{}` heals it). */
  setNetwork(network: MsNetwork): void;
  /** File content bytes handed to sockets so far, over every request. */
  readonly contentBytesServed: number;
  close(): Promise<void>;
}

export interface ModelScopeServerOptions {
  /** Valid tokens; any other token gets 401. */
  tokens?: string[];
  host?: string;
  cdnHost?: string;
}

const LFS_EXTENSIONS = ['.safetensors', '.bin', '.pt', '.pth', '.gguf', '.onnx'];
const LFS_SIZE_THRESHOLD = 10 * 1024 * 1024;
const STREAM_CHUNK = 1024 * 1024;
/** A slow link sends small chunks often (little is ever in flight, as on a real slow link). */
const SLOW_CHUNK = 16 * 1024;

type Content = { kind: 'buffer'; data: Buffer } | MsDiskFile;

interface StoredFile extends MsFileInfo {
  content: Content;
  committedDate: number;
}

interface Snapshot {
  commit: string;
  createdAt: number;
  files: Map<string, StoredFile>;
}

interface RepoState {
  type: 'model' | 'dataset';
  id: string;
  numericId: number;
  private: boolean;
  branches: Map<string, Snapshot>;
  tags: Map<string, Snapshot>;
  listingOverride?: unknown;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: number = status,
    readonly headers: OutgoingHttpHeaders = {},
  ) {
    super(message);
  }
}

interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  record: MsRequestRecord;
  requestId: string;
  network(): MsNetwork;
  /** Counts content bytes handed to the socket. */
  served(bytes: number): void;
  totalServed(): number;
}

function waitDrain(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

function writeHead(ctx: Ctx, status: number, headers: OutgoingHttpHeaders): void {
  ctx.record.status = status;
  ctx.res.writeHead(status, { 'x-request-id': ctx.requestId, ...headers });
}

function sendBody(ctx: Ctx, status: number, headers: OutgoingHttpHeaders, body: Buffer): void {
  writeHead(ctx, status, { 'Content-Length': String(body.length), ...headers });
  ctx.res.end(ctx.req.method === 'HEAD' ? undefined : body);
}

function sendEnvelope(ctx: Ctx, status: number, code: number, message: string, data: unknown, headers: OutgoingHttpHeaders = {}): void {
  const body = { Code: code, Success: code === 200, Message: message, RequestId: ctx.requestId, Data: data };
  sendBody(ctx, status, { 'Content-Type': 'application/json;charset=UTF-8', ...headers }, Buffer.from(JSON.stringify(body), 'utf8'));
}

function isLfs(input: { path: string; lfs?: boolean | undefined }, size: number): boolean {
  if (input.lfs !== undefined) return input.lfs;
  const lower = input.path.toLowerCase();
  return size >= LFS_SIZE_THRESHOLD || LFS_EXTENSIONS.some((ext) => lower.endsWith(ext));
}

function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'full' | 'unsatisfiable' {
  if (header === undefined) return 'full';
  const m = /^bytes=(\d+)-(\d*)$/.exec(header.trim());
  if (m === null) return 'full';
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || end < start) return 'unsatisfiable';
  return { start, end };
}

async function listen(server: Server, host: string): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

export async function startModelScopeServer(options: ModelScopeServerOptions = {}): Promise<ModelScopeServer> {
  const host = options.host ?? '127.0.0.1';
  const cdnHost = options.cdnHost ?? '127.0.0.2';
  const tokens = new Set(options.tokens ?? []);
  const repos = new Map<string, RepoState>();
  const datasets = new Map<string, RepoState>();
  const datasetsByHubId = new Map<number, RepoState>();
  const storeOf = (type: 'model' | 'dataset' = 'model'): Map<string, RepoState> => (type === 'dataset' ? datasets : repos);
  const faults = new Map<string, Array<MsFault & { left: number }>>();
  const cdnObjects = new Map<string, Content>();
  let network: MsNetwork = {};
  let contentBytesServed = 0;
  const requests: MsRequestRecord[] = [];
  const signingKey = randomBytes(32);
  let endpoint = '';
  let cdnOrigin = '';
  let clock = 1_726_842_501;
  let nextNumericId = 1000;

  function takeFault(path: string): MsFault | undefined {
    const list = faults.get(path);
    const fault = list?.find((f) => f.left > 0);
    if (fault === undefined) return undefined;
    fault.left -= 1;
    return fault;
  }

  function commitFiles(repo: RepoState, base: Map<string, StoredFile>, inputs: MsFileInput[], remove: string[], branch: string, tags: string[]): MsAddedCommit {
    clock += 60;
    const commit = createHash('sha1').update(`${repo.id}\n${clock}\n${randomUUID()}`).digest('hex');
    const files = new Map(base);
    for (const path of remove) files.delete(path);
    for (const input of inputs) {
      const content: Content =
        typeof input.data === 'string' ? { kind: 'buffer', data: Buffer.from(input.data, 'utf8') } : Buffer.isBuffer(input.data) ? { kind: 'buffer', data: input.data } : input.data;
      const size = content.kind === 'buffer' ? content.data.length : content.size;
      const sha256 = content.kind === 'buffer' ? createHash('sha256').update(content.data).digest('hex') : content.sha256;
      const lfs = isLfs(input, size);
      files.set(input.path, { path: input.path, size, sha256, lfs, lastCommit: commit, content, committedDate: clock });
      if (lfs) cdnObjects.set(sha256, content);
    }
    const snapshot: Snapshot = { commit, createdAt: clock, files };
    repo.branches.set(branch, snapshot);
    for (const tag of tags) repo.tags.set(tag, snapshot);
    return { commit, createdAt: clock, files: [...files.values()].map(({ path, size, sha256, lfs, lastCommit }) => ({ path, size, sha256, lfs, lastCommit })) };
  }

  function tokenOf(req: IncomingMessage): string | undefined {
    const auth = req.headers.authorization;
    const bearer = auth !== undefined ? /^Bearer\s+(\S+)$/i.exec(auth)?.[1] : undefined;
    const cookie = /(?:^|;\s*)m_session_id=([^;]+)/.exec(req.headers.cookie ?? '')?.[1];
    return bearer ?? cookie;
  }

  function findRepo(owner: string, name: string, token: string | undefined, type: 'model' | 'dataset' = 'model'): RepoState {
    return checkAccess(storeOf(type).get(`${owner}/${name}`), token, type);
  }

  function checkAccess(repo: RepoState | undefined, token: string | undefined, type: 'model' | 'dataset'): RepoState {
    if (token !== undefined && !tokens.has(token)) throw new HttpError(401, 'Unauthorized: the access token is invalid or expired');
    // 1.x: 404 for a missing repo AND for a private one without valid credentials
    if (repo === undefined || (repo.private && token === undefined)) throw new HttpError(404, type === 'dataset' ? '数据集不存在' : '模型不存在', 10010205001);
    return repo;
  }

  function snapshotAt(repo: RepoState, revision: string | null): Snapshot {
    if (revision === null || revision === '') throw new HttpError(400, 'Revision is required', 400);
    const snap = repo.branches.get(revision) ?? repo.tags.get(revision);
    if (snap === undefined) throw new HttpError(404, `revision ${revision} not found`, 10010205002);
    return snap;
  }

  function revisionItems(map: Map<string, Snapshot>, newestFirst: boolean): Array<Record<string, unknown>> {
    const items = [...map].map(([name, snap]) => ({ Revision: name, CreatedAt: snap.createdAt, CommitId: snap.commit, Description: '' }));
    return newestFirst ? items.sort((a, b) => b.CreatedAt - a.CreatedAt) : items;
  }

  function listing(snap: Snapshot, root: string, recursive: boolean): Array<Record<string, unknown>> {
    const prefix = root === '' || root === '/' ? '' : `${root.replace(/^\/+|\/+$/g, '')}/`;
    const dirs = new Set<string>();
    for (const path of snap.files.keys()) {
      const parts = path.split('/');
      for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
    }
    const within = (p: string): boolean => p.startsWith(prefix) && (recursive || !p.slice(prefix.length).includes('/'));
    const entries: Array<Record<string, unknown>> = [];
    for (const dir of [...dirs].filter(within).sort()) {
      entries.push({ Name: dir.slice(dir.lastIndexOf('/') + 1), Path: dir, Type: 'tree', Size: 0, Mode: '40000', Revision: snap.commit });
    }
    for (const file of [...snap.files.values()].filter((f) => within(f.path)).sort((a, b) => (a.path < b.path ? -1 : 1))) {
      entries.push({
        Name: file.path.slice(file.path.lastIndexOf('/') + 1),
        Path: file.path,
        Type: 'blob',
        Size: file.size,
        Sha256: file.sha256,
        Revision: file.lastCommit,
        IsLFS: file.lfs,
        Mode: '33188',
        CommitMessage: 'upload',
        CommittedDate: file.committedDate,
        CommitterName: 'airlock-test',
        InCheck: false,
      });
    }
    return entries;
  }

  /**
   * Serves file bytes with Range support, chunk by chunk: counted (`contentBytesServed`), paced and
   * stalled as `setNetwork` says, cut or corrupted as a fault says.
   */
  async function sendBytes(ctx: Ctx, content: Content, fault: MsFault | undefined): Promise<void> {
    const size = content.kind === 'buffer' ? content.data.length : content.size;
    const base: OutgoingHttpHeaders = { 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream' };
    const range = fault?.kind === 'no-range' ? 'full' : parseRange(ctx.req.headers.range, size);
    if (range === 'unsatisfiable') {
      sendBody(ctx, 416, { ...base, 'Content-Range': `bytes */${size}` }, Buffer.alloc(0));
      return;
    }
    const start = range === 'full' ? 0 : range.start;
    const end = range === 'full' ? size - 1 : range.end;
    const length = end - start + 1;
    const headers: OutgoingHttpHeaders = { ...base, 'Content-Length': String(length) };
    if (range !== 'full') headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
    writeHead(ctx, range === 'full' ? 200 : 206, headers);
    const res = ctx.res;
    if (ctx.req.method === 'HEAD' || length <= 0) {
      res.end();
      return;
    }
    const slow = ctx.network().bytesPerSecond;
    const step = slow !== undefined ? SLOW_CHUNK : STREAM_CHUNK;
    const chunks: AsyncIterable<Buffer> =
      content.kind === 'buffer'
        ? (async function* () {
            const data = content.data.subarray(start, end + 1);
            for (let at = 0; at < data.length; at += step) yield data.subarray(at, at + step);
          })()
        : createReadStream(content.path, { start, end, highWaterMark: step });
    const cutAt = fault?.kind === 'cut' ? Math.min(fault.after, length) : undefined;
    const started = Date.now();
    let sent = 0;
    try {
      for await (const raw of chunks) {
        let chunk = raw;
        if (fault?.kind === 'corrupt' && sent + chunk.length === length) {
          chunk = Buffer.from(chunk);
          chunk[chunk.length - 1] = (chunk[chunk.length - 1] as number) ^ 0xff;
        }
        if (cutAt !== undefined) chunk = chunk.subarray(0, Math.max(0, cutAt - sent));
        while (chunk.length > 0) {
          if (res.destroyed) return;
          // a stall point splits the chunk: send up to it, then hang until the network changes
          const stallAt = ctx.network().stallAtBytes;
          const room = stallAt === undefined ? chunk.length : Math.max(0, stallAt - ctx.totalServed());
          if (room === 0) {
            const stalledBy = ctx.network();
            while (ctx.network() === stalledBy && !res.destroyed) await new Promise((resolve) => setTimeout(resolve, 5));
            continue;
          }
          const piece = chunk.subarray(0, Math.min(room, chunk.length));
          chunk = chunk.subarray(piece.length);
          const ok = res.write(piece);
          sent += piece.length;
          ctx.served(piece.length);
          if (!ok) await waitDrain(res);
        }
        if (cutAt !== undefined && sent >= cutAt) {
          // FIN, not RST: the bytes sent so far reach the client, then the body ends early
          res.write(Buffer.alloc(0), () => setTimeout(() => res.socket?.end(), 20));
          return;
        }
        if (slow !== undefined) {
          const wait = started + (sent * 1000) / slow - Date.now();
          if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        }
      }
      res.end();
    } catch {
      res.destroy();
    } finally {
      if (content.kind === 'disk') (chunks as ReturnType<typeof createReadStream>).destroy();
    }
  }

  async function routeApi(ctx: Ctx): Promise<void> {
    const raw = ctx.req.url ?? '/';
    const q = raw.indexOf('?');
    const path = q < 0 ? raw : raw.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
    if (ctx.req.method !== 'GET' && ctx.req.method !== 'HEAD') throw new HttpError(405, 'Method Not Allowed');
    const tree = /^\/api\/v1\/datasets\/(\d+)\/repo\/tree$/.exec(path);
    if (tree !== null) {
      const repo = checkAccess(datasetsByHubId.get(Number(tree[1])), tokenOf(ctx.req), 'dataset');
      const snap = snapshotAt(repo, query.get('Revision'));
      const pageNumber = Number(query.get('PageNumber') ?? '1');
      const pageSize = Number(query.get('PageSize') ?? '100');
      if (!Number.isSafeInteger(pageNumber) || pageNumber < 1 || !Number.isSafeInteger(pageSize) || pageSize < 1) {
        throw new HttpError(400, 'PageNumber and PageSize must be positive integers', 400);
      }
      if (repo.listingOverride !== undefined) {
        sendEnvelope(ctx, 200, 200, 'success', repo.listingOverride);
        return;
      }
      const recursive = /^true$/i.test(query.get('Recursive') ?? 'false');
      const all = listing(snap, query.get('Root') ?? '', recursive);
      sendEnvelope(ctx, 200, 200, 'success', { Files: all.slice((pageNumber - 1) * pageSize, pageNumber * pageSize) });
      return;
    }
    const m = /^\/api\/v1\/(models|datasets)\/([^/]+)\/([^/]+)(\/.*)?$/.exec(path);
    if (m === null) throw new HttpError(404, 'Not Found');
    const type = m[1] === 'datasets' ? 'dataset' : 'model';
    const owner = decodeURIComponent(m[2] as string);
    const name = decodeURIComponent(m[3] as string);
    const rest = m[4] ?? '';
    const repo = findRepo(owner, name, tokenOf(ctx.req), type);
    if (type === 'dataset' && (rest === '' || rest === '/')) {
      // Type: illustrative value (the SDK reads only Id)
      sendEnvelope(ctx, 200, 200, 'success', { Id: repo.numericId, Type: 0, Name: name, Namespace: owner, Private: repo.private });
      return;
    }
    if (type === 'dataset' && rest !== '/repo') throw new HttpError(404, 'Not Found');
    if (rest === '' || rest === '/') {
      const master = repo.branches.get('master');
      sendEnvelope(ctx, 200, 200, 'success', { Id: repo.numericId, Name: name, Path: owner, Private: repo.private, LastUpdatedTime: master?.createdAt ?? 0 });
      return;
    }
    if (rest === '/revisions') {
      const endTime = query.get('EndTime');
      const cut = endTime !== null && /^\d+$/.test(endTime) ? Number(endTime) : undefined;
      const keep = (items: Array<Record<string, unknown>>): Array<Record<string, unknown>> => (cut === undefined ? items : items.filter((i) => (i['CreatedAt'] as number) <= cut));
      sendEnvelope(ctx, 200, 200, 'success', { RevisionMap: { Branches: keep(revisionItems(repo.branches, false)), Tags: keep(revisionItems(repo.tags, true)) } });
      return;
    }
    if (rest === '/repo/files') {
      const snap = snapshotAt(repo, query.get('Revision'));
      if (repo.listingOverride !== undefined) {
        sendEnvelope(ctx, 200, 200, 'success', repo.listingOverride);
        return;
      }
      const recursive = /^true$/i.test(query.get('Recursive') ?? 'false');
      sendEnvelope(ctx, 200, 200, 'success', { Files: listing(snap, query.get('Root') ?? '', recursive) });
      return;
    }
    if (rest === '/repo') {
      const snap = snapshotAt(repo, query.get('Revision'));
      const filePath = query.get('FilePath');
      if (filePath === null || filePath === '') throw new HttpError(400, 'FilePath is required', 400);
      const file = snap.files.get(filePath);
      if (file === undefined) throw new HttpError(404, `file ${filePath} not found`, 10010205003);
      const fault = takeFault(filePath);
      if (fault?.kind === 'status') {
        throw new HttpError(fault.status, `injected failure ${fault.status}`, fault.status, fault.retryAfter !== undefined ? { 'Retry-After': String(fault.retryAfter) } : {});
      }
      if (file.lfs) {
        const expires = Math.floor(Date.now() / 1000) + 3600;
        const signature = createHmac('sha256', signingKey).update(`${file.sha256}:${expires}`).digest('hex');
        if (fault !== undefined) faults.set(`cdn:${file.sha256}`, [{ ...fault, left: 1 }]);
        writeHead(ctx, 302, { Location: `${cdnOrigin}/oss/${file.sha256}?Expires=${expires}&Signature=${signature}`, 'Content-Length': '0' });
        ctx.res.end();
        return;
      }
      await sendBytes(ctx, file.content, fault);
      return;
    }
    throw new HttpError(404, 'Not Found');
  }

  async function routeCdn(ctx: Ctx): Promise<void> {
    const raw = ctx.req.url ?? '/';
    const q = raw.indexOf('?');
    const m = /^\/oss\/([0-9a-f]{64})$/.exec(q < 0 ? raw : raw.slice(0, q));
    const content = m === null ? undefined : cdnObjects.get(m[1] as string);
    if (m === null || content === undefined) throw new HttpError(404, 'NoSuchKey');
    const query = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
    const expected = createHmac('sha256', signingKey).update(`${m[1] as string}:${query.get('Expires') ?? ''}`).digest('hex');
    if (query.get('Signature') !== expected) throw new HttpError(403, 'AccessDenied: bad signature');
    if (!(Number(query.get('Expires')) * 1000 > Date.now())) throw new HttpError(403, 'AccessDenied: request has expired');
    await sendBytes(ctx, content, takeFault(`cdn:${m[1] as string}`));
  }

  function handler(serverHost: string, route: (ctx: Ctx) => Promise<void>, envelope: boolean) {
    return (req: IncomingMessage, res: ServerResponse): void => {
      const header = (name: string): string | undefined => {
        const v = req.headers[name];
        return Array.isArray(v) ? v.join(', ') : v;
      };
      const record: MsRequestRecord = {
        method: req.method ?? '',
        host: serverHost,
        url: req.url ?? '',
        authorization: header('authorization'),
        cookie: header('cookie'),
        range: header('range'),
        snapshot: header('snapshot'),
        snapshotIdentifier: header('snapshot-identifier'),
        userAgent: header('user-agent'),
        requestId: header('x-request-id'),
        status: 0,
        bodyBytes: 0,
      };
      requests.push(record);
      const ctx: Ctx = {
        req,
        res,
        record,
        requestId: randomUUID().replace(/-/g, ''),
        network: () => network,
        served: (bytes) => {
          record.bodyBytes += bytes;
          contentBytesServed += bytes;
        },
        totalServed: () => contentBytesServed,
      };
      route(ctx).catch((err: unknown) => {
        if (res.headersSent) {
          res.destroy();
          return;
        }
        const e = err instanceof HttpError ? err : new HttpError(500, `Internal error: ${String(err)}`);
        if (envelope) sendEnvelope(ctx, e.status, e.code, e.message, null, e.headers);
        else sendBody(ctx, e.status, { 'Content-Type': 'application/xml', ...e.headers }, Buffer.from(`<Error><Code>${e.message}</Code></Error>`));
      });
    };
  }

  const apiServer = createServer({ keepAliveTimeout: 30_000 }, handler(host, routeApi, true));
  const cdnServer = createServer({ keepAliveTimeout: 30_000 }, handler(cdnHost, routeCdn, false));
  const apiPort = await listen(apiServer, host);
  try {
    cdnOrigin = `http://${cdnHost}:${await listen(cdnServer, cdnHost)}`;
  } catch (error) {
    await closeServer(apiServer);
    throw error;
  }
  endpoint = `http://${host}:${apiPort}`;

  return {
    endpoint,
    cdnOrigin,
    requests,
    addRepo(opts: MsAddRepoOptions): MsAddedCommit {
      const type = opts.type ?? 'model';
      const store = storeOf(type);
      if (store.has(opts.id)) throw new Error(`modelscope-server: ${type} ${opts.id} already exists`);
      if (!/^[^/]+\/[^/]+$/.test(opts.id)) throw new Error(`modelscope-server: ${opts.id} is not owner/name`);
      const repo: RepoState = { type, id: opts.id, numericId: nextNumericId++, private: opts.private ?? false, branches: new Map(), tags: new Map() };
      store.set(opts.id, repo);
      if (type === 'dataset') datasetsByHubId.set(repo.numericId, repo);
      return commitFiles(repo, new Map(), opts.files, [], opts.branch ?? 'master', opts.tags ?? []);
    },
    addCommit(id, files, opts = {}): MsAddedCommit {
      const repo = storeOf(opts.type).get(id);
      if (repo === undefined) throw new Error(`modelscope-server: no repo ${id}`);
      const branch = opts.branch ?? 'master';
      const base = repo.branches.get(branch)?.files ?? repo.branches.get('master')?.files ?? new Map<string, StoredFile>();
      return commitFiles(repo, base, files, opts.remove ?? [], branch, opts.tags ?? []);
    },
    fault(path: string, fault: MsFault): void {
      const list = faults.get(path) ?? [];
      list.push({ ...fault, left: fault.times ?? 1 });
      faults.set(path, list);
    },
    overrideListing(id: string, data: unknown, type?: 'model' | 'dataset'): void {
      const repo = storeOf(type).get(id);
      if (repo === undefined) throw new Error(`modelscope-server: no repo ${id}`);
      repo.listingOverride = data;
    },
    datasetHubId(id: string): number {
      const repo = datasets.get(id);
      if (repo === undefined) throw new Error(`modelscope-server: no dataset ${id}`);
      return repo.numericId;
    },
    setNetwork(next: MsNetwork): void {
      network = { ...next };
    },
    get contentBytesServed(): number {
      return contentBytesServed;
    },
    async close(): Promise<void> {
      await Promise.all([closeServer(apiServer), closeServer(cdnServer)]);
    },
  };
}
