/**
 * Which hub, and which token, the way huggingface_hub decides (spec hf-hub.md §1). The environment is
 * always passed in (default `process.env`) so callers and tests are hermetic.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { AirlockError, fsError } from '../errors.js';

export type Env = Readonly<Record<string, string | undefined>>;

export const DEFAULT_ENDPOINT = 'https://huggingface.co';

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

/**
 * `--endpoint` > `HF_ENDPOINT` > https://huggingface.co, trailing `/` stripped. Only http(s) URLs without
 * credentials, query or fragment: the endpoint is recorded in manifests and printed, so a token must
 * never ride in it.
 */
export function resolveEndpoint(flag?: string, env: Env = process.env): string {
  const fromFlag = flag !== undefined;
  const raw = fromFlag ? flag : (nonEmpty(env['HF_ENDPOINT']) ?? DEFAULT_ENDPOINT);
  const source = fromFlag ? '--endpoint' : 'HF_ENDPOINT';
  let url: URL;
  try {
    url = new URL(raw.trim());
  } catch {
    throw new AirlockError('E_USAGE', `${source} is not a URL: ${JSON.stringify(raw)}`, {
      hint: 'give the hub or mirror base URL, e.g. https://huggingface.co or https://hf-mirror.example',
    });
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new AirlockError('E_USAGE', `${source} must be an http(s) URL, not ${url.protocol}`, {
      hint: 'e.g. https://huggingface.co',
    });
  }
  if (url.username !== '' || url.password !== '') {
    // Do not echo the URL: it carries a secret.
    throw new AirlockError('E_USAGE', `${source} must not contain credentials (user:password@)`, {
      hint: 'pass the token with --token or HF_TOKEN instead; it is then sent only to that endpoint',
    });
  }
  if (url.search !== '' || url.hash !== '') {
    throw new AirlockError('E_USAGE', `${source} must not have a query or fragment: ${url.origin}${url.pathname}…`, {
      hint: 'give only the base URL of the hub or mirror',
    });
  }
  return `${url.origin}${url.pathname}`.replace(/\/+$/, '');
}

export type TokenSource = '--token' | 'HF_TOKEN' | 'HUGGING_FACE_HUB_TOKEN' | 'token file';

export interface ResolvedToken {
  token: string;
  source: TokenSource;
  /** The file it was read from, for `source: 'token file'`. */
  path?: string;
}

/** huggingface_hub `_clean_token`: drop CR/LF anywhere, trim; empty means no token. */
function cleanToken(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const cleaned = value.replace(/[\r\n]/g, '').trim();
  return cleaned === '' ? undefined : cleaned;
}

function isTrue(value: string | undefined): boolean {
  return value !== undefined && ['1', 'on', 'yes', 'true'].includes(value.trim().toLowerCase());
}

function homeDir(env: Env): string {
  return nonEmpty(env['HOME']) ?? nonEmpty(env['USERPROFILE']) ?? homedir();
}

/** Python `os.path.expanduser(os.path.expandvars(p))` for the forms people use: `~`, `~/…`, `$VAR`, `${VAR}`. */
function expandPath(path: string, env: Env): string {
  const vars = path.replace(/\$(\w+)|\$\{(\w+)\}/g, (whole, a: string | undefined, b: string | undefined) => {
    const value = env[(a ?? b) as string];
    return value === undefined ? whole : value;
  });
  if (vars === '~') return homeDir(env);
  if (vars.startsWith('~/')) return join(homeDir(env), vars.slice(2));
  return vars;
}

/** `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`. */
export function hfHome(env: Env = process.env): string {
  const explicit = nonEmpty(env['HF_HOME']);
  if (explicit !== undefined) return expandPath(explicit, env);
  const xdg = nonEmpty(env['XDG_CACHE_HOME']);
  return join(xdg !== undefined ? expandPath(xdg, env) : join(homeDir(env), '.cache'), 'huggingface');
}

/** `HF_TOKEN_PATH`, else `$HF_HOME/token`. */
export function tokenPath(env: Env = process.env): string {
  const explicit = nonEmpty(env['HF_TOKEN_PATH']);
  return explicit !== undefined ? expandPath(explicit, env) : join(hfHome(env), 'token');
}

function readTokenFile(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw fsError(error, 'read the Hugging Face token file', path);
  }
}

/**
 * `--token` > `HF_TOKEN` > `HUGGING_FACE_HUB_TOKEN` > the token file. With
 * `HF_HUB_DISABLE_IMPLICIT_TOKEN` set, only `--token` counts (the environment and file tokens are then
 * sent only when passed explicitly, as in huggingface_hub).
 */
export function resolveTokenWithSource(flag?: string, env: Env = process.env): ResolvedToken | undefined {
  let found: ResolvedToken | undefined;
  const fromFlag = cleanToken(flag);
  if (fromFlag !== undefined) found = { token: fromFlag, source: '--token' };
  else if (!isTrue(env['HF_HUB_DISABLE_IMPLICIT_TOKEN'])) {
    const hfToken = cleanToken(env['HF_TOKEN']);
    const legacy = cleanToken(env['HUGGING_FACE_HUB_TOKEN']);
    if (hfToken !== undefined) found = { token: hfToken, source: 'HF_TOKEN' };
    else if (legacy !== undefined) found = { token: legacy, source: 'HUGGING_FACE_HUB_TOKEN' };
    else {
      const path = tokenPath(env);
      const fromFile = cleanToken(readTokenFile(path));
      if (fromFile !== undefined) found = { token: fromFile, source: 'token file', path };
    }
  }
  // A header value must be visible ASCII; say so without ever echoing the token.
  if (found !== undefined && !/^[\x21-\x7e]+$/.test(found.token)) {
    throw new AirlockError('E_USAGE', `the token from ${found.path ?? found.source} contains spaces or characters that cannot be sent in a header`, {
      hint: 'copy the token again from your Hugging Face settings (Access Tokens)',
    });
  }
  return found;
}

export function resolveToken(flag?: string, env: Env = process.env): string | undefined {
  return resolveTokenWithSource(flag, env)?.token;
}
