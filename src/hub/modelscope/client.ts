/**
 * ModelScope (modelscope.cn, or a mirror) as a HubClient, per spec modelscope.md §2.10:
 * revisions → the requested branch/tag (default `master`, as modelscope ≥ 1.33 picks it) and its
 * CommitId; the recursive file listing at that ref; per file a GET of `repo?Revision=&FilePath=`
 * (redirects followed) as a `rangeSource` for the shared resumable downloader (../download.ts), so
 * export writes ModelScope files in place into the bundle like Hugging Face files: resumed with an
 * open Range (appending only on 206), checked against the listing's SHA-256, 3 attempts on a mismatch.
 *
 * Datasets (§2.9): the ref (default `master`) is passed through, never tag-resolved; `GET
 * /api/v1/datasets/{owner}/{name}` gives the numeric hub id, the listing is `GET
 * /api/v1/datasets/{hubId}/repo/tree?Revision=&Root=/&Recursive=True&PageNumber=&PageSize=`, page after page
 * until one holds fewer than PageSize entries, and files come from `…/datasets/{owner}/{name}/repo?Source=SDK&
 * Revision=&FilePath=&View=False`. With no commit to pin, the snapshot id is a digest of the listing
 * (wire.ts `datasetSnapshotId`).
 *
 * Credentials: the token goes out as the cookie `m_session_id=<token>` AND `Authorization: Bearer`,
 * only to the endpoint's origin and only while a redirect chain has not left it — never to a CDN /
 * object-storage redirect target (those URLs are signed).
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { request, type Dispatcher } from 'undici';
import type { SourceKind } from '../../bundle/manifest.js';
import { AirlockError, redact } from '../../errors.js';
import { unsafeRelativePathReason } from '../../fs/safe-path.js';
import type { Digests } from '../../integrity/digest.js';
import { toolVersion } from '../../version.js';
import { downloadFile, integrityError, type ByteRange, type FileBody, type OpenRange } from '../download.js';
import { defaultDispatcher, displayUrl, headerValue, type RequestLog } from '../http.js';
import { formatRepoRef } from '../repo-ref.js';
import { markTransient, type RetryPolicy as DownloadRetryPolicy } from '../retry.js';
import type { DownloadProgress, HubClient, RemoteFile, RepoRef } from '../types.js';
import { modelScopeErrorFromResponse, type ModelScopeStage } from './errors.js';
import {
  COMMIT_RE,
  datasetPageEntries,
  datasetSnapshotId,
  envelopeOk,
  findRevision,
  parseDatasetId,
  parseFileList,
  parseRevisions,
  protocolError,
  readEnvelope,
  type ModelScopeRemoteFile,
  type MsRevision,
} from './wire.js';

export type Env = Readonly<Record<string, string | undefined>>;

/** 1.x default (`ms: hub/constants.py`); `.ai` is the international site. */
export const MODELSCOPE_DEFAULT_ENDPOINT = 'https://www.modelscope.cn';
/** What modelscope ≥ 1.33 uses when no revision is given. */
export const MODELSCOPE_DEFAULT_REVISION = 'master';
/** The modelscope 1.x release whose protocol this client speaks (user agent only). */
export const MODELSCOPE_COMPAT_VERSION = '1.37.1';
export const MODELSCOPE_USER_AGENT = `modelscope/${MODELSCOPE_COMPAT_VERSION}; airlock/${toolVersion}`;
/** `ModelScopeSourceKind`: until `SourceKind` in src/bundle/manifest.ts includes it, it is cast. */
export const MODELSCOPE_KIND = 'modelscope' as unknown as SourceKind;

const MAX_REDIRECTS = 20;
/** What modelscope 1.x `snapshot_download` asks per dataset listing page. */
export const MODELSCOPE_DATASET_PAGE_SIZE = 200;
/** A listing that has not ended after this many pages is refused (a server ignoring PageNumber). */
const MAX_DATASET_PAGES = 10_000;
const REDIRECT_STATUSES: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);
const RETRY_STATUSES: ReadonlySet<number> = new Set([429, 500, 502, 503, 504]);
const MAX_JSON_BYTES = 64 * 1024 * 1024;
const MAX_ERROR_BODY_BYTES = 64 * 1024;

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

/**
 * `--endpoint` (host or URL) > `MODELSCOPE_ENDPOINT` (URL) > `MODELSCOPE_DOMAIN` (bare host, `https://`
 * prepended; a scheme is accepted as 1.38+ does) > https://www.modelscope.cn. A value without a scheme
 * gets `https://`. Trailing `/` stripped; no credentials, query or fragment (it is recorded in manifests).
 */
export function resolveModelScopeEndpoint(flag?: string, env: Env = process.env): string {
  const candidates: Array<[string | undefined, string]> = [
    [flag === undefined ? undefined : flag.trim(), '--endpoint'],
    [nonEmpty(env['MODELSCOPE_ENDPOINT']), 'MODELSCOPE_ENDPOINT'],
    [nonEmpty(env['MODELSCOPE_DOMAIN']), 'MODELSCOPE_DOMAIN'],
  ];
  const found = candidates.find(([value]) => value !== undefined);
  if (found === undefined) return MODELSCOPE_DEFAULT_ENDPOINT;
  const [raw, source] = found as [string, string];
  if (raw === '') throw new AirlockError('E_USAGE', `${source} is empty`, { hint: 'give a host (www.modelscope.cn) or a URL (https://www.modelscope.cn)' });
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `https://${raw}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new AirlockError('E_USAGE', `${source} is not a host or URL: ${JSON.stringify(raw)}`, {
      hint: 'e.g. www.modelscope.cn or https://www.modelscope.cn',
    });
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new AirlockError('E_USAGE', `${source} must be an http(s) URL, not ${url.protocol}`, { hint: 'e.g. https://www.modelscope.cn' });
  }
  if (url.username !== '' || url.password !== '') {
    throw new AirlockError('E_USAGE', `${source} must not contain credentials (user:password@)`, {
      hint: 'pass the token with --token or MODELSCOPE_API_TOKEN; it is then sent only to that endpoint',
    });
  }
  if (url.search !== '' || url.hash !== '') {
    throw new AirlockError('E_USAGE', `${source} must not have a query or fragment: ${url.origin}${url.pathname}…`, {
      hint: 'give only the base URL of the hub',
    });
  }
  return `${url.origin}${url.pathname}`.replace(/\/+$/, '');
}

/** `--token` > `MODELSCOPE_API_TOKEN` (CR/LF dropped, trimmed; empty = none). Login cookies are not read. */
export function resolveModelScopeToken(flag?: string, env: Env = process.env): string | undefined {
  const clean = (v: string | undefined): string | undefined => {
    if (v === undefined) return undefined;
    const c = v.replace(/[\r\n]/g, '').trim();
    return c === '' ? undefined : c;
  };
  const fromFlag = clean(flag);
  const token = fromFlag ?? clean(env['MODELSCOPE_API_TOKEN']);
  if (token !== undefined && !/^[\x21-\x7e]+$/.test(token)) {
    throw new AirlockError('E_USAGE', `the token from ${fromFlag !== undefined ? '--token' : 'MODELSCOPE_API_TOKEN'} contains spaces or characters that cannot be sent in a header`, {
      hint: 'copy the SDK token again from your ModelScope account settings',
    });
  }
  return token;
}

export interface RetryPolicy {
  /** Attempts per API request (default 3) and per file download (default 3). */
  attempts?: number;
  /** First back-off delay, doubled each retry (default 500 ms). `Retry-After` wins, capped at 30 s. */
  baseDelayMs?: number;
}

export interface ModelScopeClientOptions {
  /** Base URL as `resolveModelScopeEndpoint` returns it. */
  endpoint: string;
  token?: string | undefined;
  dispatcher?: Dispatcher | undefined;
  onRequest?: RequestLog | undefined;
  retry?: RetryPolicy;
  /** Send `Snapshot: True` on the listing, as modelscope 1.x `snapshot_download` does (default true). */
  snapshotHeader?: boolean;
  /** Dataset listing page size (default 200, as modelscope 1.x `snapshot_download` asks). */
  datasetPageSize?: number;
}

/** The ref a RepoRef resolved to, as the `.mv` file and the manifest want it. */
export interface ModelScopeResolved {
  revision: string;
  kind: 'branch' | 'tag';
  commit: string;
  createdAt: number | undefined;
}

export interface ModelScopeClient extends HubClient {
  /** The last resolution of this repo's revision (after `resolveCommit`). */
  resolved(repo: RepoRef): ModelScopeResolved | undefined;
  listFiles(repo: RepoRef, commit: string): Promise<ModelScopeRemoteFile[]>;
}

interface Resp {
  url: URL;
  status: number;
  headers: Dispatcher.ResponseData['headers'];
  body: Dispatcher.ResponseData['body'];
  authSent: boolean;
  done(bytes: number): void;
}

class RetryableError extends Error {
  constructor(readonly error: AirlockError, readonly retryAfterMs: number | undefined) {
    super(error.message);
  }
}

function retryAfterMs(headers: Resp['headers']): number | undefined {
  const value = headerValue(headers, 'retry-after');
  if (value === undefined || !/^\d+$/.test(value.trim())) return undefined;
  return Math.min(Number(value.trim()) * 1000, 30_000);
}

function repoPath(repo: RepoRef): string {
  // {owner}/{name} raw, as both SDKs build it (ids were validated: no characters that need encoding)
  return `api/v1/${repo.type === 'dataset' ? 'datasets' : 'models'}/${repo.id}`;
}

export function createModelScopeClient(options: ModelScopeClientOptions): ModelScopeClient {
  const endpoint = options.endpoint.replace(/\/+$/, '');
  const origin = new URL(endpoint).origin;
  const token = options.token === '' ? undefined : options.token;
  const dispatcher = options.dispatcher ?? defaultDispatcher();
  const attempts = Math.max(1, options.retry?.attempts ?? 3);
  const baseDelay = options.retry?.baseDelayMs ?? 500;
  /** `download`'s retries per Range request, in the shared downloader's terms (export passes its own). */
  const downloadPolicy: DownloadRetryPolicy = { attempts, baseMs: baseDelay, maxMs: baseDelay * 2 ** Math.max(0, attempts - 2), maxServerDelayMs: 30_000 };
  const snapshotHeader = options.snapshotHeader ?? true;
  const pageSize = Math.max(1, Math.floor(options.datasetPageSize ?? MODELSCOPE_DATASET_PAGE_SIZE));
  const resolvedRefs = new Map<string, ModelScopeResolved>();
  /** dataset listings by refKey, with the snapshot id they hash to */
  const datasetListings = new Map<string, { commit: string; files: ModelScopeRemoteFile[] }>();
  const refKey = (repo: RepoRef): string => `${repo.type}:${repo.id}@${repo.revision}`;

  const log = (record: Parameters<RequestLog>[0]): void => {
    try {
      options.onRequest?.(record);
    } catch {
      // a logging hook must not break a download
    }
  };

  function networkError(error: unknown, url: URL): AirlockError {
    if (error instanceof AirlockError) return error;
    const err = error as { code?: unknown; message?: unknown; cause?: { code?: unknown; message?: unknown } } | undefined;
    const code = typeof err?.code === 'string' ? err.code : typeof err?.cause?.code === 'string' ? err.cause.code : undefined;
    const detail = typeof err?.cause?.message === 'string' && err.cause.message !== '' ? err.cause.message : String(err?.message ?? error);
    return new AirlockError('E_NETWORK', redact(`network error talking to ${displayUrl(url)}: ${code !== undefined && !detail.includes(code) ? `${code} ` : ''}${detail}`, [token]), {
      subject: displayUrl(url),
      hint: `check the connection to ${url.origin} (and HTTPS_PROXY / NO_PROXY), or point --endpoint / MODELSCOPE_ENDPOINT at a reachable hub`,
      cause: error,
    });
  }

  /** One request, redirects followed by hand; credentials only on the endpoint origin, never after leaving it. */
  async function send(target: URL, extra: Record<string, string> = {}): Promise<Resp> {
    let url = target;
    let withAuth = token !== undefined && url.origin === origin;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = {
        'user-agent': MODELSCOPE_USER_AGENT,
        'x-request-id': randomUUID().replace(/-/g, ''),
        'accept-encoding': 'identity',
        ...extra,
      };
      if (withAuth && token !== undefined) {
        headers['authorization'] = `Bearer ${token}`;
        headers['cookie'] = `m_session_id=${token}`;
      }
      const started = performance.now();
      let response: Dispatcher.ResponseData;
      try {
        response = await request(url, { method: 'GET', headers, dispatcher });
      } catch (error) {
        log({ method: 'GET', url: displayUrl(url), status: 0, bytes: 0, ms: performance.now() - started });
        throw networkError(error, url);
      }
      let logged = false;
      const current = url;
      const resp: Resp = {
        url: current,
        status: response.statusCode,
        headers: response.headers,
        body: response.body,
        authSent: withAuth,
        done: (bytes) => {
          if (logged) return;
          logged = true;
          log({ method: 'GET', url: displayUrl(current), status: response.statusCode, bytes, ms: performance.now() - started });
        },
      };
      const location = headerValue(response.headers, 'location');
      if (!REDIRECT_STATUSES.has(response.statusCode) || location === undefined) return resp;
      await response.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
      resp.done(0);
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw new AirlockError('E_HUB_PROTOCOL', `${displayUrl(url)} redirected to an invalid URL`, { subject: displayUrl(url) });
      }
      if (next.protocol !== 'https:' && next.protocol !== 'http:') {
        throw new AirlockError('E_HUB_PROTOCOL', `${displayUrl(url)} redirected to a ${next.protocol} URL`, { subject: displayUrl(url) });
      }
      if (hop + 1 > MAX_REDIRECTS) {
        throw new AirlockError('E_HUB_PROTOCOL', `more than ${MAX_REDIRECTS} redirects starting from ${displayUrl(target)}`, { subject: displayUrl(target) });
      }
      withAuth = withAuth && next.origin === origin;
      url = next;
    }
  }

  async function readBody(resp: Resp, limit: number): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let total = 0;
    try {
      for await (const chunk of resp.body as AsyncIterable<Buffer>) {
        total += chunk.length;
        if (total > limit) {
          resp.body.destroy();
          throw new AirlockError('E_HUB_PROTOCOL', `response from ${displayUrl(resp.url)} is larger than ${limit} bytes`, { subject: displayUrl(resp.url) });
        }
        chunks.push(chunk);
      }
    } catch (error) {
      resp.done(total);
      throw networkError(error, resp.url);
    }
    resp.done(total);
    return Buffer.concat(chunks, total);
  }

  async function failure(resp: Resp, repo: RepoRef, stage: ModelScopeStage, path?: string): Promise<AirlockError> {
    let body = '';
    try {
      body = (await readBody(resp, MAX_ERROR_BODY_BYTES)).toString('utf8');
    } catch {
      // status and headers still say enough
    }
    return modelScopeErrorFromResponse({
      status: resp.status,
      headers: resp.headers,
      body,
      url: resp.url,
      repo,
      stage,
      ...(path !== undefined ? { path } : {}),
      tokenSent: resp.authSent,
      token,
    });
  }

  /** Runs `attempt` up to `attempts` times while it throws RetryableError, backing off in between. */
  async function withRetries<T>(attempt: (n: number) => Promise<T>): Promise<T> {
    for (let n = 1; ; n++) {
      try {
        return await attempt(n);
      } catch (error) {
        if (!(error instanceof RetryableError)) throw error;
        if (n >= attempts) throw error.error;
        await sleep(error.retryAfterMs ?? baseDelay * 2 ** (n - 1));
      }
    }
  }

  /** GET an `/api/v1` JSON envelope; returns `Data` of a successful one. */
  async function getData(url: URL, repo: RepoRef, stage: ModelScopeStage, extra: Record<string, string> = {}): Promise<{ data: unknown; url: URL }> {
    return withRetries(async () => {
      let resp: Resp;
      try {
        resp = await send(url, extra);
      } catch (error) {
        if (error instanceof AirlockError && error.code === 'E_NETWORK') throw new RetryableError(error, undefined);
        throw error;
      }
      if (resp.status !== 200) {
        const error = await failure(resp, repo, stage);
        if (RETRY_STATUSES.has(resp.status)) throw new RetryableError(error, retryAfterMs(resp.headers));
        throw error;
      }
      const bytes = await readBody(resp, MAX_JSON_BYTES);
      let json: unknown;
      try {
        json = JSON.parse(bytes.toString('utf8'));
      } catch {
        throw protocolError(displayUrl(resp.url), 'answer', ['not JSON']);
      }
      const envelope = readEnvelope(json);
      if (envelope === undefined) throw protocolError(displayUrl(resp.url), 'answer', ['not a {Code, Success, Data} envelope']);
      if (!envelopeOk(envelope)) {
        throw modelScopeErrorFromResponse({ status: 200, headers: resp.headers, body: bytes.toString('utf8'), url: resp.url, repo, stage, tokenSent: resp.authSent, token });
      }
      return { data: envelope.data, url: resp.url };
    });
  }

  function checkRepo(repo: RepoRef): void {
    if (repo.type !== 'model' && repo.type !== 'dataset') {
      throw new AirlockError('E_USAGE', `ModelScope has models and datasets, not ${String(repo.type)}s: ${repo.id}`, { subject: repo.id });
    }
    if (!repo.id.includes('/')) {
      throw new AirlockError('E_REPO_ID_INVALID', `a ModelScope repo id is owner/name, got ${JSON.stringify(repo.id)}`, {
        subject: repo.id,
        hint: 'e.g. Qwen/Qwen2.5-0.5B-Instruct',
      });
    }
  }

  /** Id lookup, then the paginated tree listing by hub id (§2.9); the whole listing, checked. */
  async function listDataset(repo: RepoRef): Promise<{ commit: string; files: ModelScopeRemoteFile[] }> {
    const info = await getData(new URL(`${endpoint}/${repoPath(repo)}`), repo, 'repo');
    const hubId = parseDatasetId(info.data, displayUrl(info.url));
    const entries: unknown[] = [];
    let lastUrl = info.url;
    const seenPaths = new Set<string>();
    for (let page = 1; ; page++) {
      if (page > MAX_DATASET_PAGES) {
        throw protocolError(displayUrl(lastUrl), 'dataset file listing', [`still not at its end after ${MAX_DATASET_PAGES} pages of ${pageSize}`]);
      }
      const query = new URLSearchParams({ Revision: repo.revision, Root: '/', Recursive: 'True', PageNumber: String(page), PageSize: String(pageSize) });
      const { data, url } = await getData(new URL(`${endpoint}/api/v1/datasets/${hubId}/repo/tree?${query.toString()}`), repo, 'files');
      lastUrl = url;
      const got = datasetPageEntries(data, displayUrl(url));
      if (got.length > pageSize) {
        throw protocolError(displayUrl(url), 'dataset file listing', [`page ${page} holds ${got.length} entries, more than the PageSize ${pageSize} asked for`]);
      }
      // a page repeating earlier entries (a server ignoring PageNumber) would never end: stop at once
      for (const entry of got) {
        const path = typeof entry === 'object' && entry !== null ? (entry as Record<string, unknown>)['Path'] : undefined;
        if (typeof path !== 'string') continue;
        if (seenPaths.has(path)) {
          throw protocolError(displayUrl(url), 'dataset file listing', [`${path} is listed twice (page ${page} repeats an earlier page; is PageNumber ignored?)`]);
        }
        seenPaths.add(path);
      }
      entries.push(...got);
      if (got.length < pageSize) break;
    }
    // one parse over every page: duplicates across pages (a server ignoring PageNumber) are refused
    const files = parseFileList({ Files: entries }, displayUrl(lastUrl), repo);
    return { commit: datasetSnapshotId(repo.revision, files), files };
  }

  async function resolve(repo: RepoRef): Promise<ModelScopeResolved> {
    checkRepo(repo);
    if (repo.type === 'dataset') {
      // the ref is passed through as the SDK does (default master, never tag-resolved); the listing is the pin
      const listing = await listDataset(repo);
      datasetListings.set(refKey(repo), listing);
      const resolved: ModelScopeResolved = { revision: repo.revision, kind: 'branch', commit: listing.commit, createdAt: undefined };
      resolvedRefs.set(refKey(repo), resolved);
      return resolved;
    }
    const url = new URL(`${endpoint}/${repoPath(repo)}/revisions`);
    const { data, url: answered } = await getData(url, repo, 'revisions');
    const revisions = parseRevisions(data, displayUrl(answered));
    const found: MsRevision | undefined = findRevision(revisions, repo.revision);
    if (found === undefined) {
      const names = revisions.map((r) => r.name);
      const shown = names.slice(0, 10).join(', ') + (names.length > 10 ? `, … (${names.length})` : '');
      throw new AirlockError('E_REVISION_NOT_FOUND', `revision ${JSON.stringify(repo.revision)} is not a branch or tag of ModelScope model ${repo.id}`, {
        subject: formatRepoRef(repo),
        hint: `${COMMIT_RE.test(repo.revision) ? 'ModelScope takes branch or tag names, not commit hashes (the modelscope library refuses them too); ' : ''}${names.length > 0 ? `the repo has: ${shown}` : 'the repo lists no branches or tags'}`,
      });
    }
    if (found.commitId === undefined || !COMMIT_RE.test(found.commitId)) {
      throw protocolError(displayUrl(answered), 'revision list', [`${found.kind} ${found.name} has no 40-hex CommitId (${JSON.stringify(found.commitId ?? null)})`]);
    }
    const resolved: ModelScopeResolved = { revision: found.name, kind: found.kind, commit: found.commitId, createdAt: found.createdAt };
    resolvedRefs.set(refKey(repo), resolved);
    return resolved;
  }

  /** The file's URL: models `repo?Revision=&FilePath=`; datasets as 1.x builds it (§2.9). */
  function fileUrl(repo: RepoRef, file: RemoteFile): URL {
    // datasets: Source=SDK first and View=False after FilePath, as 1.x builds it (§2.9)
    const query =
      repo.type === 'dataset'
        ? new URLSearchParams([['Source', 'SDK'], ['Revision', repo.revision], ['FilePath', file.path], ['View', 'False']])
        : new URLSearchParams({ Revision: repo.revision, FilePath: file.path });
    return new URL(`${endpoint}/${repoPath(repo)}/repo?${query.toString()}`);
  }

  /**
   * Opens a byte range of one file (the seam the shared resumable downloader, ../download.ts, pulls
   * from): an open `Range: bytes=N-` to resume, a closed one for a part of a split download, none for
   * the whole file (§2.7); the header rides along the redirect to the CDN. A 200 to a Range request is
   * handed back as it is (start 0), and the downloader starts over: bytes are only ever appended on a
   * 206 whose Content-Range starts where asked.
   */
  async function openRange(url: URL, repo: RepoRef, file: ModelScopeRemoteFile, range: ByteRange): Promise<FileBody | { kind: 'unsatisfiable'; size: number | undefined }> {
    const what = `${formatRepoRef(repo, false)}/${file.path}`;
    if (file.size === 0) {
      // zero-byte files are made locally, without a request (both SDKs do); the sha256 is still checked
      return { kind: 'body', start: 0, length: 0, body: Readable.from([]), cancel: () => undefined, done: () => undefined, networkError: (error) => networkError(error, url) };
    }
    const headers: Record<string, string> = { 'snapshot-identifier': randomUUID() };
    if (range.start > 0 || range.end < file.size) headers['range'] = range.end >= file.size ? `bytes=${range.start}-` : `bytes=${range.start}-${range.end - 1}`;
    const resp = await send(url, headers); // E_NETWORK: transient for the downloader's retries
    if (resp.status === 416) {
      const contentRange = headerValue(resp.headers, 'content-range');
      await resp.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
      resp.done(0);
      const total = /\/(\d+)\s*$/.exec(contentRange ?? '')?.[1];
      return { kind: 'unsatisfiable', size: total === undefined ? undefined : Number(total) };
    }
    if (resp.status !== 200 && resp.status !== 206) {
      const error = await failure(resp, repo, 'file', file.path);
      if (RETRY_STATUSES.has(resp.status)) markTransient(error, { status: resp.status, retryAfterMs: retryAfterMs(resp.headers) });
      throw error;
    }
    const abandon = (problem: string): never => {
      resp.body.destroy();
      resp.done(0);
      throw integrityError(what, problem);
    };
    const encoding = headerValue(resp.headers, 'content-encoding');
    if (encoding !== undefined && encoding.toLowerCase() !== 'identity') {
      abandon(`${displayUrl(resp.url)} sent it with content-encoding ${encoding} although identity was asked for`);
    }
    let start = 0;
    let length = file.size;
    if (resp.status === 206) {
      const m = /^bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/.exec(headerValue(resp.headers, 'content-range') ?? '');
      if (m === null) return abandon(`${displayUrl(resp.url)} answered 206 without a usable Content-Range`);
      if (m[3] !== '*' && Number(m[3]) !== file.size) abandon(`${displayUrl(resp.url)} now serves ${m[3]} bytes, the listing says ${file.size}`);
      start = Number(m[1]);
      length = Number(m[2]) - start + 1;
      if (start !== range.start || length <= 0) abandon(`${displayUrl(resp.url)} answered bytes ${m[1]}-${m[2]} to a request for ${range.start}-${range.end - 1}`);
    }
    const announced = headerValue(resp.headers, 'content-length');
    if (announced !== undefined && announced !== String(length)) {
      abandon(`${displayUrl(resp.url)} announced ${announced} bytes, the listing says ${resp.status === 206 ? `${length} remain` : file.size}`);
    }
    return {
      kind: 'body',
      start,
      length,
      body: resp.body as AsyncIterable<Buffer>,
      cancel: () => resp.body.destroy(),
      done: (bytes) => resp.done(bytes),
      networkError: (error) => networkError(error, resp.url),
    };
  }

  function rangeSourceOf(repo: RepoRef, commit: string, remote: RemoteFile): OpenRange {
    checkRepo(repo);
    if (!COMMIT_RE.test(commit)) throw new AirlockError('E_INTERNAL', `download needs a full commit hash, got ${JSON.stringify(commit)}`);
    const reason = unsafeRelativePathReason(remote.path);
    if (reason !== undefined) {
      throw new AirlockError('E_UNSAFE_PATH', `${formatRepoRef(repo, false)}: unsafe file path ${JSON.stringify(remote.path)} (${reason})`, { subject: remote.path });
    }
    if (remote.lfsSha256 === undefined) throw new AirlockError('E_INTERNAL', `${remote.path}: a ModelScope file needs its listed sha256`);
    const file = remote as ModelScopeRemoteFile;
    const url = fileUrl(repo, file);
    return (range) => openRange(url, repo, file, range);
  }

  return {
    kind: MODELSCOPE_KIND,
    endpoint,

    resolved(repo: RepoRef): ModelScopeResolved | undefined {
      return resolvedRefs.get(refKey(repo));
    },

    async resolveCommit(repo: RepoRef): Promise<string> {
      return (await resolve(repo)).commit;
    },

    async listFiles(repo: RepoRef, commit: string): Promise<ModelScopeRemoteFile[]> {
      checkRepo(repo);
      if (!COMMIT_RE.test(commit)) throw new AirlockError('E_INTERNAL', `listFiles needs a full commit hash, got ${JSON.stringify(commit)}`);
      if (repo.type === 'dataset') {
        let listing = datasetListings.get(refKey(repo));
        if (listing === undefined || listing.commit !== commit) {
          listing = await listDataset(repo);
          datasetListings.set(refKey(repo), listing);
        }
        if (listing.commit !== commit) {
          throw new AirlockError('E_REVISION_NOT_FOUND', `ModelScope dataset ${repo.id}@${repo.revision} changed: its listing no longer matches snapshot ${commit}`, {
            subject: formatRepoRef(repo),
            hint: 'the dataset was updated since this export started (an interrupted export is resumed at the snapshot it began with); start again with a fresh --work-dir',
          });
        }
        return listing.files;
      }
      // ModelScope lists and serves files by ref name only (1.x never sends a commit). A re-run pinned to
      // the commit of its first run (fetch.ts) did not resolve the ref: check it still points there, so a
      // newer snapshot is never bundled under the pinned commit (and the ref's CreatedAt is known again).
      const current = resolvedRefs.get(refKey(repo))?.commit === commit ? commit : (await resolve(repo)).commit;
      if (current !== commit) {
        throw new AirlockError('E_REVISION_NOT_FOUND', `ModelScope model ${repo.id}@${repo.revision} moved on: it is commit ${current} now, this export is pinned to ${commit}`, {
          subject: formatRepoRef(repo),
          hint: 'ModelScope serves files by branch or tag name only, so the pinned commit can no longer be fetched; delete the work dir (or pass a fresh --work-dir) to export the current commit',
        });
      }
      const query = new URLSearchParams({ Revision: repo.revision, Recursive: 'True' });
      const url = new URL(`${endpoint}/${repoPath(repo)}/repo/files?${query.toString()}`);
      const { data, url: answered } = await getData(url, repo, 'files', snapshotHeader ? { Snapshot: 'True' } : {});
      return parseFileList(data, displayUrl(answered), repo);
    },

    async download(repo: RepoRef, commit: string, remote: RemoteFile, destination: string, onProgress?: DownloadProgress): Promise<Digests> {
      // the same downloader as every other path (export uses `rangeSource` with its own policy)
      return downloadFile(rangeSourceOf(repo, commit, remote), `${formatRepoRef(repo, false)}/${remote.path}`, remote, destination, {
        retry: downloadPolicy,
        hashAttempts: attempts,
        onBytes: onProgress,
      });
    },

    rangeSource(repo: RepoRef, commit: string, file: RemoteFile): OpenRange {
      return rangeSourceOf(repo, commit, file);
    },

    // a file failing its SHA-256 check is fetched again from byte 0, 3 attempts in all (§2.8)
    hashAttempts: attempts,
  };
}
