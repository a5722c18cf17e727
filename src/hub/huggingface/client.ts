/**
 * The Hugging Face Hub (or an HF_ENDPOINT mirror) as a HubClient: the minimal per-file protocol of
 * spec hf-hub.md §2.9 — revision → commit, recursive tree at that commit, then per file a GET of
 * `resolve/{commit}/{path}` streamed to disk and hashed in the same pass, checked against the listing.
 */
import type { Dispatcher } from 'undici';
import { AirlockError } from '../../errors.js';
import { COMMIT_RE, unsafeRelativePathReason } from '../../fs/safe-path.js';
import type { Digests } from '../../integrity/digest.js';
import { downloadFile, integrityError, type ByteRange, type FileBody, type OpenRange } from '../download.js';
import { markTransient, NO_RETRY, parseRetryAfter, RETRYABLE_STATUSES, withRetries, type RetryEvent, type RetryPolicy } from '../retry.js';
import { displayUrl, headerValue, HubHttp, type HubResponse, type RequestLog } from '../http.js';
import { formatRepoRef } from '../repo-ref.js';
import type { DownloadProgress, HubClient, RemoteFile, RepoRef } from '../types.js';
import { hubErrorFromResponse } from './errors.js';
import { nextLink, parseRepoInfoCommit, parseTreePage } from './wire.js';

export interface HuggingFaceClientOptions {
  /** Base URL, as `resolveEndpoint` returns it (no trailing `/`). */
  endpoint: string;
  token?: string | undefined;
  /** Default: the shared undici pool of `defaultDispatcher()`. */
  dispatcher?: Dispatcher | undefined;
  onRequest?: RequestLog | undefined;
  /** For the API calls (revision, tree). Default: one attempt. File downloads take theirs per call. */
  retry?: RetryPolicy | undefined;
  onRetry?: ((event: RetryEvent) => void) | undefined;
  /** A remembered signed CDN URL was refused; the file is being resolved through the hub again. */
  onSignedUrlExpired?: ((event: { url: string; status: number; path: string }) => void) | undefined;
}

/** JSON answers (repo info with `blobs=true` of a huge repo, a tree page) stay well below this. */
const MAX_JSON_BYTES = 64 * 1024 * 1024;
const MAX_ERROR_BODY_BYTES = 64 * 1024;

function apiPrefix(repo: RepoRef): string {
  return `api/${repo.type}s/${repo.id}`;
}

function resolvePrefix(repo: RepoRef): string {
  return repo.type === 'dataset' ? `datasets/${repo.id}` : repo.id;
}

function encodeRepoPath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

export function createHuggingFaceClient(options: HuggingFaceClientOptions): HubClient {
  const endpoint = options.endpoint.replace(/\/+$/, '');
  const endpointUrl = new URL(endpoint);
  const token = options.token === '' ? undefined : options.token;
  const http = new HubHttp({ endpoint, token, dispatcher: options.dispatcher, onRequest: options.onRequest });
  const retryPolicy: RetryPolicy = options.retry ?? NO_RETRY;
  const onSignedUrlExpired = options.onSignedUrlExpired;

  /** Reads an error response and maps it. */
  async function failure(response: HubResponse, repo: RepoRef, path?: string): Promise<AirlockError> {
    let body = '';
    try {
      body = (await http.readBody(response, MAX_ERROR_BODY_BYTES)).toString('utf8');
    } catch {
      // an unreadable error body still leaves status and headers to go by
    }
    return hubErrorFromResponse({
      status: response.status,
      headers: response.headers,
      body,
      url: response.url,
      repo,
      ...(path !== undefined ? { path } : {}),
      tokenSent: response.authSent,
      token,
    });
  }

  async function getJson(url: URL, repo: RepoRef): Promise<{ json: unknown; response: HubResponse }> {
    const { bytes, response } = await withRetries({ policy: retryPolicy, what: `GET ${displayUrl(url)}`, onRetry: options.onRetry }, async () => {
      const res = await http.send(url);
      if (res.status !== 200) {
        const error = await failure(res, repo);
        if (RETRYABLE_STATUSES.has(res.status)) markTransient(error, { status: res.status, retryAfterMs: parseRetryAfter(res.headers) });
        throw error;
      }
      return { bytes: await http.readBody(res, MAX_JSON_BYTES), response: res };
    });
    try {
      return { json: JSON.parse(bytes.toString('utf8')) as unknown, response };
    } catch {
      throw new AirlockError('E_HUB_PROTOCOL', `${displayUrl(response.url)} did not answer with JSON`, {
        subject: displayUrl(response.url),
        hint: 'the endpoint does not answer like a Hugging Face Hub; check --endpoint / HF_ENDPOINT',
      });
    }
  }

  /**
   * A tree page's `next` link is followed verbatim (it carries every parameter and the cursor), but
   * always on the configured origin: a mirror may hand out links to huggingface.co, and the token
   * must not follow them there.
   */
  function pageUrl(link: string, current: URL): URL {
    let next: URL;
    try {
      next = new URL(link, current);
    } catch {
      throw new AirlockError('E_HUB_PROTOCOL', `invalid "next" link in the tree listing from ${displayUrl(current)}`, { subject: displayUrl(current) });
    }
    if (next.origin === endpointUrl.origin) return next;
    const prefix = endpointUrl.pathname.replace(/\/+$/, '');
    const path = prefix !== '' && !next.pathname.startsWith(`${prefix}/`) ? `${prefix}${next.pathname}` : next.pathname;
    return new URL(`${endpointUrl.origin}${path}${next.search}`);
  }

  /**
   * The signed download URL (the CDN `Location` of an LFS file) is remembered for one file's download
   * (`signed`), so retries and the parts of a split download go straight to the CDN. When it starts
   * answering 403 (the signature expired: real ones last about an hour) or 404/410, it is forgotten and
   * the file is resolved through the hub again — the download then continues where it was.
   */
  interface SignedUrl {
    url: URL | undefined;
  }

  function rangeHeaders(range: ByteRange, size: number): Record<string, string> {
    if (range.start === 0 && range.end >= size) return {};
    return { range: range.end >= size ? `bytes=${range.start}-` : `bytes=${range.start}-${range.end - 1}` };
  }

  /** Opens a byte range of one file: the seam the resumable downloader (../download.ts) pulls from. */
  async function openRange(resolveUrl: URL, signed: SignedUrl, repo: RepoRef, file: RemoteFile, range: ByteRange): Promise<FileBody | { kind: 'unsatisfiable'; size: number | undefined }> {
    const what = `${formatRepoRef(repo, false)}/${file.path}`;
    const headers = rangeHeaders(range, file.size);
    let response: HubResponse | undefined;
    const cached = signed.url;
    if (cached !== undefined) {
      response = await http.send(cached, { headers });
      if (response.status === 403 || response.status === 404 || response.status === 410) {
        await response.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
        response.done(0);
        signed.url = undefined;
        onSignedUrlExpired?.({ url: displayUrl(cached), status: response.status, path: file.path });
        response = undefined;
      }
    }
    response ??= await http.send(resolveUrl, { headers });
    if (response.url.origin !== endpointUrl.origin && response.status >= 200 && response.status < 300) signed.url = response.url;

    if (response.status === 416) {
      const contentRange = headerValue(response.headers, 'content-range');
      await response.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
      response.done(0);
      const total = /\/(\d+)\s*$/.exec(contentRange ?? '')?.[1];
      return { kind: 'unsatisfiable', size: total === undefined ? undefined : Number(total) };
    }
    if (response.status !== 200 && response.status !== 206) {
      if (response.status >= 200 && response.status < 300) {
        await response.body.dump().catch(() => undefined);
        response.done(0);
        throw new AirlockError('E_HUB_PROTOCOL', `${what}: unexpected HTTP ${response.status} from ${displayUrl(response.url)}`, { subject: what });
      }
      if (response.url.origin !== endpointUrl.origin && (response.status === 403 || response.status === 401)) {
        // a freshly issued signed URL refused: not a token problem (no token goes to the CDN)
        await response.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
        response.done(0);
        throw new AirlockError('E_FORBIDDEN', `${what}: the download host refused the signed URL the hub had just issued (HTTP ${response.status} from ${displayUrl(response.url)})`, {
          subject: what,
          hint: `signed URLs are time-limited: check this machine's clock, and any proxy between you and ${response.url.host}`,
        });
      }
      const error = await failure(response, repo, file.path);
      if (RETRYABLE_STATUSES.has(response.status)) markTransient(error, { status: response.status, retryAfterMs: parseRetryAfter(response.headers) });
      throw error;
    }
    const abandon = (problem: string): never => {
      response.body.destroy();
      response.done(0);
      throw integrityError(what, problem);
    };
    const encoding = headerValue(response.headers, 'content-encoding');
    if (encoding !== undefined && encoding.toLowerCase() !== 'identity') {
      abandon(`${displayUrl(response.url)} sent it with content-encoding ${encoding} although identity was asked for`);
    }
    const announced = headerValue(response.headers, 'content-length');
    let start = 0;
    let length = file.size;
    if (response.status === 206) {
      const m = /^bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/.exec(headerValue(response.headers, 'content-range') ?? '');
      if (m === null) return abandon(`${displayUrl(response.url)} answered 206 without a usable Content-Range`);
      if (m[3] !== '*' && Number(m[3]) !== file.size) abandon(`${displayUrl(response.url)} now serves ${m[3]} bytes, the listing says ${file.size}`);
      start = Number(m[1]);
      length = Number(m[2]) - start + 1;
      if (start !== range.start || length <= 0) abandon(`${displayUrl(response.url)} answered bytes ${m[1]}-${m[2]} to a request for ${range.start}-${range.end - 1}`);
    }
    if (announced !== undefined && announced !== String(length)) {
      abandon(`${displayUrl(response.url)} announced ${announced} bytes, the listing says ${response.status === 206 ? `${length} remain` : file.size}`);
    }
    const final = response;
    return {
      kind: 'body',
      start,
      length,
      body: final.body as AsyncIterable<Buffer>,
      cancel: () => final.body.destroy(),
      done: (bytes) => final.done(bytes),
      networkError: (error) => http.networkError(error, final.url),
    };
  }

  function rangeSourceOf(repo: RepoRef, commit: string, file: RemoteFile): OpenRange {
    if (!COMMIT_RE.test(commit)) throw new AirlockError('E_INTERNAL', `download needs a full commit hash, got ${JSON.stringify(commit)}`);
    const reason = unsafeRelativePathReason(file.path);
    if (reason !== undefined) {
      throw new AirlockError('E_UNSAFE_PATH', `${formatRepoRef(repo, false)}: unsafe file path ${JSON.stringify(file.path)} (${reason})`, {
        subject: file.path,
      });
    }
    const url = new URL(`${endpoint}/${resolvePrefix(repo)}/resolve/${commit}/${encodeRepoPath(file.path)}`);
    const signed: SignedUrl = { url: undefined };
    return (range) => openRange(url, signed, repo, file, range);
  }

  return {
    kind: 'huggingface',
    endpoint,

    async resolveCommit(repo: RepoRef): Promise<string> {
      const url = new URL(`${endpoint}/${apiPrefix(repo)}/revision/${encodeURIComponent(repo.revision)}?blobs=true`);
      const { json, response } = await getJson(url, repo);
      const commit = parseRepoInfoCommit(json, displayUrl(response.url));
      if (COMMIT_RE.test(repo.revision) && commit !== repo.revision) {
        throw new AirlockError('E_HUB_PROTOCOL', `asked ${displayUrl(response.url)} for commit ${repo.revision}, it answered ${commit}`, {
          subject: formatRepoRef(repo),
          hint: 'the endpoint does not answer like a Hugging Face Hub; check --endpoint / HF_ENDPOINT',
        });
      }
      return commit;
    },

    async listFiles(repo: RepoRef, commit: string): Promise<RemoteFile[]> {
      if (!COMMIT_RE.test(commit)) throw new AirlockError('E_INTERNAL', `listFiles needs a full commit hash, got ${JSON.stringify(commit)}`);
      let url: URL | undefined = new URL(`${endpoint}/${apiPrefix(repo)}/tree/${commit}?recursive=true&expand=false`);
      const files: RemoteFile[] = [];
      const seenPaths = new Set<string>();
      const seenPages = new Set<string>();
      while (url !== undefined) {
        if (seenPages.has(url.href)) {
          throw new AirlockError('E_HUB_PROTOCOL', `the tree listing of ${formatRepoRef(repo, false)} loops (page ${displayUrl(url)} came twice)`, {
            subject: displayUrl(url),
          });
        }
        seenPages.add(url.href);
        const { json, response } = await getJson(url, repo);
        files.push(...parseTreePage(json, displayUrl(response.url), repo, seenPaths));
        const link = nextLink(headerValue(response.headers, 'link'));
        url = link === undefined ? undefined : pageUrl(link, response.url);
      }
      return files;
    },

    async download(repo: RepoRef, commit: string, file: RemoteFile, destination: string, onProgress?: DownloadProgress): Promise<Digests> {
      const what = `${formatRepoRef(repo, false)}/${file.path}`;
      const source = rangeSourceOf(repo, commit, file);
      return downloadFile(source, what, file, destination, { onBytes: onProgress });
    },

    rangeSource(repo: RepoRef, commit: string, file: RemoteFile): OpenRange {
      return rangeSourceOf(repo, commit, file);
    },
  };
}
