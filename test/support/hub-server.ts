/**
 * A protocol-faithful Hugging Face Hub for tests (see /work/shared/specs/hf-hub.md §2).
 *
 * Two node:http servers on two different loopback HOSTS:
 * - `endpoint` (127.0.0.1): repo info, tree, paths-info, resolve, resolve-cache. Applies the Hub's auth
 *   and error rules and answers with `X-Error-Code` / `X-Error-Message` / `{"error": msg}`.
 * - `cdnOrigin` (127.0.0.2): LFS bytes behind signed, expiring URLs. It never needs Authorization;
 *   clients (Python's `_is_same_or_hub_host` compares the host name only, not the port) must drop it
 *   on the cross-host hop, and `requests` records whether they did.
 *
 * Git files: resolve → 307 with a RELATIVE Location to /api/resolve-cache/… → 200 with the bytes.
 * LFS files: resolve → 302 with an ABSOLUTE Location on the CDN, metadata (X-Linked-Etag/-Size) on the 302.
 * Gating applies only to file content (resolve, resolve-cache): since late 2024 the Hub lists gated repos'
 * info and tree without access (huggingface/huggingface.js#945). Private repos are hidden on every route.
 *
 * Files added with `fromFile` are hashed and served by streaming; they are never held in memory.
 *
 * Fault injection (`faults` option, `setFaults()` at any time) for what real networks do: cut a content
 * response after N bytes, answer 503/429 (with Retry-After) for the next K requests, expire signed CDN
 * URLs after a time, serve content slowly. `contentBytesServed` counts the file bytes handed to sockets
 * (so a test can tell how much a resumed download fetched again).
 */
import { createHash, createHmac, randomBytes, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';

// ---------------------------------------------------------------------------------------------------------
// Public API

export type HubRepoType = 'model' | 'dataset';

export interface HubFileInput {
  path: string;
  data?: Buffer | string;
  /** Absolute path on disk; hashed and served by streaming (for big files). */
  fromFile?: string;
  /** Default: true for *.safetensors, *.bin, *.pt, *.pth, *.gguf, *.onnx, *.msgpack, *.h5 or size >= 10 MiB. */
  lfs?: boolean;
}

export interface HubFileInfo {
  path: string;
  size: number;
  sha256: string;
  /** Git blob sha1; for LFS the sha1 of the pointer file blob. */
  blobId: string;
  lfs: boolean;
  /** lfs ? sha256 : blobId (what huggingface_hub names the cache blob). */
  etag: string;
}

export interface AddRepoOptions {
  id: string;
  type?: HubRepoType;
  files: HubFileInput[];
  /** Default 'main'. */
  branch?: string;
  tags?: string[];
  private?: boolean;
  gated?: boolean;
}

export interface AddedCommit {
  /** 40 lowercase hex: a git-style commit hash, unique per server. */
  commit: string;
  files: HubFileInfo[];
}

export interface RequestRecord {
  method: string;
  /** The host of the server that received it: `host` ('127.0.0.1') or `cdnHost` ('127.0.0.2'). */
  host: string;
  /** Raw request target: path and query. */
  url: string;
  authorization: string | undefined;
  range: string | undefined;
  /** 0 until the response head is written. */
  status: number;
  /** File content bytes written for this request (0 for everything but file bytes). */
  bodyBytes: number;
}

/** What can go wrong on purpose. Every field is optional; `{}` is a healthy hub. */
export interface HubFaults {
  /** Cut every file-content response (resolve-cache or CDN) after this many body bytes. */
  dropAfterBytes?: number;
  /** Only cut the next N content responses (default: all of them). */
  dropTimes?: number;
  /** Answer `status` to the next `count` requests that match `on` (default 'any'), then behave. */
  failNext?: { count: number; status: number; retryAfter?: string; on?: 'hub' | 'cdn' | 'content' | 'any' };
  /** Signed CDN URLs expire this many ms after the resolve that issued them (default one hour). */
  cdnUrlTtlMs?: number;
  /** Content bytes per second, per response: a slow link. */
  bytesPerSecond?: number;
  /**
   * Stop sending content once `contentBytesServed` reaches this total (every connection then hangs
   * until the faults change or the client goes away): a precise point to kill a client at.
   */
  stallAtBytes?: number;
}

export interface HubServer {
  /** 'http://127.0.0.1:<port>' (https with the `tls` option): API and resolve. */
  endpoint: string;
  /** 'http://127.0.0.2:<port2>': LFS bytes (a different HOST, not just a different port). */
  cdnOrigin: string;
  requests: RequestRecord[];
  addRepo(options: AddRepoOptions): Promise<AddedCommit>;
  addCommit(
    repo: { id: string; type?: HubRepoType },
    files: HubFileInput[],
    options?: { branch?: string; tags?: string[] },
  ): Promise<AddedCommit>;
  /** The old id then answers 307 with a relative Location to the same URL under the new id. */
  renameRepo(oldId: string, newId: string, type?: HubRepoType): void;
  grantGatedAccess(token: string, repoId: string): void;
  /** Replaces the active faults (`{}` heals the hub). */
  setFaults(faults: HubFaults): void;
  /** File content bytes handed to sockets so far, over every request. */
  readonly contentBytesServed: number;
  close(): Promise<void>;
}

export interface HubServerOptions {
  /** Valid bearer tokens. Any other token is rejected with 401 "Invalid credentials in Authorization header". */
  tokens?: string[];
  /** Tree page size, default 1000 (the Hub's; 50 with expand=true). */
  pageSize?: number;
  /** Default '127.0.0.1'. */
  host?: string;
  /** Default '127.0.0.2'. */
  cdnHost?: string;
  faults?: HubFaults;
  /** Serve https (both hosts) with this PEM key and certificate (which must name 127.0.0.1 and 127.0.0.2). */
  tls?: { key: string | Buffer; cert: string | Buffer };
}

export function gitBlobSha1(data: Buffer): string {
  return createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
}

export function lfsPointer(sha256: string, size: number): string {
  return `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${size}\n`;
}

// ---------------------------------------------------------------------------------------------------------
// State

const LFS_EXTENSIONS = ['.safetensors', '.bin', '.pt', '.pth', '.gguf', '.onnx', '.msgpack', '.h5'];
const LFS_SIZE_THRESHOLD = 10 * 1024 * 1024;
const STREAM_CHUNK = 1024 * 1024;
/** A slow link sends small chunks often (little is ever in flight, as on a real slow link). */
const SLOW_CHUNK = 16 * 1024;
const EXPAND_PAGE_SIZE = 50;
const CDN_URL_TTL_SECONDS = 3600;

type Content = { kind: 'buffer'; data: Buffer } | { kind: 'file'; path: string };

interface StoredFile extends HubFileInfo {
  content: Content;
  /** Byte length of the LFS pointer (only meaningful when lfs). */
  pointerSize: number;
}

interface CommitState {
  id: string;
  date: Date;
  title: string;
  files: Map<string, StoredFile>;
  /** Directory path ('' = root) → git tree sha1. */
  dirs: Map<string, string>;
}

interface RepoState {
  type: HubRepoType;
  id: string;
  objectId: string;
  private: boolean;
  gated: boolean;
  createdAt: Date;
  defaultBranch: string;
  branches: Map<string, string>;
  tags: Map<string, string>;
  commits: Map<string, CommitState>;
}

interface CdnObject {
  size: number;
  content: Content;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly errorCode: string | undefined,
    message: string,
    readonly headers: OutgoingHttpHeaders = {},
  ) {
    super(message);
  }
}

function repoKey(type: HubRepoType, id: string): string {
  return `${type}:${id}`;
}

function defaultLfs(path: string, size: number): boolean {
  const lower = path.toLowerCase();
  return size >= LFS_SIZE_THRESHOLD || LFS_EXTENSIONS.some((ext) => lower.endsWith(ext));
}

async function storeFile(input: HubFileInput): Promise<StoredFile> {
  if (typeof input.path !== 'string' || input.path === '') throw new Error('hub-server: a file needs a non-empty path');
  let size: number;
  let sha256: string;
  let gitSha1: string;
  let content: Content;
  if (input.fromFile !== undefined) {
    if (input.data !== undefined) throw new Error(`hub-server: ${input.path}: give data or fromFile, not both`);
    const info = await stat(input.fromFile);
    if (!info.isFile()) throw new Error(`hub-server: ${input.fromFile} is not a regular file`);
    size = info.size;
    const h256 = createHash('sha256');
    const h1 = createHash('sha1').update(`blob ${size}\0`);
    let seen = 0;
    for await (const chunk of createReadStream(input.fromFile, { highWaterMark: STREAM_CHUNK })) {
      const buf = chunk as Buffer;
      h256.update(buf);
      h1.update(buf);
      seen += buf.length;
    }
    if (seen !== size) throw new Error(`hub-server: ${input.fromFile} changed while being hashed`);
    sha256 = h256.digest('hex');
    gitSha1 = h1.digest('hex');
    content = { kind: 'file', path: input.fromFile };
  } else {
    if (input.data === undefined) throw new Error(`hub-server: ${input.path}: give data or fromFile`);
    const data = typeof input.data === 'string' ? Buffer.from(input.data, 'utf8') : input.data;
    size = data.length;
    sha256 = createHash('sha256').update(data).digest('hex');
    gitSha1 = gitBlobSha1(data);
    content = { kind: 'buffer', data };
  }
  const lfs = input.lfs ?? defaultLfs(input.path, size);
  const pointer = Buffer.from(lfsPointer(sha256, size), 'utf8');
  const blobId = lfs ? gitBlobSha1(pointer) : gitSha1;
  return { path: input.path, size, sha256, blobId, lfs, etag: lfs ? sha256 : blobId, content, pointerSize: pointer.length };
}

/** Git tree sha1 of every directory, derived from the file paths (git's entry order: dirs sort as "name/"). */
function buildTrees(files: Map<string, StoredFile>): Map<string, string> {
  const children = new Map<string, Map<string, boolean /* isDir */>>([['', new Map()]]);
  for (const path of files.keys()) {
    const parts = path.split('/');
    let parent = '';
    for (let i = 0; i < parts.length - 1; i++) {
      const name = parts[i] as string;
      const dir = parent === '' ? name : `${parent}/${name}`;
      if (files.has(dir)) throw new Error(`hub-server: "${dir}" is both a file and a directory`);
      (children.get(parent) as Map<string, boolean>).set(name, true);
      if (!children.has(dir)) children.set(dir, new Map());
      parent = dir;
    }
    (children.get(parent) as Map<string, boolean>).set(parts[parts.length - 1] as string, false);
  }
  const dirs = new Map<string, string>();
  const treeOid = (dir: string): string => {
    const entries = [...(children.get(dir) as Map<string, boolean>)].map(([name, isDir]) => {
      const full = dir === '' ? name : `${dir}/${name}`;
      return isDir
        ? { key: Buffer.from(`${name}/`), head: `40000 ${name}\0`, oid: treeOid(full) }
        : { key: Buffer.from(name), head: `100644 ${name}\0`, oid: (files.get(full) as StoredFile).blobId };
    });
    entries.sort((a, b) => Buffer.compare(a.key, b.key));
    const body = Buffer.concat(entries.flatMap((e) => [Buffer.from(e.head, 'utf8'), Buffer.from(e.oid, 'hex')]));
    const oid = createHash('sha1').update(`tree ${body.length}\0`).update(body).digest('hex');
    dirs.set(dir, oid);
    return oid;
  };
  treeOid('');
  return dirs;
}

function byPath(a: { path: string }, b: { path: string }): number {
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0;
}

function publicInfo(f: StoredFile): HubFileInfo {
  return { path: f.path, size: f.size, sha256: f.sha256, blobId: f.blobId, lfs: f.lfs, etag: f.etag };
}

function encodePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

// ---------------------------------------------------------------------------------------------------------
// HTTP helpers

interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  record: RequestRecord;
  head: boolean;
  /** Content delivery under the current faults (set by the server). */
  faults: () => HubFaults;
  /** Consumes one "drop" of `dropTimes`; true when this response is to be cut. */
  takeDrop: () => boolean;
  served: (bytes: number) => void;
  totalServed: () => number;
}

function writeHead(ctx: Ctx, status: number, headers: OutgoingHttpHeaders): void {
  ctx.record.status = status;
  ctx.res.writeHead(status, { 'X-Request-Id': randomUUID(), ...headers });
}

function sendBody(ctx: Ctx, status: number, headers: OutgoingHttpHeaders, body: Buffer): void {
  writeHead(ctx, status, { 'Content-Length': String(body.length), ...headers });
  ctx.res.end(ctx.head ? undefined : body);
}

function sendJson(ctx: Ctx, status: number, value: unknown, headers: OutgoingHttpHeaders = {}): void {
  sendBody(ctx, status, { 'Content-Type': 'application/json; charset=utf-8', ...headers }, Buffer.from(JSON.stringify(value), 'utf8'));
}

function sendError(ctx: Ctx, err: HttpError): void {
  // Header values must be Latin-1 without controls; the JSON body keeps the exact message.
  const headers: OutgoingHttpHeaders = { 'X-Error-Message': err.message.replace(/[^\x20-\x7e]/g, '?'), ...err.headers };
  if (err.errorCode !== undefined) headers['X-Error-Code'] = err.errorCode;
  sendJson(ctx, err.status, { error: err.message }, headers);
}

function sendRedirect(ctx: Ctx, status: 302 | 307, location: string, headers: OutgoingHttpHeaders = {}): void {
  sendBody(ctx, status, { Location: location, ...headers }, Buffer.alloc(0));
}

type RangeResult = { kind: 'full' } | { kind: 'partial'; start: number; end: number } | { kind: 'unsatisfiable' };

/** Single byte ranges only (`N-`, `N-M`, `-S`); anything unparsable is ignored, as RFC 9110 allows. */
function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'full' };
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (m === null || (m[1] === '' && m[2] === '')) return { kind: 'full' };
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return { kind: 'unsatisfiable' };
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return { kind: 'full' };
  }
  if (start >= size) return { kind: 'unsatisfiable' };
  return { kind: 'partial', start, end };
}

/** Serves bytes with Range support; `extra` carries ETag / X-Repo-Commit. Streams files in 1 MiB chunks. */
async function sendContent(ctx: Ctx, content: Content, size: number, extra: OutgoingHttpHeaders): Promise<void> {
  const range = parseRange(ctx.req.headers.range, size);
  const base: OutgoingHttpHeaders = { 'Accept-Ranges': 'bytes', 'Content-Type': 'application/octet-stream', ...extra };
  if (range.kind === 'unsatisfiable') {
    sendBody(ctx, 416, { ...base, 'Content-Range': `bytes */${size}` }, Buffer.alloc(0));
    return;
  }
  const start = range.kind === 'partial' ? range.start : 0;
  const end = range.kind === 'partial' ? range.end : size - 1;
  const length = end - start + 1;
  const status = range.kind === 'partial' ? 206 : 200;
  const headers: OutgoingHttpHeaders = { ...base, 'Content-Length': String(length) };
  if (range.kind === 'partial') headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
  const faults = ctx.faults();
  const drop = !ctx.head && length > 0 && faults.dropAfterBytes !== undefined && ctx.takeDrop() ? faults.dropAfterBytes : undefined;
  const slow = faults.bytesPerSecond;
  const paced = drop !== undefined || slow !== undefined || faults.stallAtBytes !== undefined;
  if ((content.kind === 'buffer' && !paced) || ctx.head || length === 0) {
    writeHead(ctx, status, headers);
    if (!ctx.head && content.kind === 'buffer') ctx.served(length);
    ctx.res.end(ctx.head || content.kind !== 'buffer' ? undefined : content.data.subarray(start, end + 1));
    return;
  }
  // Open before the head is written, so a vanished file is a 500 rather than a truncated 200.
  let chunks: AsyncIterable<Buffer>;
  if (content.kind === 'file') {
    const stream = createReadStream(content.path, { start, end, highWaterMark: slow !== undefined ? SLOW_CHUNK : STREAM_CHUNK });
    await new Promise<void>((resolve, reject) => {
      stream.once('open', () => resolve());
      stream.once('error', reject);
    });
    chunks = stream;
  } else {
    const data = content.data.subarray(start, end + 1);
    const step = slow !== undefined ? SLOW_CHUNK : STREAM_CHUNK;
    chunks = (async function* () {
      for (let at = 0; at < data.length; at += step) yield data.subarray(at, at + step);
    })();
  }
  writeHead(ctx, status, headers);
  if (!paced) {
    const counted = async function* () {
      for await (const chunk of chunks) {
        ctx.served((chunk).length);
        yield chunk;
      }
    };
    await pipeline(counted, ctx.res).catch(() => {
      // The client went away (e.g. a test aborting mid-download): nothing to report.
    });
    return;
  }
  // Faulty or slow: write chunk by chunk, pacing and cutting as asked.
  const started = Date.now();
  let sent = 0;
  const res = ctx.res;
  try {
    for await (const raw of chunks) {
      let chunk = raw;
      if (drop !== undefined && sent + chunk.length >= drop) chunk = chunk.subarray(0, Math.max(0, drop - sent));
      while (chunk.length > 0) {
        if (res.destroyed) return;
        // a stall point splits the chunk: send up to it, then hang until the faults change
        const stallAt = ctx.faults().stallAtBytes;
        const room = stallAt === undefined ? chunk.length : Math.max(0, stallAt - ctx.totalServed());
        if (room === 0) {
          const stalledBy = ctx.faults();
          while (ctx.faults() === stalledBy && !res.destroyed) await new Promise((resolve) => setTimeout(resolve, 5));
          continue;
        }
        const piece = chunk.subarray(0, Math.min(room, chunk.length));
        chunk = chunk.subarray(piece.length);
        const ok = res.write(piece);
        sent += piece.length;
        ctx.served(piece.length);
        if (!ok) await waitDrain(res);
      }
      if (drop !== undefined && sent >= drop) {
        // let the bytes leave, then cut the connection mid-body
        await new Promise((resolve) => setTimeout(resolve, 5));
        res.destroy();
        return;
      }
      if (slow !== undefined) {
        const due = started + (sent * 1000) / slow;
        const wait = due - Date.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
    res.end();
  } catch {
    res.destroy();
  } finally {
    if (content.kind === 'file') (chunks as ReturnType<typeof createReadStream>).destroy();
  }
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

function decodeSegments(rawPath: string): string[] {
  const segments = rawPath.split('/').slice(1);
  try {
    return segments.map((s) => decodeURIComponent(s));
  } catch {
    throw new HttpError(400, undefined, 'Malformed percent-encoding in URL');
  }
}

async function readBody(req: IncomingMessage, limit = 1024 * 1024): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req) {
    total += (chunk as Buffer).length;
    if (total > limit) throw new HttpError(413, undefined, 'Request body too large');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function listen(server: Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', (err) =>
      reject(new Error(`hub-server: cannot listen on ${host} (needs a loopback /8, e.g. Linux): ${String(err)}`)),
    );
    server.listen(0, host, () => resolve((server.address() as AddressInfo).port));
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

// ---------------------------------------------------------------------------------------------------------
// The server

export async function startHubServer(options: HubServerOptions = {}): Promise<HubServer> {
  const host = options.host ?? '127.0.0.1';
  const cdnHost = options.cdnHost ?? '127.0.0.2';
  const pageSize = options.pageSize ?? 1000;
  if (!Number.isInteger(pageSize) || pageSize < 1) throw new Error('hub-server: pageSize must be a positive integer');
  const tokens = new Set(options.tokens ?? []);
  const grants = new Set<string>();
  const repos = new Map<string, RepoState>();
  const renames = new Map<string, string>();
  const cdnObjects = new Map<string, CdnObject>();
  const signingKey = randomBytes(32);
  const requests: RequestRecord[] = [];
  let faults: HubFaults = { ...(options.faults ?? {}), ...(options.faults?.failNext !== undefined ? { failNext: { ...options.faults.failNext } } : {}) };
  let dropsLeft = faults.dropTimes ?? Infinity;
  let contentBytesServed = 0;
  let commitCounter = 0;
  let endpoint = '';
  let cdnOrigin = '';

  // ----- mutation

  async function makeCommit(repo: RepoState, inputs: HubFileInput[], branch: string, tags: string[]): Promise<AddedCommit> {
    const files = new Map<string, StoredFile>();
    for (const input of inputs) {
      if (files.has(input.path)) throw new Error(`hub-server: duplicate path ${input.path}`);
      files.set(input.path, await storeFile(input));
    }
    const dirs = buildTrees(files);
    const parent = repo.branches.get(branch);
    const date = new Date(Math.floor(Date.now() / 1000) * 1000);
    commitCounter += 1;
    const title = `Commit ${commitCounter} to ${repo.type}s/${repo.id}`;
    const seconds = Math.floor(date.getTime() / 1000);
    const body =
      `tree ${dirs.get('') as string}\n` +
      (parent !== undefined ? `parent ${parent}\n` : '') +
      `author airlock-test <test@airlock.invalid> ${seconds} +0000\n` +
      `committer airlock-test <test@airlock.invalid> ${seconds} +0000\n\n${title}\n`;
    const id = createHash('sha1').update(`commit ${Buffer.byteLength(body)}\0${body}`).digest('hex');
    repo.commits.set(id, { id, date, title, files, dirs });
    repo.branches.set(branch, id);
    for (const tag of tags) repo.tags.set(tag, id);
    for (const f of files.values()) if (f.lfs) cdnObjects.set(f.sha256, { size: f.size, content: f.content });
    return { commit: id, files: [...files.values()].sort(byPath).map(publicInfo) };
  }

  function getRepo(id: string, type: HubRepoType): RepoState {
    const repo = repos.get(repoKey(type, id));
    if (repo === undefined) throw new Error(`hub-server: no ${type} repo ${id}`);
    return repo;
  }

  // ----- lookups used by the routes

  function resolveRevision(repo: RepoState, rev: string): CommitState | undefined {
    const wanted = rev === 'HEAD' ? repo.defaultBranch : rev;
    const id = repo.branches.get(wanted) ?? repo.tags.get(wanted) ?? (/^[0-9a-f]{40}$/.test(wanted) ? wanted : undefined);
    return id === undefined ? undefined : repo.commits.get(id);
  }

  /** A revision may arrive encoded (`refs%2Fpr%2F1`) or raw (`refs/pr/1`): take the shortest prefix that resolves. */
  function splitRevision(repo: RepoState, segments: string[]): { commit: CommitState; rest: string[] } {
    for (let k = 1; k <= segments.length; k++) {
      const commit = resolveRevision(repo, segments.slice(0, k).join('/'));
      if (commit !== undefined) return { commit, rest: segments.slice(k) };
    }
    throw new HttpError(404, 'RevisionNotFound', `Invalid rev id: ${segments[0] ?? ''}`);
  }

  function bearer(ctx: Ctx): string | undefined {
    const header = ctx.req.headers.authorization;
    if (header === undefined) return undefined;
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (m === null || !tokens.has(m[1] as string)) {
      // No X-Error-Code: huggingface_hub recognises a bad token by this exact message (§2.7).
      throw new HttpError(401, undefined, 'Invalid credentials in Authorization header');
    }
    return m[1];
  }

  interface Located {
    repo: RepoState;
    /** Index of the first segment after the repo id. */
    next: number;
  }

  /**
   * Finds the repo whose id starts at `segments[at]` (namespaced or not). A renamed id answers 307 with a
   * relative Location: the same URL with the id replaced.
   */
  function locateRepo(ctx: Ctx, type: HubRepoType, segments: string[], at: number, lengths: number[]): Located | 'redirected' {
    for (const len of lengths) {
      if (at + len > segments.length) continue;
      const id = segments.slice(at, at + len).join('/');
      const repo = repos.get(repoKey(type, id));
      if (repo !== undefined) return { repo, next: at + len };
      const renamedTo = renames.get(repoKey(type, id));
      if (renamedTo !== undefined) {
        const raw = ctx.req.url ?? '/';
        const q = raw.indexOf('?');
        const rawSegments = (q < 0 ? raw : raw.slice(0, q)).split('/').slice(1);
        const replaced = [...rawSegments.slice(0, at), ...renamedTo.split('/').map(encodeURIComponent), ...rawSegments.slice(at + len)];
        sendRedirect(ctx, 307, `/${replaced.join('/')}${q < 0 ? '' : raw.slice(q)}`);
        return 'redirected';
      }
    }
    throw new HttpError(404, 'RepoNotFound', 'Repository not found');
  }

  function checkRead(repo: RepoState, token: string | undefined): void {
    if (repo.private && token === undefined) throw new HttpError(401, 'RepoNotFound', 'Repository not found');
  }

  function checkContent(repo: RepoState, token: string | undefined): void {
    checkRead(repo, token);
    if (!repo.gated) return;
    if (token === undefined) {
      throw new HttpError(
        401,
        'GatedRepo',
        `Access to ${repo.type} ${repo.id} is restricted. You must have access to it and be authenticated to access it. Please log in.`,
      );
    }
    if (!grants.has(`${token}\n${repo.id}`)) {
      throw new HttpError(
        403,
        'GatedRepo',
        `Access to ${repo.type} ${repo.id} is restricted and you are not in the authorized list. Visit ${endpoint}/${repo.type === 'dataset' ? 'datasets/' : ''}${repo.id} to ask for access.`,
      );
    }
  }

  function treeEntry(commit: CommitState, path: string, expand: boolean): Record<string, unknown> {
    const file = commit.files.get(path);
    const entry: Record<string, unknown> =
      file !== undefined
        ? { type: 'file', oid: file.blobId, size: file.size, path }
        : { type: 'directory', oid: commit.dirs.get(path), size: 0, path };
    if (file?.lfs === true) entry['lfs'] = { oid: file.sha256, size: file.size, pointerSize: file.pointerSize };
    if (expand) entry['lastCommit'] = { id: commit.id, title: commit.title, date: commit.date.toISOString() };
    return entry;
  }

  // ----- routes

  function repoInfo(ctx: Ctx, repo: RepoState, commit: CommitState, query: URLSearchParams): void {
    const blobs = /^(true|1)$/i.test(query.get('blobs') ?? '');
    const siblings = [...commit.files.values()].sort(byPath).map((f) => {
      if (!blobs) return { rfilename: f.path };
      const s: Record<string, unknown> = { rfilename: f.path, blobId: f.blobId, size: f.size };
      if (f.lfs) s['lfs'] = { sha256: f.sha256, size: f.size, pointerSize: f.pointerSize };
      return s;
    });
    const full: Record<string, unknown> = {
      _id: repo.objectId,
      id: repo.id,
      author: repo.id.includes('/') ? repo.id.split('/')[0] : undefined,
      private: repo.private,
      gated: repo.gated ? 'manual' : false,
      disabled: false,
      sha: commit.id,
      lastModified: commit.date.toISOString(),
      createdAt: repo.createdAt.toISOString(),
      downloads: 0,
      likes: 0,
      tags: [],
      siblings,
    };
    if (repo.type === 'model') full['modelId'] = repo.id;
    const expand = query.getAll('expand');
    if (expand.length === 0) {
      sendJson(ctx, 200, full);
      return;
    }
    const only: Record<string, unknown> = { _id: repo.objectId, id: repo.id };
    for (const field of expand) if (field in full) only[field] = full[field];
    sendJson(ctx, 200, only);
  }

  function tree(ctx: Ctx, commit: CommitState, base: string, query: URLSearchParams): void {
    if (base !== '' && !commit.dirs.has(base)) throw new HttpError(404, 'EntryNotFound', `Entry not found: ${base}`, { 'X-Repo-Commit': commit.id });
    const recursive = /^(true|1)$/i.test(query.get('recursive') ?? '');
    const expand = /^(true|1)$/i.test(query.get('expand') ?? '');
    const prefix = base === '' ? '' : `${base}/`;
    const paths = [...commit.files.keys(), ...[...commit.dirs.keys()].filter((d) => d !== '')]
      .filter((p) => p.startsWith(prefix) && (recursive || !p.slice(prefix.length).includes('/')))
      .sort();
    const size = expand ? Math.min(pageSize, EXPAND_PAGE_SIZE) : pageSize;
    const cursor = query.get('cursor');
    let offset = 0;
    if (cursor !== null) {
      offset = Number(Buffer.from(cursor, 'base64url').toString('utf8'));
      if (!Number.isInteger(offset) || offset < 0 || offset > paths.length) throw new HttpError(400, undefined, 'Invalid cursor');
    }
    const page = paths.slice(offset, offset + size).map((p) => treeEntry(commit, p, expand));
    const headers: OutgoingHttpHeaders = {};
    if (offset + size < paths.length) {
      // Absolute, carrying every original parameter plus the cursor: clients follow it verbatim.
      const next = new URLSearchParams(query);
      next.set('cursor', Buffer.from(String(offset + size), 'utf8').toString('base64url'));
      const raw = ctx.req.url ?? '/';
      const rawPath = raw.includes('?') ? raw.slice(0, raw.indexOf('?')) : raw;
      headers['Link'] = `<${endpoint}${rawPath}?${next.toString()}>; rel="next"`;
    }
    sendJson(ctx, 200, page, headers);
  }

  async function pathsInfo(ctx: Ctx, commit: CommitState): Promise<void> {
    const body = await readBody(ctx.req);
    let paths: string[];
    let expand = false;
    if ((ctx.req.headers['content-type'] ?? '').includes('application/json')) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString('utf8'));
      } catch {
        throw new HttpError(400, undefined, 'Invalid JSON body');
      }
      const obj = parsed as { paths?: unknown; expand?: unknown };
      if (!Array.isArray(obj.paths) || !obj.paths.every((p) => typeof p === 'string')) throw new HttpError(400, undefined, '"paths" must be an array of strings');
      paths = obj.paths;
      expand = obj.expand === true;
    } else {
      const form = new URLSearchParams(body.toString('utf8'));
      paths = form.getAll('paths');
      expand = /^(true|1)$/i.test(form.get('expand') ?? '');
    }
    const entries = [...new Set(paths)]
      .filter((p) => commit.files.has(p) || (p !== '' && commit.dirs.has(p)))
      .map((p) => treeEntry(commit, p, expand));
    sendJson(ctx, 200, entries);
  }

  /** resolve (direct=false) and resolve-cache (direct=true) of one file. */
  async function serveFile(ctx: Ctx, repo: RepoState, commit: CommitState, path: string, direct: boolean): Promise<void> {
    const file = commit.files.get(path);
    if (file === undefined) throw new HttpError(404, 'EntryNotFound', 'Entry not found', { 'X-Repo-Commit': commit.id });
    if (file.lfs) {
      // expiry in ms (a fault may make it short); the real CDN uses seconds, nothing depends on the unit
      const expires = Date.now() + (faults.cdnUrlTtlMs ?? CDN_URL_TTL_SECONDS * 1000);
      const signature = createHmac('sha256', signingKey).update(`${file.sha256}:${expires}`).digest('hex');
      const filename = path.slice(path.lastIndexOf('/') + 1);
      const disposition = encodeURIComponent(`attachment; filename*=UTF-8''${encodeURIComponent(filename)}; filename="${filename.replace(/["\\]/g, '_')}";`);
      sendRedirect(ctx, 302, `${cdnOrigin}/lfs/${file.sha256}?response-content-disposition=${disposition}&expires=${expires}&signature=${signature}`, {
        'X-Repo-Commit': commit.id,
        'X-Linked-Etag': `"${file.sha256}"`,
        'X-Linked-Size': String(file.size),
        ETag: `"${file.blobId}"`,
      });
      return;
    }
    const meta: OutgoingHttpHeaders = { 'X-Repo-Commit': commit.id, ETag: `"${file.blobId}"` };
    if (direct) {
      await sendContent(ctx, file.content, file.size, meta);
      return;
    }
    const prefix = repo.type === 'dataset' ? 'datasets' : 'models';
    const location = `/api/resolve-cache/${prefix}/${repo.id}/${commit.id}/${encodePath(path)}?etag=${encodeURIComponent(`"${file.blobId}"`)}`;
    sendRedirect(ctx, 307, location, meta);
  }

  async function routeHub(ctx: Ctx): Promise<void> {
    const raw = ctx.req.url ?? '/';
    const q = raw.indexOf('?');
    const segments = decodeSegments(q < 0 ? raw : raw.slice(0, q));
    const query = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
    const method = ctx.req.method ?? 'GET';
    const notFound = (): HttpError => new HttpError(404, undefined, 'Not Found');
    const requireRead = (): void => {
      if (method !== 'GET' && method !== 'HEAD') throw new HttpError(405, undefined, 'Method Not Allowed');
    };

    const token = bearer(ctx);

    if (segments[0] === 'api') {
      // /api/resolve-cache/{models|datasets}/{repo_id}/{commit}/{path}
      if (segments[1] === 'resolve-cache') {
        requireRead();
        const type = segments[2] === 'models' ? 'model' : segments[2] === 'datasets' ? 'dataset' : undefined;
        if (type === undefined) throw notFound();
        const located = locateRepo(ctx, type, segments, 3, [2, 1]);
        if (located === 'redirected') return;
        checkContent(located.repo, token);
        const { commit, rest } = splitRevision(located.repo, segments.slice(located.next));
        await serveFile(ctx, located.repo, commit, rest.join('/'), true);
        return;
      }
      const type = segments[1] === 'models' ? 'model' : segments[1] === 'datasets' ? 'dataset' : undefined;
      if (type === undefined) throw notFound();
      const located = locateRepo(ctx, type, segments, 2, [2, 1]);
      if (located === 'redirected') return;
      const { repo, next } = located;
      checkRead(repo, token);
      const action = segments[next];
      const args = segments.slice(next + 1);
      if (action === undefined || (action === '' && args.length === 0)) {
        requireRead();
        repoInfo(ctx, repo, resolveRevision(repo, 'HEAD') ?? missingDefault(repo), query);
        return;
      }
      if (action === 'revision' && args.length >= 1) {
        requireRead();
        const { commit, rest } = splitRevision(repo, args);
        if (rest.length > 0 && !(rest.length === 1 && rest[0] === '')) throw notFound();
        repoInfo(ctx, repo, commit, query);
        return;
      }
      if (action === 'tree' && args.length >= 1) {
        requireRead();
        const { commit, rest } = splitRevision(repo, args);
        tree(ctx, commit, rest.filter((s) => s !== '').join('/'), query);
        return;
      }
      if (action === 'paths-info' && args.length >= 1) {
        if (method !== 'POST') throw new HttpError(405, undefined, 'Method Not Allowed');
        const { commit } = splitRevision(repo, args);
        await pathsInfo(ctx, commit);
        return;
      }
      throw notFound();
    }

    // /{prefix}{repo_id}/resolve/{rev}/{path}
    requireRead();
    const type: HubRepoType = segments[0] === 'datasets' ? 'dataset' : 'model';
    const at = type === 'dataset' ? 1 : 0;
    const idLength = segments[at + 2] === 'resolve' ? 2 : segments[at + 1] === 'resolve' ? 1 : 0;
    if (idLength === 0) throw notFound();
    const located = locateRepo(ctx, type, segments, at, [idLength]);
    if (located === 'redirected') return;
    checkContent(located.repo, token);
    const { commit, rest } = splitRevision(located.repo, segments.slice(at + idLength + 1));
    await serveFile(ctx, located.repo, commit, rest.join('/'), false);
  }

  function missingDefault(repo: RepoState): never {
    throw new HttpError(404, 'RevisionNotFound', `Invalid rev id: ${repo.defaultBranch}`);
  }

  async function routeCdn(ctx: Ctx): Promise<void> {
    const method = ctx.req.method ?? 'GET';
    if (method !== 'GET' && method !== 'HEAD') throw new HttpError(405, undefined, 'Method Not Allowed');
    const raw = ctx.req.url ?? '/';
    const q = raw.indexOf('?');
    const m = /^\/lfs\/([0-9a-f]{64})$/.exec(q < 0 ? raw : raw.slice(0, q));
    const object = m === null ? undefined : cdnObjects.get(m[1] as string);
    if (m === null || object === undefined) throw new HttpError(404, undefined, 'NoSuchKey');
    const query = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
    const expires = Number(query.get('expires'));
    const expected = createHmac('sha256', signingKey).update(`${m[1] as string}:${query.get('expires') ?? ''}`).digest('hex');
    // Signed URLs, like the real CDN: the signature is the credential, never an Authorization header.
    if (query.get('signature') !== expected) throw new HttpError(403, undefined, 'AccessDenied: bad signature');
    if (!(expires > Date.now())) throw new HttpError(403, undefined, 'AccessDenied: request has expired');
    const headers: OutgoingHttpHeaders = { ETag: `"${m[1] as string}"` };
    const disposition = query.get('response-content-disposition');
    if (disposition !== null) headers['Content-Disposition'] = disposition;
    await sendContent(ctx, object.content, object.size, headers);
  }

  function handler(serverHost: string, route: (ctx: Ctx) => Promise<void>) {
    return (req: IncomingMessage, res: ServerResponse): void => {
      const record: RequestRecord = {
        method: req.method ?? '',
        host: serverHost,
        url: req.url ?? '',
        authorization: req.headers.authorization,
        range: req.headers.range,
        status: 0,
        bodyBytes: 0,
      };
      requests.push(record);
      const ctx: Ctx = {
        req,
        res,
        record,
        head: req.method === 'HEAD',
        faults: () => faults,
        takeDrop: () => {
          if (dropsLeft <= 0) return false;
          dropsLeft--;
          return true;
        },
        served: (bytes) => {
          record.bodyBytes += bytes;
          contentBytesServed += bytes;
        },
        totalServed: () => contentBytesServed,
      };
      const fail = faults.failNext;
      if (fail !== undefined && fail.count > 0 && faultApplies(fail.on ?? 'any', serverHost === cdnHost, req.url ?? '')) {
        fail.count--;
        sendError(ctx, new HttpError(fail.status, undefined, `Injected fault: HTTP ${fail.status}`, fail.retryAfter !== undefined ? { 'Retry-After': fail.retryAfter } : {}));
        return;
      }
      route(ctx).catch((err: unknown) => {
        if (res.headersSent) {
          res.destroy();
          return;
        }
        sendError(ctx, err instanceof HttpError ? err : new HttpError(500, undefined, `Internal error: ${String(err)}`));
      });
    };
  }

  function faultApplies(on: 'hub' | 'cdn' | 'content' | 'any', isCdn: boolean, url: string): boolean {
    switch (on) {
      case 'any':
        return true;
      case 'hub':
        return !isCdn;
      case 'cdn':
        return isCdn;
      case 'content':
        return isCdn || url.includes('/resolve/') || url.startsWith('/api/resolve-cache/');
    }
  }

  const tls = options.tls;
  const scheme = tls === undefined ? 'http' : 'https';
  const makeServer = (route: ReturnType<typeof handler>): Server =>
    tls === undefined ? createServer({ keepAliveTimeout: 30_000 }, route) : createHttpsServer({ keepAliveTimeout: 30_000, key: tls.key, cert: tls.cert }, route);
  const hubServer = makeServer(handler(host, routeHub));
  const cdnServer = makeServer(handler(cdnHost, routeCdn));
  const hubPort = await listen(hubServer, host);
  try {
    const cdnPort = await listen(cdnServer, cdnHost);
    cdnOrigin = `${scheme}://${cdnHost}:${cdnPort}`;
  } catch (err) {
    await closeServer(hubServer);
    throw err;
  }
  endpoint = `${scheme}://${host}:${hubPort}`;

  return {
    endpoint,
    cdnOrigin,
    requests,
    async addRepo(opts: AddRepoOptions): Promise<AddedCommit> {
      const type = opts.type ?? 'model';
      const key = repoKey(type, opts.id);
      if (repos.has(key)) throw new Error(`hub-server: ${type} repo ${opts.id} already exists`);
      const branch = opts.branch ?? 'main';
      const repo: RepoState = {
        type,
        id: opts.id,
        objectId: createHash('sha1').update(key).digest('hex').slice(0, 24),
        private: opts.private ?? false,
        gated: opts.gated ?? false,
        createdAt: new Date(Math.floor(Date.now() / 1000) * 1000),
        defaultBranch: branch,
        branches: new Map(),
        tags: new Map(),
        commits: new Map(),
      };
      const added = await makeCommit(repo, opts.files, branch, opts.tags ?? []);
      repos.set(key, repo);
      renames.delete(key);
      return added;
    },
    async addCommit(ref, files, opts = {}): Promise<AddedCommit> {
      return makeCommit(getRepo(ref.id, ref.type ?? 'model'), files, opts.branch ?? 'main', opts.tags ?? []);
    },
    renameRepo(oldId: string, newId: string, type: HubRepoType = 'model'): void {
      const repo = getRepo(oldId, type);
      if (repos.has(repoKey(type, newId))) throw new Error(`hub-server: ${type} repo ${newId} already exists`);
      repos.delete(repoKey(type, oldId));
      repo.id = newId;
      repos.set(repoKey(type, newId), repo);
      renames.delete(repoKey(type, newId));
      renames.set(repoKey(type, oldId), newId);
    },
    grantGatedAccess(token: string, repoId: string): void {
      grants.add(`${token}\n${repoId}`);
    },
    setFaults(next: HubFaults): void {
      faults = { ...next, ...(next.failNext !== undefined ? { failNext: { ...next.failNext } } : {}) };
      dropsLeft = faults.dropTimes ?? Infinity;
    },
    get contentBytesServed(): number {
      return contentBytesServed;
    },
    async close(): Promise<void> {
      await Promise.all([closeServer(hubServer), closeServer(cdnServer)]);
    },
  };
}
