/**
 * The Hugging Face Hub (or an HF_ENDPOINT mirror) as a HubClient: the minimal per-file protocol of
 * spec hf-hub.md §2.9 — revision → commit, recursive tree at that commit, then per file a GET of
 * `resolve/{commit}/{path}` streamed to disk and hashed in the same pass, checked against the listing.
 */
import { constants, type FileHandle, open, rm } from 'node:fs/promises';
import type { Dispatcher } from 'undici';
import { AirlockError, fsError } from '../../errors.js';
import { COMMIT_RE, unsafeRelativePathReason } from '../../fs/safe-path.js';
import { Digester, type Digests } from '../../integrity/digest.js';
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
}

/** JSON answers (repo info with `blobs=true` of a huge repo, a tree page) stay well below this. */
const MAX_JSON_BYTES = 64 * 1024 * 1024;
const MAX_ERROR_BODY_BYTES = 64 * 1024;
/** Large writes: the file system and the hash both prefer ~1 MiB (specs/node-and-openpgp.md). */
const WRITE_CHUNK_BYTES = 1024 * 1024;

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
    const response = await http.send(url);
    if (response.status !== 200) throw await failure(response, repo);
    const bytes = await http.readBody(response, MAX_JSON_BYTES);
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
   * One attempt at one file: GET → stream into `destination` while hashing → check size and hash.
   * The single place where bytes arrive, so retries with `Range` resume will wrap around this.
   */
  async function getFile(url: URL, repo: RepoRef, file: RemoteFile, destination: string, onProgress?: DownloadProgress): Promise<Digests> {
    const what = `${formatRepoRef(repo, false)}/${file.path}`;
    const integrity = (message: string): AirlockError =>
      new AirlockError('E_DOWNLOAD_INTEGRITY', `${what}: ${message}`, {
        subject: what,
        hint: 'the file changed on the way or the hub/mirror serves other bytes than it lists; nothing was kept — run the export again, and report it to the mirror operator if it persists',
      });

    const response = await http.send(url);
    if (response.status !== 200) {
      if (response.status >= 200 && response.status < 300) {
        await response.body.dump().catch(() => undefined);
        response.done(0);
        throw new AirlockError('E_HUB_PROTOCOL', `${what}: unexpected HTTP ${response.status} from ${displayUrl(response.url)}`, { subject: what });
      }
      throw await failure(response, repo, file.path);
    }
    const encoding = headerValue(response.headers, 'content-encoding');
    const announced = headerValue(response.headers, 'content-length');
    const problem =
      encoding !== undefined && encoding.toLowerCase() !== 'identity'
        ? `${displayUrl(response.url)} sent it with content-encoding ${encoding} although identity was asked for`
        : announced !== undefined && announced !== String(file.size)
          ? `${displayUrl(response.url)} announced ${announced} bytes, the listing says ${file.size}`
          : undefined;
    if (problem !== undefined) {
      response.body.destroy();
      response.done(0);
      throw integrity(problem);
    }

    const digester = new Digester(file.lfsSha256 === undefined ? file.size : undefined);
    let handle: FileHandle | undefined;
    let received = 0;
    try {
      try {
        // O_NOFOLLOW: never write through a link planted at the destination
        handle = await open(destination, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | (constants.O_NOFOLLOW ?? 0), 0o666);
      } catch (error) {
        throw fsError(error, 'create', destination);
      }
      let batch: Buffer[] = [];
      let batched = 0;
      // One write in flight while the next batch fills. Its failure is kept (not left as an unhandled
      // rejection while we wait for the network) and thrown at the next flush.
      let writing: Promise<void> = Promise.resolve();
      let writeError: unknown;
      const flush = async (): Promise<void> => {
        const data = Buffer.concat(batch, batched);
        batch = [];
        batched = 0;
        await writing;
        if (writeError !== undefined) throw fsError(writeError, 'write', destination);
        writing = (handle as FileHandle).write(data).then(
          () => undefined,
          (error: unknown) => {
            writeError = error;
          },
        );
      };
      const chunks = (response.body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
      try {
        for (;;) {
          let step: IteratorResult<Buffer>;
          try {
            step = await chunks.next();
          } catch (error) {
            // only a failure of the body itself is a network error; ours (disk, hooks) keep their own
            throw http.networkError(error, response.url);
          }
          if (step.done === true) break;
          const chunk = step.value;
          received += chunk.length;
          if (received > file.size) throw integrity(`the server sent more than the ${file.size} bytes the listing says`);
          digester.update(chunk);
          batch.push(chunk);
          batched += chunk.length;
          if (batched >= WRITE_CHUNK_BYTES) await flush();
          onProgress?.(chunk.length);
        }
      } catch (error) {
        response.body.destroy();
        throw error;
      } finally {
        response.done(received);
      }
      if (batched > 0) await flush();
      await writing;
      if (writeError !== undefined) throw fsError(writeError, 'write', destination);
      await handle.close().catch((error: unknown) => {
        throw fsError(error, 'close', destination);
      });
      handle = undefined;

      const digests = digester.digest();
      if (digests.size !== file.size) throw integrity(`expected ${file.size} bytes, got ${digests.size}`);
      if (file.lfsSha256 !== undefined) {
        if (digests.sha256 !== file.lfsSha256) throw integrity(`sha256 mismatch: expected ${file.lfsSha256}, got ${digests.sha256}`);
      } else if (digests.gitSha1 !== file.blobId) {
        throw integrity(`git blob id mismatch: expected ${file.blobId}, got ${digests.gitSha1 ?? 'none'}`);
      }
      return digests;
    } catch (error) {
      // Nothing unverified survives: close and delete what was written.
      await handle?.close().catch(() => undefined);
      await rm(destination, { force: true }).catch(() => undefined);
      throw error;
    }
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
      if (!COMMIT_RE.test(commit)) throw new AirlockError('E_INTERNAL', `download needs a full commit hash, got ${JSON.stringify(commit)}`);
      const reason = unsafeRelativePathReason(file.path);
      if (reason !== undefined) {
        throw new AirlockError('E_UNSAFE_PATH', `${formatRepoRef(repo, false)}: unsafe file path ${JSON.stringify(file.path)} (${reason})`, {
          subject: file.path,
        });
      }
      const url = new URL(`${endpoint}/${resolvePrefix(repo)}/resolve/${commit}/${encodeRepoPath(file.path)}`);
      return getFile(url, repo, file, destination, onProgress);
    },
  };
}
