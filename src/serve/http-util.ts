/** Small response helpers and the per-request context shared by the serve handlers. */
import type { IncomingMessage, ServerResponse } from 'node:http';

export interface AccessEntry {
  time: string;
  client: string;
  method: string;
  path: string;
  api: 'hf' | 'modelscope' | 'page' | 'none';
  repo?: string;
  revision?: string;
  commit?: string;
  file?: string;
  range?: string;
  status: number;
  bytes: number;
  error?: string;
}

export interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  /** Raw path without the query. */
  rawPath: string;
  query: URLSearchParams;
  /** `http(s)://host` the client used (for absolute `Link` URLs). */
  origin: string;
  log: AccessEntry;
  /** The request body (POST only, at most the configured limit). */
  body?: Buffer;
}

/** Booleans arrive as `true`/`false` (httpx) or `True`/`False` (requests): case-insensitive. */
export function queryBool(query: URLSearchParams, name: string): boolean {
  const value = query.get(name);
  return value !== null && /^(true|1|yes)$/i.test(value.trim());
}

export function sendJson(ctx: RequestContext, status: number, body: unknown, headers: Record<string, string> = {}): void {
  sendBytes(ctx, status, 'application/json; charset=utf-8', Buffer.from(JSON.stringify(body)), headers);
}

export function sendText(ctx: RequestContext, status: number, contentType: string, text: string, headers: Record<string, string> = {}): void {
  sendBytes(ctx, status, contentType, Buffer.from(text, 'utf8'), headers);
}

/** A whole small body (JSON, HTML); the access log counts what went out (nothing for HEAD). */
function sendBytes(ctx: RequestContext, status: number, contentType: string, data: Buffer, headers: Record<string, string>): void {
  const head = ctx.req.method === 'HEAD';
  ctx.log.status = status;
  ctx.log.bytes = head ? 0 : data.length;
  ctx.res.writeHead(status, { 'Content-Type': contentType, 'Content-Length': String(data.length), ...headers });
  ctx.res.end(head ? undefined : data);
}

export type HubErrorCode = 'RepoNotFound' | 'RevisionNotFound' | 'EntryNotFound';

/** A Hub-style error: `X-Error-Code` / `X-Error-Message` headers and `{"error": …}` (what huggingface_hub maps to its exceptions). */
export function sendHubError(ctx: RequestContext, status: number, code: HubErrorCode | undefined, message: string, headers: Record<string, string> = {}): void {
  ctx.log.error = message;
  sendJson(ctx, status, { error: message }, { ...(code ? { 'X-Error-Code': code } : {}), 'X-Error-Message': message.replace(/[^\x20-\x7e]/g, '?'), ...headers });
}

/** Splits a raw path into decoded segments; undefined when a segment cannot be decoded. */
export function decodeSegments(raw: readonly string[]): string[] | undefined {
  const out: string[] = [];
  for (const segment of raw) {
    try {
      out.push(decodeURIComponent(segment));
    } catch {
      return undefined;
    }
  }
  return out;
}

/** A segment that must stand for itself: no encoded `/` or `\`, no NUL, not `.` or `..`, not empty. */
export function plainSegment(decoded: string): boolean {
  return decoded !== '' && decoded !== '.' && decoded !== '..' && !/[/\\\u0000]/.test(decoded);
}

export function htmlEscape(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
