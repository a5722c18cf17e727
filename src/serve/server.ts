/**
 * `airlock serve`: a read-only Hub-compatible endpoint over a verified cache. One HTTP(S) server; every
 * request is authorised (optional bearer tokens), routed, answered from the cache as it is on disk at
 * that moment, and logged as one JSON line (never with its headers: tokens stay out of the log).
 *
 * Limits: request headers (16 KiB → 431), request bodies (1 MiB, only paths-info has one), open
 * connections, and time: a client that sends its headers too slowly or stops reading for `idleTimeoutMs`
 * is disconnected, so a slow client holds at most one socket for a bounded time.
 */
import { evidenceSecurityStatus } from './security.js';
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { AirlockError } from '../errors.js';
import { handleApi, handleResolve, splitRepo, type HfApiDeps, type SecurityStatusProvider } from './hf-api.js';
import { sendHubError, type AccessEntry, type RequestContext } from './http-util.js';
import { handleModelScope } from './modelscope-api.js';
import { handlePage } from './page.js';
import { BadFiles } from './verified-body.js';

export interface ServeOptions {
  /** The hub cache root (what `import --layout hf` writes). */
  cacheDir: string;
  /** The ModelScope cache root (`import --layout modelscope`); its API is answered when given. */
  modelscopeDir?: string | undefined;
  host: string;
  /** 0 = any free port. */
  port: number;
  /** Accepted bearer tokens; none = no authentication. */
  tokens?: readonly string[];
  tls?: { key: Buffer; cert: Buffer } | undefined;
  maxConnections?: number;
  /** Socket idle limit (no byte read or written). Default 60 s. */
  idleTimeoutMs?: number;
  /** Whole request head must arrive within this. Default 20 s. */
  headersTimeoutMs?: number;
  maxHeaderBytes?: number;
  maxBodyBytes?: number;
  pageSize?: number;
  expandPageSize?: number;
  security?: SecurityStatusProvider;
  onAccess?: (entry: AccessEntry) => void;
  onEvent?: (event: ServeEvent) => void;
}

export type ServeEvent =
  | { event: 'integrity-failure'; path: string; repo: string; file: string; expected: string; actual: string }
  | { event: 'internal-error'; message: string };

export interface RunningServer {
  /** What to set as HF_ENDPOINT, e.g. http://127.0.0.1:8080 */
  url: string;
  port: number;
  close(): Promise<void>;
}

function tokenDigest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

function presentedToken(req: IncomingMessage): string | undefined {
  const auth = req.headers.authorization;
  if (typeof auth === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    if (m) return m[1];
  }
  // ModelScope clients send the token as a cookie
  const cookie = req.headers.cookie;
  if (typeof cookie === 'string') {
    const m = /(?:^|;\s*)m_session_id=([^;]+)/.exec(cookie);
    if (m) return decodeURIComponent(m[1]!);
  }
  return undefined;
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer | 'too-large'> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) over = true;
      else chunks.push(chunk);
    });
    req.on('end', () => resolve(over ? 'too-large' : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export async function startServer(options: ServeOptions): Promise<RunningServer> {
  const tokens = (options.tokens ?? []).map(tokenDigest);
  const bad = new BadFiles();
  const emit = options.onEvent ?? (() => undefined);
  const deps: HfApiDeps = {
    cacheDir: options.cacheDir,
    bad,
    pageSize: options.pageSize ?? 1000,
    expandPageSize: options.expandPageSize ?? 50,
    // per-file verdicts recorded at import (pickleImportScan); a caller may plug in another source
    security: options.security ?? evidenceSecurityStatus,
    onIntegrityFailure: (e) => emit({ event: 'integrity-failure', ...e }),
  };
  const maxBody = options.maxBodyBytes ?? 1024 * 1024;
  const scheme = options.tls ? 'https' : 'http';

  const authorised = (req: IncomingMessage): boolean => {
    if (tokens.length === 0) return true;
    const token = presentedToken(req);
    if (token === undefined) return false;
    const digest = tokenDigest(token);
    let ok = false;
    for (const t of tokens) ok = timingSafeEqual(t, digest) || ok;
    return ok;
  };

  async function route(ctx: RequestContext): Promise<void> {
    const method = ctx.req.method ?? '';
    if (!['GET', 'HEAD', 'POST'].includes(method)) {
      ctx.log.status = 405;
      ctx.res.writeHead(405, { Allow: 'GET, HEAD, POST', 'Content-Length': '0' });
      ctx.res.end();
      return;
    }
    if (!authorised(ctx.req)) {
      const presented = presentedToken(ctx.req) !== undefined;
      // huggingface_hub reads exactly this message as "bad token" rather than "repo not found"
      return sendHubError(ctx, 401, undefined, presented ? 'Invalid credentials in Authorization header' : 'Authentication required: send a token (HF_TOKEN) as Authorization: Bearer', {
        'WWW-Authenticate': 'Bearer realm="airlock"',
      });
    }
    const raw = ctx.rawPath.split('/').slice(1);
    if (method === 'POST') {
      const body = await readBody(ctx.req, maxBody);
      if (body === 'too-large') {
        ctx.res.setHeader('Connection', 'close');
        return sendHubError(ctx, 413, undefined, `request body larger than ${maxBody} bytes`);
      }
      ctx.body = body;
    }
    if (raw[0] === 'api' && raw[1] === 'v1' && options.modelscopeDir !== undefined) {
      ctx.log.api = 'modelscope';
      return handleModelScope(ctx, { root: options.modelscopeDir, evidenceCacheDir: options.modelscopeDir, bad, onIntegrityFailure: (e) => deps.onIntegrityFailure(e) }, raw.slice(2));
    }
    if (raw[0] === 'api' && (raw[1] === 'models' || raw[1] === 'datasets')) {
      ctx.log.api = 'hf';
      const type = raw[1] === 'datasets' ? 'dataset' : 'model';
      const split = await splitRepo(options.cacheDir, type, raw.slice(2));
      if (!split) return sendHubError(ctx, 400, undefined, 'bad repo id in the request');
      return handleApi(ctx, deps, type, split.id, split.rest);
    }
    if (raw[0] === 'api') return sendHubError(ctx, 404, undefined, `no such API: ${ctx.rawPath}`);
    // /{repo}/resolve/{rev}/{path} and /datasets/{repo}/resolve/…; else the page
    const type = raw[0] === 'datasets' ? 'dataset' : 'model';
    const segments = type === 'dataset' ? raw.slice(1) : raw;
    const resolveAt = segments[1] === 'resolve' ? 1 : segments[2] === 'resolve' ? 2 : -1;
    if (resolveAt > 0 && segments.length >= resolveAt + 3) {
      ctx.log.api = 'hf';
      if (method === 'POST') {
        ctx.log.status = 405;
        ctx.res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Length': '0' });
        ctx.res.end();
        return;
      }
      const split = await splitRepo(options.cacheDir, type, segments.slice(0, resolveAt));
      if (!split || split.rest.length > 0) return sendHubError(ctx, 400, undefined, 'bad repo id in the request');
      return handleResolve(ctx, deps, type, split.id, segments[resolveAt + 1]!, segments.slice(resolveAt + 2));
    }
    ctx.log.api = 'page';
    return handlePage(ctx, { cacheDir: options.cacheDir, modelscopeDir: options.modelscopeDir }, raw);
  }

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const rawPath = q < 0 ? rawUrl : rawUrl.slice(0, q);
    const host = typeof req.headers.host === 'string' && /^[A-Za-z0-9.\-:[\]]+$/.test(req.headers.host) ? req.headers.host : `${options.host}:${port}`;
    const ctx: RequestContext = {
      req,
      res,
      rawPath,
      query: new URLSearchParams(q < 0 ? '' : rawUrl.slice(q + 1)),
      origin: `${scheme}://${host}`,
      log: { time: new Date().toISOString(), client: req.socket.remoteAddress ?? '', method: req.method ?? '', path: rawPath.slice(0, 2048), api: 'none', status: 0, bytes: 0 },
    };
    const done = (rawPath.startsWith('/') ? route(ctx) : Promise.resolve(sendHubError(ctx, 400, undefined, 'bad request target'))).catch((error: unknown) => {
      const message = (error as Error)?.message ?? String(error);
      emit({ event: 'internal-error', message });
      if (!res.headersSent) sendHubError(ctx, 500, undefined, 'internal error');
      else res.destroy();
    });
    // one line per request, once both the response is over and the handler has recorded its outcome
    res.on('close', () => {
      void done.then(() => {
        if (ctx.log.status === 0) ctx.log.status = res.statusCode;
        options.onAccess?.(ctx.log);
      });
    });
  };

  const serverOptions = {
    maxHeaderSize: options.maxHeaderBytes ?? 16 * 1024,
    requestTimeout: 60_000,
    headersTimeout: options.headersTimeoutMs ?? 20_000,
    keepAliveTimeout: 5_000,
  };
  const server: Server = options.tls
    ? createHttpsServer({ ...serverOptions, key: options.tls.key, cert: options.tls.cert }, onRequest)
    : createHttpServer(serverOptions, onRequest);
  server.maxConnections = options.maxConnections ?? 256;
  // idle sockets (a client that stopped reading, or never sends) are cut
  server.setTimeout(options.idleTimeoutMs ?? 60_000, (socket: Socket) => socket.destroy());
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
    const status = error.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    else socket.destroy();
  });

  let port = options.port;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new AirlockError('E_USAGE', `cannot listen on ${options.host}:${options.port}: ${error.code ?? error.message}`, {
          subject: `${options.host}:${options.port}`,
          hint: error.code === 'EADDRINUSE' ? 'choose another port with --listen HOST:PORT' : 'check --listen',
          cause: error,
        }),
      ),
    );
    server.listen(options.port, options.host, () => resolve());
  });
  port = (server.address() as AddressInfo).port;
  const hostPart = options.host.includes(':') ? `[${options.host}]` : options.host;
  return {
    url: `${scheme}://${hostPart}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // idle keep-alive sockets end now; sockets mid-response get a moment, then go too
        server.closeIdleConnections();
        setTimeout(() => {
          for (const s of sockets) s.destroy();
        }, 2_000).unref();
      }),
  };
}
