/**
 * A Hub error response → one AirlockError, in the order huggingface_hub's `hf_raise_for_status` checks
 * (spec hf-hub.md §2.7). Pure: takes the status, headers and (the start of) the body, so it can be tested
 * without a server. Messages name the URL (never its query) and the request id; the token never appears.
 */
import { AirlockError, redact, type ErrorCode } from '../../errors.js';
import type { RepoRef } from '../types.js';

export const INVALID_CREDENTIALS_MESSAGE = 'Invalid credentials in Authorization header';
export const DISABLED_MESSAGE = 'Access to this resource is disabled.';

export interface HubErrorInput {
  status: number;
  headers: Readonly<Record<string, string | string[] | undefined>>;
  /** The body as text (already capped by the caller); may be empty. */
  body: string;
  /** The URL that answered. Only origin and path are shown. */
  url: URL;
  repo: RepoRef;
  /** The repo file the request was about, for resolve URLs. */
  path?: string;
  /** Whether this request carried a token. */
  tokenSent: boolean;
  /** The token, only so it can be masked should a server echo it. */
  token?: string | undefined;
}

function header(headers: HubErrorInput['headers'], name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value.join(', ') : value;
}

/** `/api/{models,datasets,spaces}/…` or `/…/resolve/…`: the URLs where a 401 means "not found or no access". */
const REPO_URL = /^\/(?:api\/(?:models|datasets|spaces)\/.+|.+\/resolve\/.+)$/;

/** The server's own words: `X-Error-Message`, else a JSON `error`/`error_description`/`errors[].message`, else non-HTML text. */
export function serverMessage(headers: HubErrorInput['headers'], body: string): string | undefined {
  const messages: string[] = [];
  const fromHeader = header(headers, 'x-error-message');
  if (fromHeader !== undefined) messages.push(fromHeader);
  let data: unknown;
  let isJson = false;
  try {
    data = JSON.parse(body);
    isJson = true;
  } catch {
    // not JSON
  }
  if (isJson) {
    if (data !== null && typeof data === 'object' && !Array.isArray(data)) {
      const obj = data as Record<string, unknown>;
      const { error, error_description: description, errors } = obj;
      if (Array.isArray(error)) messages.push(...error.map(asText));
      else if (error !== undefined && error !== null) messages.push(description !== undefined && description !== null ? `${asText(error)}: ${asText(description)}` : asText(error));
      else if (description !== undefined && description !== null) messages.push(asText(description));
      if (Array.isArray(errors)) {
        for (const e of errors) {
          if (e !== null && typeof e === 'object' && 'message' in e) messages.push(String((e as { message: unknown }).message));
        }
      }
    }
  } else {
    const contentType = header(headers, 'content-type') ?? '';
    if (body.trim() !== '' && !contentType.toLowerCase().includes('html') && !/^\s*</.test(body)) messages.push(body);
  }
  const unique = [...new Set(messages.map((m) => m.trim()).filter((m) => m !== ''))];
  if (unique.length === 0) return undefined;
  const joined = unique.join('; ').replace(/\s+/g, ' ');
  return joined.length > 300 ? `${joined.slice(0, 300)}…` : joined;
}

/** `X-Request-Id` > `X-Amzn-Trace-Id` > `X-Amz-Cf-Id`. */
export function requestId(headers: HubErrorInput['headers']): string | undefined {
  return header(headers, 'x-request-id') ?? header(headers, 'x-amzn-trace-id') ?? header(headers, 'x-amz-cf-id');
}

function describeRepo(repo: RepoRef): string {
  return `${repo.type} ${repo.id}`;
}

/** "private or gated?" hints depend on whether a token went out with the request. */
function tokenHint(tokenSent: boolean): string {
  return tokenSent
    ? "a token was sent: check that the repo id and --repo-type are right and that the token's account can read this repo"
    : 'no token was sent: check the repo id and --repo-type; if the repo is private, pass a token with --token or HF_TOKEN';
}

export function hubErrorFromResponse(input: HubErrorInput): AirlockError {
  const { status, headers, url, repo, tokenSent } = input;
  const code = header(headers, 'x-error-code');
  const errorMessage = header(headers, 'x-error-message');
  const where = `${url.origin}${url.pathname}`;
  const said = serverMessage(headers, input.body);
  const id = requestId(headers);
  const details = `HTTP ${status} from ${where}${said !== undefined ? `: ${said}` : ''}${id !== undefined ? ` (request id ${id})` : ''}`;
  const subject = input.path !== undefined ? `${repo.id}/${input.path}` : repo.id;
  const make = (errorCode: ErrorCode, what: string, hint?: string): AirlockError =>
    new AirlockError(errorCode, redact(`${what} (${details})`, [input.token]), {
      subject,
      ...(hint !== undefined ? { hint: redact(hint, [input.token]) } : {}),
    });

  if (code === 'RevisionNotFound') {
    return make('E_REVISION_NOT_FOUND', `revision ${JSON.stringify(repo.revision)} not found in ${describeRepo(repo)}`,
      'check the branch, tag or commit; a commit must be given in full (40 hex characters)');
  }
  if (code === 'EntryNotFound') {
    return make('E_ENTRY_NOT_FOUND', `${input.path !== undefined ? `file ${input.path}` : 'entry'} not found in ${describeRepo(repo)}`,
      'the listing and the file server disagree; run the export again');
  }
  if (code === 'GatedRepo') {
    return make('E_GATED', `${describeRepo(repo)} is gated and this ${tokenSent ? "token's account has" : 'request has'} no access`,
      tokenSent
        ? "accept the model's terms on its page while logged in with the token's account, then run the export again"
        : "no token was sent: pass a token with --token or HF_TOKEN, after accepting the model's terms on its page while logged in with the token's account");
  }
  if (errorMessage === DISABLED_MESSAGE) {
    return make('E_DISABLED', `${describeRepo(repo)} is disabled on the hub`, 'the repo owner or the hub disabled it; nothing can be downloaded');
  }
  if (code === 'RepoNotFound' || (status === 401 && errorMessage !== INVALID_CREDENTIALS_MESSAGE && REPO_URL.test(url.pathname))) {
    return make('E_REPO_NOT_FOUND', `${describeRepo(repo)} not found, or no access to it`, tokenHint(tokenSent));
  }
  if (status === 401) {
    return make('E_AUTH', tokenSent ? 'token rejected by the hub' : 'the hub wants a token', tokenSent
      ? 'the token is invalid, expired or revoked: check --token / HF_TOKEN / the token file (HF_TOKEN_PATH)'
      : 'pass a token with --token or HF_TOKEN');
  }
  if (status === 403) {
    return make('E_FORBIDDEN', `access to ${describeRepo(repo)} refused`, tokenSent
      ? 'the token lacks the permission (a fine-grained token needs read access to this repo)'
      : 'pass a token with --token or HF_TOKEN');
  }
  if (status === 429) {
    const reset = /;\s*t=(\d+)/.exec(header(headers, 'ratelimit') ?? '')?.[1] ?? header(headers, 'retry-after');
    return make('E_RATE_LIMITED', 'rate limited by the hub',
      `wait${reset !== undefined && /^\d+$/.test(reset) ? ` ${reset} s` : ' a while'} and run the export again (a token gets a larger quota)`);
  }
  if (status >= 500) {
    return make('E_HTTP', `the hub failed to answer for ${describeRepo(repo)}`, 'the mirror/hub seems down or overloaded; try again later');
  }
  if (status === 404) {
    // a 404 no hub error code explains: not a missing repo (the hub would say RepoNotFound) but no hub API
    // at this address — the endpoint is usually wrong (a path too many, or not a hub at all)
    const root = `${url.origin}${url.pathname.includes('/api/') ? url.pathname.slice(0, url.pathname.indexOf('/api/')) : ''}`;
    return make('E_HTTP', `no Hugging Face Hub API at ${root}: unexpected answer for ${describeRepo(repo)}`,
      `check --endpoint / HF_ENDPOINT: it must be the hub's root (like https://huggingface.co or a mirror's root, without /api), not ${root}`);
  }
  return make('E_HTTP', `unexpected answer for ${describeRepo(repo)}`);
}

/** A JSON value as message text: strings as they are, anything else (an object, a number) as JSON, never "[object Object]". */
function asText(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value) ?? String(value);
}
