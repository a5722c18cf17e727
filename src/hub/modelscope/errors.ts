/**
 * A ModelScope error answer → one AirlockError (spec modelscope.md §2.4). Pure. The status decides
 * first (1.x `handle_http_response`, msh `raise_for_status`), then an envelope that says failure
 * behind an HTTP 200 is mapped by its `Code` when that is HTTP-like. Messages name the URL (never its
 * query), the server's `Message` and the request id (`RequestId` or `x-request-id`); never the token.
 */
import { AirlockError, redact, type ErrorCode } from '../../errors.js';
import type { RepoRef } from '../types.js';
import { readEnvelope } from './wire.js';

export type ModelScopeStage = 'repo' | 'revisions' | 'files' | 'file';

export interface ModelScopeErrorInput {
  /** HTTP status; for an envelope failure behind HTTP 200, pass 200 and the body. */
  status: number;
  headers: Readonly<Record<string, string | string[] | undefined>>;
  /** The body as text (already capped by the caller); may be empty. */
  body: string;
  url: URL;
  repo: RepoRef;
  stage: ModelScopeStage;
  /** The repo file, for downloads. */
  path?: string;
  tokenSent: boolean;
  token?: string | undefined;
}

function header(headers: ModelScopeErrorInput['headers'], name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value.join(', ') : value;
}

function noTokenHint(): string {
  return 'if the repo is private, pass a token with --token or MODELSCOPE_API_TOKEN (an SDK token from your ModelScope account settings)';
}

export function modelScopeErrorFromResponse(input: ModelScopeErrorInput): AirlockError {
  const { url, repo, tokenSent } = input;
  const envelope = (() => {
    try {
      return readEnvelope(JSON.parse(input.body));
    } catch {
      return undefined;
    }
  })();
  // an HTTP 200 carrying a failed envelope: its Code says what it is when HTTP-like
  const status = input.status >= 200 && input.status < 300 && envelope?.code !== undefined && envelope.code >= 400 && envelope.code < 600 ? envelope.code : input.status;
  let said = envelope?.message;
  if (said === undefined) {
    const type = header(input.headers, 'content-type') ?? '';
    const text = input.body.trim();
    if (text !== '' && !/html/i.test(type) && !text.startsWith('<') && !text.startsWith('{')) said = text;
  }
  if (said !== undefined) said = said.replace(/\s+/g, ' ').slice(0, 300);
  const id = envelope?.requestId ?? header(input.headers, 'x-request-id');
  const business = envelope?.code !== undefined && envelope.code !== status ? `, code ${envelope.code}` : '';
  const details = `HTTP ${input.status}${business} from ${url.origin}${url.pathname}${said !== undefined && said !== '' ? `: ${said}` : ''}${id !== undefined ? ` (request id ${id})` : ''}`;
  const subject = input.path !== undefined ? `${repo.id}/${input.path}` : repo.id;
  const make = (code: ErrorCode, what: string, hint?: string): AirlockError =>
    new AirlockError(code, redact(`${what} (${details})`, [input.token]), { subject, ...(hint !== undefined ? { hint } : {}) });
  const what = `ModelScope ${repo.type} ${repo.id}`;

  if (status === 404) {
    if (input.stage === 'file') {
      return make('E_ENTRY_NOT_FOUND', `file ${input.path ?? ''} of ${what} not found at revision ${repo.revision}`,
        'the listing and the file server disagree (the branch may have moved); run the export again');
    }
    if (input.stage === 'files' && repo.type === 'dataset') {
      // the id lookup just succeeded: what is missing is the revision
      return make('E_REVISION_NOT_FOUND', `revision ${JSON.stringify(repo.revision)} of ${what} not found`,
        'ModelScope datasets take a branch or tag name (default master); check the name and its case');
    }
    return make('E_REPO_NOT_FOUND', `${what} not found, or private and no access to it`,
      tokenSent
        ? "a token was sent: check the repo id (case matters) and that the token's account can read this repo"
        : `check the repo id (owner/name, case matters); ${noTokenHint()}`);
  }
  if (status === 401) {
    return make('E_AUTH', tokenSent ? 'token rejected by ModelScope' : 'ModelScope wants a token',
      tokenSent ? 'the token is invalid or expired: check --token / MODELSCOPE_API_TOKEN' : 'pass a token with --token or MODELSCOPE_API_TOKEN');
  }
  if (status === 403) {
    // 1.x: 403 = missing or invalid token; msh: PermissionDenied
    return make(tokenSent ? 'E_FORBIDDEN' : 'E_AUTH', `access to ${what} refused`,
      tokenSent
        ? "the token is invalid or its account may not read this repo: check --token / MODELSCOPE_API_TOKEN"
        : 'pass a token with --token or MODELSCOPE_API_TOKEN');
  }
  if (status === 429) {
    const after = header(input.headers, 'retry-after');
    return make('E_RATE_LIMITED', 'rate limited by ModelScope',
      `wait${after !== undefined && /^\d+$/.test(after) ? ` ${after} s` : ' a while'} and run the export again`);
  }
  if (status === 400 || status === 405) {
    return make('E_HTTP', `ModelScope refused the request for ${what} as invalid`,
      input.stage === 'revisions' || input.stage === 'files' ? 'check the revision: ModelScope takes branch or tag names (e.g. master, v1.0.0)' : undefined);
  }
  if (status >= 500) return make('E_HTTP', `ModelScope failed to answer for ${what}`, 'the hub seems down or overloaded; try again later');
  if (input.status >= 200 && input.status < 300) {
    return make('E_HTTP', `ModelScope reported a failure for ${what}`, 'the server accepted the request but refused it; its message is above');
  }
  return make('E_HTTP', `unexpected answer for ${what}`);
}
