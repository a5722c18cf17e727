/**
 * A client for the OCI distribution API (opencontainers/distribution-spec v1.1), on undici like the hub
 * clients. What it speaks (see docs/oci.md and the spec notes):
 *
 * - auth: anonymous, Basic (`WWW-Authenticate: Basic`), and the Bearer token challenge (`GET realm?
 *   service=…&scope=…` with Basic credentials when we have them, or — with an identity token, docker's
 *   OAuth2 refresh token — `POST realm` with `grant_type=refresh_token`; tokens cached per scope until they
 *   expire, 60 s when the server does not say). A request answered 401 is sent once more with fresh
 *   credentials; a body is always re-created from its factory, never replayed from a consumed stream.
 * - redirects: GET/HEAD only (blob reads are often sent to object storage); the Authorization header is
 *   never sent to another origin, and once a hop left the registry's origin it is dropped for good.
 * - errors: the distribution `{"errors":[{code,message}]}` body is read (capped) and named in the message;
 *   5xx/408/429 and network failures are transient (the callers retry per blob with backoff).
 *
 * Credentials never appear in messages: only URLs without their query are shown.
 *
 * Blob uploads (PUT, PATCH) go through node:http instead: their body is read piecewise into two reused
 * buffers, and a buffer is refilled only when the socket has flushed it — the write callback, which
 * undici's request API does not give. Multi-GB layers then allocate nothing per chunk (fresh 1 MiB
 * read buffers, freed only when the GC gets to them, cost publish tens of MiB of RSS).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { rootCertificates } from 'node:tls';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { Agent, request, type Dispatcher } from 'undici';
import { AirlockError, redact } from '../errors.js';
import { displayUrl, headerValue, USER_AGENT } from '../hub/http.js';
import { markPermanent, markTransient, parseRetryAfter, RETRYABLE_STATUSES } from '../hub/retry.js';
import type { Credentials } from './credentials.js';
import { MAX_OCI_MANIFEST_BYTES, OCI_MANIFEST_TYPE } from './modelpack.js';

const TLS_TRUST_CODES = /^(DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|CERT_[A-Z_]+|ERR_TLS_CERT_ALTNAME_INVALID)$/;
const MAX_ERROR_BODY = 64 * 1024;
const MAX_REDIRECTS = 10;
/** How long giving back an unused upload session may take (best effort, on the way out of a failure). */
const CANCEL_WAIT_MS = 5_000;
/** The OAuth2 client id sent with a refresh-token grant (distribution requires one; docker sends "docker"). */
const OAUTH_CLIENT_ID = 'model-airlock';

export interface RegistryClientOptions {
  /** `host[:port]` */
  registry: string;
  /** Speak http:// instead of https:// (only when the user said `--plain-http`). */
  plainHttp?: boolean;
  /** PEM file of extra CAs to trust (besides the system ones and NODE_EXTRA_CA_CERTS). */
  caFile?: string | undefined;
  credentials?: Credentials | undefined;
  dispatcher?: Dispatcher | undefined;
  /** Timeout for headers and between body chunks (long: a registry digests a large blob before it answers). */
  timeoutMs?: number;
}

/** Reads `length` bytes of a blob at `position` into `into` (all of them, or throws). */
export type BlobReader = (position: number, into: Buffer, length: number) => Promise<void>;

const UPLOAD_CHUNK = 1024 * 1024;
/** An upload body is read and sent in pieces of this size. */
export const UPLOAD_PIECE_BYTES = UPLOAD_CHUNK;
/** Upload buffers kept for the next blobs (4 concurrent uploads × 2). */
const spareUploadBuffers: Buffer[] = [];
const takeUploadBuffer = (): Buffer => spareUploadBuffers.pop() ?? Buffer.allocUnsafeSlow(UPLOAD_CHUNK);
const giveUploadBuffer = (buffer: Buffer): void => {
  if (spareUploadBuffers.length < 8) spareUploadBuffers.push(buffer);
};

/** What `openUpload` found: the blob is in the repository already, or the upload session for it. */
export type OpenedUpload = { present: true } | { present: false; session: URL };

type Challenge = { kind: 'basic' } | { kind: 'bearer'; realm: string; service: string | undefined };

export interface RegistryResponse {
  status: number;
  headers: Dispatcher.ResponseData['headers'];
  body: Dispatcher.ResponseData['body'];
  url: URL;
}

interface Send {
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';
  /** A path (`/v2/…`) or an absolute URL (upload locations). */
  url: string;
  headers?: Record<string, string>;
  /** Re-created for every attempt. */
  body?: () => Readable | Buffer;
  /**
   * A large body, read piecewise into reused buffers: bytes [start, end) of a blob (uploads). With
   * `hold`, the last piece is sent only once the promise it returns (called when that piece is next)
   * resolves; a rejection ends the request unfinished.
   */
  source?: { read: BlobReader; start: number; end: number; hold?: (() => Promise<void>) | undefined };
  /** `repository:<name>:<actions>` scopes this request needs (Bearer tokens are per scope). */
  scopes: string[];
  /** Ends the request (not for `source` requests). */
  signal?: AbortSignal;
}

function parseChallenge(header: string | undefined): Challenge | undefined {
  if (header === undefined) return undefined;
  const m = /^\s*(\w+)\s*(.*)$/s.exec(header);
  if (m === null) return undefined;
  const scheme = m[1]!.toLowerCase();
  const params = new Map<string, string>();
  for (const p of m[2]!.matchAll(/(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g)) params.set(p[1]!.toLowerCase(), p[2] ?? p[3] ?? '');
  if (scheme === 'basic') return { kind: 'basic' };
  if (scheme === 'bearer' && params.get('realm')) return { kind: 'bearer', realm: params.get('realm')!, service: params.get('service') };
  return undefined;
}

async function readCapped(body: Readable, cap: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let have = 0;
  for await (const chunk of body) {
    have += (chunk as Buffer).byteLength;
    if (have > cap) {
      body.destroy();
      throw new Error(`more than ${cap} bytes`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

export class RegistryClient {
  readonly registry: string;
  readonly base: string;
  readonly #credentials: Credentials | undefined;
  readonly #dispatcher: Dispatcher;
  readonly #plainHttp: boolean;
  readonly #ca: string[] | undefined;
  readonly #timeoutMs: number;
  #nodeAgent: HttpAgent | HttpsAgent | undefined;
  #challenge: Challenge | undefined;
  readonly #tokens = new Map<string, { token: string; expires: number }>();
  /** The identity token, once the token service rotated it. */
  #refreshToken: string | undefined;

  constructor(options: RegistryClientOptions) {
    this.registry = options.registry;
    this.#plainHttp = options.plainHttp === true;
    this.base = `${this.#plainHttp ? 'http' : 'https'}://${options.registry}`;
    this.#credentials = options.credentials;
    this.#refreshToken = options.credentials?.identityToken;
    const timeout = options.timeoutMs ?? 10 * 60_000;
    let ca: string[] | undefined;
    if (options.caFile !== undefined) {
      let pem: string;
      try {
        pem = readFileSync(options.caFile, 'utf8');
      } catch (cause) {
        throw new AirlockError('E_USAGE', `cannot read --ca-file ${options.caFile}`, { subject: options.caFile, cause });
      }
      ca = [...rootCertificates, pem];
    }
    this.#ca = ca;
    this.#timeoutMs = timeout;
    this.#dispatcher =
      options.dispatcher ?? new Agent({ connectTimeout: 30_000, headersTimeout: timeout, bodyTimeout: timeout, keepAliveTimeout: 10_000, ...(ca === undefined ? {} : { connect: { ca } }) });
  }

  async close(): Promise<void> {
    this.#nodeAgent?.destroy();
    await this.#dispatcher.close().catch(() => undefined);
  }

  #networkError(error: unknown, method: string, url: URL): AirlockError {
    const err = error as { code?: unknown; message?: unknown; cause?: { code?: unknown; message?: unknown } } | undefined;
    const code = typeof err?.code === 'string' ? err.code : typeof err?.cause?.code === 'string' ? err.cause.code : undefined;
    const detail = typeof err?.cause?.message === 'string' && err.cause.message !== '' ? err.cause.message : String(err?.message ?? error);
    const message = `${method} ${displayUrl(url)}: ${detail}${code === undefined ? '' : ` (${code})`}`;
    if (code !== undefined && TLS_TRUST_CODES.test(code)) {
      return markPermanent(
        new AirlockError('E_NETWORK', message, {
          subject: displayUrl(url),
          hint: "the registry's certificate is not trusted: pass its CA with --ca-file (or NODE_EXTRA_CA_CERTS); use --plain-http only for a registry that speaks plain HTTP",
          cause: error,
        }),
      );
    }
    if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number/i.test(detail)) {
      // OpenSSL's own text is a multi-line record dump: say what it means in one line
      return markPermanent(
        new AirlockError('E_NETWORK', `${method} ${displayUrl(url)}: the TLS handshake failed: the server answered in plain HTTP`, {
          subject: displayUrl(url),
          hint: 'the registry speaks plain HTTP: add --plain-http (only on a network you trust)',
          cause: error,
        }),
      );
    }
    return markTransient(new AirlockError('E_NETWORK', message, { subject: displayUrl(url), hint: 'check that the registry is up and reachable', cause: error }), { status: 0 });
  }

  async #token(scopes: string[], fresh: boolean): Promise<string | undefined> {
    const challenge = this.#challenge;
    if (challenge?.kind !== 'bearer') return undefined;
    const key = scopes.join(' ');
    const cached = this.#tokens.get(key);
    if (!fresh && cached !== undefined && cached.expires > Date.now()) return cached.token;
    let realm: URL;
    try {
      realm = new URL(challenge.realm);
    } catch {
      throw new AirlockError('E_HUB_PROTOCOL', `the registry named a token realm that is not a URL: ${JSON.stringify(challenge.realm)}`, { subject: this.base });
    }
    if (realm.protocol !== 'https:' && !(realm.protocol === 'http:' && this.#plainHttp)) {
      throw new AirlockError('E_HUB_PROTOCOL', `the registry's token realm ${displayUrl(realm)} is not https; credentials are not sent there`, {
        subject: displayUrl(realm),
        hint: 'configure the token service on https (or, on a trusted lab network, use --plain-http)',
      });
    }
    // an identity token (an OAuth2 refresh token) is traded by POST, as docker does; else GET with Basic
    const refresh = this.#refreshToken;
    const method = refresh === undefined ? 'GET' : 'POST';
    const headers: Record<string, string> = { 'user-agent': USER_AGENT };
    let form: string | undefined;
    if (refresh === undefined) {
      if (challenge.service !== undefined) realm.searchParams.set('service', challenge.service);
      for (const scope of scopes) realm.searchParams.append('scope', scope);
      if (this.#credentials !== undefined) headers['authorization'] = this.#basic();
    } else {
      const params = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refresh, client_id: OAUTH_CLIENT_ID, scope: scopes.join(' ') });
      if (challenge.service !== undefined) params.set('service', challenge.service);
      form = params.toString();
      headers['content-type'] = 'application/x-www-form-urlencoded';
    }
    let response: Dispatcher.ResponseData;
    try {
      response = await request(realm, { method, headers, ...(form === undefined ? {} : { body: form }), dispatcher: this.#dispatcher });
    } catch (error) {
      throw this.#networkError(error, method, realm);
    }
    const body = await readCapped(response.body, MAX_ERROR_BODY).catch(() => Buffer.alloc(0));
    // OAuth2 answers a refused refresh token with 400 invalid_grant
    if (response.statusCode === 401 || response.statusCode === 403 || (refresh !== undefined && response.statusCode === 400)) throw this.#authError(displayUrl(realm), response.statusCode);
    if (response.statusCode !== 200) {
      throw markTransient(new AirlockError('E_HTTP', `${method} ${displayUrl(realm)} (token): HTTP ${response.statusCode}`, { subject: displayUrl(realm) }), { status: response.statusCode });
    }
    let parsed: { token?: unknown; access_token?: unknown; expires_in?: unknown; refresh_token?: unknown };
    try {
      parsed = JSON.parse(body.toString('utf8')) as typeof parsed;
    } catch {
      throw new AirlockError('E_HUB_PROTOCOL', `${method} ${displayUrl(realm)}: the token service answered no JSON`, { subject: displayUrl(realm) });
    }
    const token = typeof parsed.token === 'string' ? parsed.token : typeof parsed.access_token === 'string' ? parsed.access_token : undefined;
    if (token === undefined || token === '') throw new AirlockError('E_HUB_PROTOCOL', `${method} ${displayUrl(realm)}: the token service answered no token`, { subject: displayUrl(realm) });
    // a rotated refresh token replaces the old one for the rest of this run (it is never written back)
    if (refresh !== undefined && typeof parsed.refresh_token === 'string' && parsed.refresh_token !== '') this.#refreshToken = parsed.refresh_token;
    const seconds = typeof parsed.expires_in === 'number' && parsed.expires_in > 0 ? parsed.expires_in : 60;
    // refreshed a little early: a long push asks again between blobs instead of failing half-way
    this.#tokens.set(key, { token, expires: Date.now() + Math.max(1, seconds - 10) * 1000 });
    return token;
  }

  #basic(): string {
    const c = this.#credentials!;
    return `Basic ${Buffer.from(`${c.username}:${c.password}`, 'utf8').toString('base64')}`;
  }

  #authError(url: string, status: number): AirlockError {
    const who = this.#credentials === undefined ? 'without credentials' : `with the credentials from ${this.#credentials.source}`;
    return new AirlockError(status === 403 ? 'E_FORBIDDEN' : 'E_AUTH', `${url}: ${status === 403 ? 'access denied' : 'authentication failed'} (HTTP ${status}) ${who}`, {
      subject: url,
      hint:
        this.#credentials === undefined
          ? `log in: put credentials for ${this.registry} in ~/.docker/config.json (docker/podman login) or $REGISTRY_AUTH_FILE, or pass --registry-user NAME --registry-password-stdin`
          : this.#credentials.identityToken !== undefined
            ? `the identity token for ${this.registry} was refused (expired or revoked?): log in again (docker login, or the credential helper's own login)`
            : `check the user name and password for ${this.registry} (and that this user may push/pull that repository)`,
    });
  }

  async #authorization(scopes: string[], fresh: boolean): Promise<string | undefined> {
    const challenge = this.#challenge;
    if (challenge === undefined) return undefined;
    if (challenge.kind === 'basic') {
      if (this.#credentials?.identityToken !== undefined) {
        throw new AirlockError('E_AUTH', `${this.base} asks for a password (Basic auth), but the credentials from ${this.#credentials.source} are an identity token`, {
          subject: this.base,
          hint: 'an identity token works only with a registry that uses token auth (WWW-Authenticate: Bearer); log in with a user name and password (docker login / podman login), or pass --registry-user NAME --registry-password-stdin',
        });
      }
      return this.#credentials === undefined ? undefined : this.#basic();
    }
    const token = await this.#token(scopes, fresh);
    return token === undefined ? undefined : `Bearer ${token}`;
  }

  /** One request with auth (and, for GET/HEAD, redirects). Non-2xx answers are returned, not thrown. */
  async send(req: Send): Promise<RegistryResponse> {
    let retriedAuth = false;
    for (;;) {
      const auth = await this.#authorization(req.scopes, retriedAuth);
      const response = await this.#once(req, auth);
      if (response.status !== 401 || retriedAuth) return response;
      const challenge = parseChallenge(headerValue(response.headers, 'www-authenticate'));
      await drop(response.body);
      if (challenge === undefined) return { ...response, body: emptyBody() };
      if (challenge.kind === 'basic' && this.#credentials === undefined) throw this.#authError(displayUrl(response.url), 401);
      this.#challenge = challenge;
      retriedAuth = true;
    }
  }

  async #once(req: Send, auth: string | undefined): Promise<RegistryResponse> {
    let url = new URL(req.url, this.base);
    const origin = url.origin;
    let sendAuth = auth !== undefined;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { 'user-agent': USER_AGENT, ...req.headers };
      // the registry's origin only, and never again once a redirect left it
      if (sendAuth && url.origin === origin) headers['authorization'] = auth!;
      else sendAuth = false;
      if (req.source !== undefined) return this.#streamed(req, req.source, url, headers);
      let response: Dispatcher.ResponseData;
      try {
        response = await request(url, {
          method: req.method,
          headers,
          ...(req.body === undefined ? {} : { body: req.body() }),
          ...(req.signal === undefined ? {} : { signal: req.signal }),
          // undici closes the connection after every HEAD (for servers that send a body with it); a
          // registry answers HEAD properly, and a publish HEADs every blob: one connection, not one each
          ...(req.method === 'HEAD' ? { reset: false } : {}),
          dispatcher: this.#dispatcher,
        });
      } catch (error) {
        throw this.#networkError(error, req.method, url);
      }
      const location = headerValue(response.headers, 'location');
      if ((req.method === 'GET' || req.method === 'HEAD') && [301, 302, 303, 307, 308].includes(response.statusCode) && location !== undefined) {
        await drop(response.body);
        if (hop >= MAX_REDIRECTS) throw new AirlockError('E_HTTP', `${req.method} ${displayUrl(url)}: more than ${MAX_REDIRECTS} redirects`, { subject: displayUrl(url) });
        const next = new URL(location, url);
        if (next.protocol !== 'https:' && !(next.protocol === 'http:' && this.#plainHttp)) {
          throw new AirlockError('E_HTTP', `${req.method} ${displayUrl(url)} redirects to ${displayUrl(next)}, which is not https`, { subject: displayUrl(next) });
        }
        if (next.origin !== origin) sendAuth = false;
        url = next;
        continue;
      }
      return { status: response.statusCode, headers: response.headers, body: response.body, url };
    }
  }

  /**
   * One request whose body is `source`, read into two reused buffers: one is being filled from the disk
   * while the socket sends the other, and each is refilled only after its write callback (the socket
   * flushed it). An early answer (a 401, 413 …) stops the body; that connection is then not reused.
   */
  #streamed(req: Send, source: NonNullable<Send['source']>, url: URL, headers: Record<string, string>): Promise<RegistryResponse> {
    const tls = url.protocol === 'https:';
    this.#nodeAgent ??= tls ? new HttpsAgent({ keepAlive: true, ...(this.#ca === undefined ? {} : { ca: this.#ca }) }) : new HttpAgent({ keepAlive: true });
    const outgoing = (tls ? httpsRequest : httpRequest)(url, { method: req.method, headers, agent: this.#nodeAgent, timeout: this.#timeoutMs });
    let answered = false;
    let ended = false;
    const response = new Promise<RegistryResponse>((resolve, reject) => {
      outgoing.on('error', (error) => reject(this.#networkError(error, req.method, url)));
      outgoing.on('timeout', () => outgoing.destroy(Object.assign(new Error(`no progress for ${Math.round(this.#timeoutMs / 1000)} s`), { code: 'ETIMEDOUT' })));
      outgoing.on('response', (res: IncomingMessage) => {
        answered = true;
        // the body was cut short: the server may still wait for it, so this connection goes
        if (!ended) res.once('close', () => outgoing.destroy());
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: nodeBody(res), url });
      });
    });
    const pump = async (): Promise<void> => {
      // a small body gets buffers of its own size (many small uploads run at once); a large one the pool's
      const small = source.end - source.start < UPLOAD_CHUNK;
      const buffers = small ? [Buffer.allocUnsafe(source.end - source.start)] : [takeUploadBuffer(), takeUploadBuffer()];
      const flushed: Array<Promise<void>> = [Promise.resolve(), Promise.resolve()];
      try {
        let slot = 0;
        for (let at = source.start; at < source.end && !answered && !outgoing.destroyed; at += UPLOAD_CHUNK) {
          const n = Math.min(UPLOAD_CHUNK, source.end - at);
          if (source.hold !== undefined && at + n === source.end) {
            // the registry commits the blob only after its last byte: that byte waits, without a
            // timeout of ours, until the caller lets it go
            outgoing.setTimeout(0);
            await source.hold();
            outgoing.setTimeout(this.#timeoutMs);
          }
          await flushed[slot];
          const chunk = buffers[slot % buffers.length]!.subarray(0, n);
          await source.read(at, chunk, n);
          if (answered || outgoing.destroyed) break;
          flushed[slot] = new Promise<void>((resolve, reject) => outgoing.write(chunk, (error) => (error ? reject(error) : resolve())));
          slot ^= 1;
        }
        if (!answered && !outgoing.destroyed) {
          ended = true;
          outgoing.end();
        }
        await Promise.all(flushed);
      } finally {
        // a buffer goes back only when no write holds it any more
        if (!small) void Promise.allSettled(flushed).then(() => buffers.forEach(giveUploadBuffer));
      }
    };
    // a failing read (the bundle changed, EIO) ends the request; the read's own error is what is reported
    const pumped = pump().then(
      () => undefined,
      (error: unknown) => {
        outgoing.destroy(error instanceof Error ? error : new Error(String(error)));
        return error;
      },
    );
    return Promise.all([response.catch((error: unknown) => error), pumped]).then(([answer, readFailure]) => {
      if (readFailure instanceof AirlockError) throw readFailure;
      if (answer instanceof Error || !(typeof answer === 'object' && answer !== null && 'status' in answer)) {
        throw readFailure !== undefined && !answered ? this.#networkError(readFailure, req.method, url) : answer;
      }
      return answer as RegistryResponse;
    });
  }

  /** Turns a non-success answer into an AirlockError (transient for 5xx/408/429). Consumes the body. */
  async fail(what: string, response: RegistryResponse, notFound?: () => AirlockError): Promise<never> {
    const body = await readCapped(response.body, MAX_ERROR_BODY).catch(() => Buffer.alloc(0));
    let detail = '';
    try {
      const parsed = JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: unknown; message?: unknown }> };
      detail = (parsed.errors ?? []).map((e) => `${String(e.code)}: ${String(e.message)}`).join('; ');
    } catch {
      detail = body.toString('utf8').slice(0, 200).trim();
    }
    const url = displayUrl(response.url);
    const text = redact(`${what}: HTTP ${response.status}${detail === '' ? '' : ` (${detail})`}`);
    if (response.status === 401 || response.status === 403) throw this.#authError(url, response.status);
    if (response.status === 404 && notFound !== undefined) throw notFound();
    const error = new AirlockError(response.status === 429 ? 'E_RATE_LIMITED' : 'E_HTTP', text, { subject: url, hint: 'see the registry\'s log for the reason' });
    if (RETRYABLE_STATUSES.has(response.status)) {
      throw markTransient(error, { status: response.status, retryAfterMs: parseRetryAfter(response.headers) });
    }
    throw error;
  }

  // ------------------------------------------------------------------------------------------------
  // blobs

  /** Whether `repository` already has the blob (with that size). */
  async hasBlob(repository: string, digest: string, size: number): Promise<boolean> {
    const response = await this.send({ method: 'HEAD', url: `/v2/${repository}/blobs/${digest}`, scopes: [`repository:${repository}:pull,push`] });
    await drop(response.body);
    if (response.status === 200) {
      const length = Number(headerValue(response.headers, 'content-length'));
      return !Number.isFinite(length) || length === size;
    }
    if (response.status === 404) return false;
    return this.fail(`HEAD ${repository}@${digest}`, { ...response, body: emptyBody() });
  }

  /**
   * One POST that either finds that the blob needs no upload or opens its upload session: it asks the
   * registry to mount `digest` into `repository` from `from` — another repository of this registry, or
   * `repository` itself (then a 201 means the repository already has the blob). 201: the blob is in
   * `repository`; 202: the registry opened an upload session instead, which is what the spec tells a
   * registry that cannot or will not mount to do. For a new blob that is one request where HEAD and a
   * plain POST are two (on Debian's registry, about 1 ms of the 6 a small blob costs).
   *
   * `undefined`: the registry answered something else (a 4xx but 401) — some refuse a mount from the
   * repository itself; the caller asks with `hasBlob` and a plain upload instead.
   */
  async openUpload(repository: string, digest: string, from = repository): Promise<OpenedUpload | undefined> {
    const scopes = from === repository ? [`repository:${repository}:pull,push`] : [`repository:${repository}:pull,push`, `repository:${from}:pull`];
    const response = await this.send({
      method: 'POST',
      url: `/v2/${repository}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`,
      headers: { 'content-length': '0' },
      scopes,
    });
    if (response.status === 201) {
      await drop(response.body);
      const answered = headerValue(response.headers, 'docker-content-digest');
      if (answered !== undefined && answered !== digest) {
        throw new AirlockError('E_HUB_PROTOCOL', `mount ${digest} into ${repository}: the registry answered for ${answered}`, { subject: displayUrl(response.url) });
      }
      return { present: true };
    }
    if (response.status === 202) {
      await drop(response.body);
      const location = headerValue(response.headers, 'location');
      if (location === undefined) throw new AirlockError('E_HUB_PROTOCOL', `POST ${repository} blob upload: 202 without Location`, { subject: this.base });
      return { present: false, session: new URL(location, response.url) };
    }
    if (response.status === 401 || RETRYABLE_STATUSES.has(response.status) || response.status < 400) {
      return this.fail(`mount ${digest} from ${from} into ${repository}`, response);
    }
    await drop(response.body);
    return undefined;
  }

  /** Best effort: drops an upload session opened by `openUpload` that will not be used. */
  async abandonUpload(repository: string, session: URL): Promise<void> {
    await this.#cancelUpload(session, [`repository:${repository}:pull,push`]);
  }

  async #startUpload(repository: string): Promise<URL> {
    const response = await this.send({ method: 'POST', url: `/v2/${repository}/blobs/uploads/`, headers: { 'content-length': '0' }, scopes: [`repository:${repository}:pull,push`] });
    if (response.status !== 202) return this.fail(`POST ${repository} blob upload`, response);
    await drop(response.body);
    const location = headerValue(response.headers, 'location');
    if (location === undefined) throw new AirlockError('E_HUB_PROTOCOL', `POST ${repository} blob upload: 202 without Location`, { subject: this.base });
    return new URL(location, response.url);
  }

  /**
   * Best effort: tells the registry to drop an unfinished upload session (it would purge it in days).
   * Runs on the way out of a failure or a Ctrl-C, so a registry that does not answer holds it up for
   * `CANCEL_WAIT_MS` at most.
   */
  async #cancelUpload(location: URL, scopes: string[]): Promise<void> {
    const bare = new URL(location.href);
    bare.searchParams.delete('digest');
    const response = await this.send({ method: 'DELETE', url: bare.href, scopes, signal: AbortSignal.timeout(CANCEL_WAIT_MS) }).catch(() => undefined);
    if (response !== undefined) await drop(response.body).catch(() => undefined);
  }

  /**
   * Uploads one blob. Monolithic (POST, then one streamed PUT) unless `chunkBytes` is given and the blob
   * is larger; chunked (PATCH per chunk, then PUT) also when the registry refuses the monolithic PUT.
   * `read` reads the blob's bytes by position. The registry checks the digest.
   *
   * `hold`: called when everything but the last piece is up (the last body piece of a PUT, the closing
   * PUT of chunks); the blob may be committed only once the promise it returns resolves. A rejection
   * cancels the upload session and is what this throws, so the registry never commits the blob.
   */
  async uploadBlob(
    repository: string,
    digest: string,
    size: number,
    read: BlobReader,
    options: { chunkBytes?: number | undefined; hold?: (() => Promise<void>) | undefined; session?: URL | undefined } = {},
  ): Promise<void> {
    const { chunkBytes, hold } = options;
    const scopes = [`repository:${repository}:pull,push`];
    // an upload session opened already (`openUpload`) is used once, by the first request that needs one
    let session = options.session === undefined ? undefined : new URL(options.session.href);
    const start = async (): Promise<URL> => {
      const opened = session ?? (await this.#startUpload(repository));
      session = undefined;
      return opened;
    };
    if (chunkBytes === undefined || size <= chunkBytes) {
      const location = await start();
      location.searchParams.set('digest', digest);
      const response = await this.send({
        method: 'PUT',
        url: location.href,
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
        source: { read, start: 0, end: size, hold },
        scopes,
      }).catch(async (error: unknown) => {
        await this.#cancelUpload(location, scopes);
        throw error;
      });
      if (response.status === 201) return void (await drop(response.body));
      // registries that take no monolithic PUT (GAR-like 413/405 answers): chunks instead
      if (![405, 413, 415].includes(response.status)) return this.fail(`PUT ${repository}@${digest}`, response);
      await drop(response.body);
    }
    const chunk = chunkBytes ?? 64 * 1024 * 1024;
    let location = await start();
    for (let start = 0; start < size; start += chunk) {
      const end = Math.min(size, start + chunk);
      const response = await this.send({
        method: 'PATCH',
        url: location.href,
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(end - start), 'content-range': `${start}-${end - 1}` },
        source: { read, start, end },
        scopes,
      });
      if (response.status !== 202) return this.fail(`PATCH ${repository}@${digest} bytes ${start}-${end - 1}`, response);
      await drop(response.body);
      const next = headerValue(response.headers, 'location');
      if (next !== undefined) location = new URL(next, response.url);
    }
    if (hold !== undefined) {
      await hold().catch(async (error: unknown) => {
        await this.#cancelUpload(location, scopes);
        throw error;
      });
    }
    location.searchParams.set('digest', digest);
    const done = await this.send({ method: 'PUT', url: location.href, headers: { 'content-length': '0' }, scopes });
    if (done.status !== 201) return this.fail(`PUT ${repository}@${digest} (last chunk)`, done);
    await drop(done.body);
  }

  /** GET a blob from `offset` on (Range); the answer's body starts at the returned offset (0 when the registry ignored Range). */
  async getBlob(repository: string, digest: string, offset: number): Promise<{ body: Readable; offset: number }> {
    const response = await this.send({
      method: 'GET',
      url: `/v2/${repository}/blobs/${digest}`,
      headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
      scopes: [`repository:${repository}:pull`],
    });
    if (response.status === 206 && offset > 0) {
      const range = /^bytes (\d+)-/.exec(headerValue(response.headers, 'content-range') ?? '');
      if (range === null || Number(range[1]) !== offset) {
        await drop(response.body);
        throw new AirlockError('E_HUB_PROTOCOL', `GET ${repository}@${digest}: answered a range that starts elsewhere than byte ${offset}`, { subject: displayUrl(response.url) });
      }
      return { body: response.body, offset };
    }
    if (response.status === 200) return { body: response.body, offset: 0 };
    return this.fail(`GET ${repository}@${digest}`, response, () =>
      new AirlockError('E_ENTRY_NOT_FOUND', `${this.registry}/${repository} has no blob ${digest}`, { subject: `${repository}@${digest}`, hint: 'the artifact is incomplete in the registry; publish it again' }),
    );
  }

  /** A small blob (trust material, config), capped; its digest is checked. */
  async getSmallBlob(repository: string, digest: string, size: number, cap: number, what: string): Promise<Buffer> {
    if (size > cap) {
      throw new AirlockError('E_MANIFEST_INVALID', `${what} is ${size} bytes in ${repository}; the limit is ${cap}`, { subject: what, hint: 'this is not an artifact `airlock publish` made' });
    }
    const { body } = await this.getBlob(repository, digest, 0);
    let bytes: Buffer;
    try {
      bytes = await readCapped(body, size);
    } catch {
      throw new AirlockError('E_SIZE_MISMATCH', `${what} (${digest}) is larger than its descriptor's ${size} bytes`, { subject: what, hint: 'the registry serves altered content; do not use it' });
    }
    const actual = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (bytes.byteLength !== size || actual !== digest) {
      throw new AirlockError('E_HASH_MISMATCH', `${what} from ${this.registry}/${repository} does not match its digest: got ${actual} (${bytes.byteLength} bytes), expected ${digest} (${size} bytes)`, {
        subject: what,
        hint: 'the registry serves altered content; do not use it, and check the registry storage',
      });
    }
    return bytes;
  }

  // ------------------------------------------------------------------------------------------------
  // manifests

  async putManifest(repository: string, reference: string, bytes: Buffer, mediaType: string): Promise<string> {
    const response = await this.send({
      method: 'PUT',
      url: `/v2/${repository}/manifests/${reference}`,
      headers: { 'content-type': mediaType, 'content-length': String(bytes.byteLength) },
      body: () => bytes,
      scopes: [`repository:${repository}:pull,push`],
    });
    if (response.status !== 201) return this.fail(`PUT manifest ${repository}:${reference}`, response);
    await drop(response.body);
    return headerValue(response.headers, 'docker-content-digest') ?? `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  }

  /** The manifest bytes and their digest (checked against a digest reference). */
  async getManifest(repository: string, reference: string): Promise<{ bytes: Buffer; digest: string }> {
    const response = await this.send({
      method: 'GET',
      url: `/v2/${repository}/manifests/${reference}`,
      headers: { accept: OCI_MANIFEST_TYPE },
      scopes: [`repository:${repository}:pull`],
    });
    const where = `oci://${this.registry}/${repository}${reference.startsWith('sha256:') ? '@' : ':'}${reference}`;
    if (response.status !== 200) {
      return this.fail(`GET manifest ${where}`, response, () =>
        new AirlockError('E_REPO_NOT_FOUND', `${where} does not exist`, { subject: where, hint: 'check the repository path and tag (publish tags each repo with its revision and its commit id)' }),
      );
    }
    let bytes: Buffer;
    try {
      bytes = await readCapped(response.body, MAX_OCI_MANIFEST_BYTES);
    } catch {
      throw new AirlockError('E_MANIFEST_INVALID', `${where}: the manifest is larger than ${MAX_OCI_MANIFEST_BYTES} bytes`, { subject: where });
    }
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (reference.startsWith('sha256:') && digest !== reference) {
      throw new AirlockError('E_HASH_MISMATCH', `${where}: the registry served a manifest whose digest is ${digest}`, { subject: where, hint: 'the registry serves altered content' });
    }
    return { bytes, digest };
  }
}

/** A node:http answer with the little of undici's body API the callers use (`dump`, iteration, `on`). */
function nodeBody(res: IncomingMessage): Dispatcher.ResponseData['body'] {
  const dump = async (): Promise<void> => {
    res.resume();
    await finished(res).catch(() => undefined);
  };
  return Object.assign(res, { dump }) as unknown as Dispatcher.ResponseData['body'];
}

function emptyBody(): Dispatcher.ResponseData['body'] {
  return { destroy: () => undefined, dump: async () => undefined, [Symbol.asyncIterator]: async function* () {} } as unknown as Dispatcher.ResponseData['body'];
}

/** Discards a body we do not read (keeps the connection reusable; never an unhandled 'error'). */
async function drop(body: Dispatcher.ResponseData['body']): Promise<void> {
  body.on?.('error', () => undefined);
  await body.dump({ limit: 64 * 1024 }).catch(() => undefined);
}
