/**
 * Where registry credentials come from, by convention — the precedence podman/skopeo (containers/image)
 * and docker use:
 *
 * 1. `--registry-user` + `--registry-password-stdin`;
 * 2. then the files in order: `$REGISTRY_AUTH_FILE` or containers' `auth.json`
 *    (`$XDG_RUNTIME_DIR/containers/auth.json`), `~/.config/containers/auth.json`, then Docker's
 *    `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. In each file a `credHelpers` entry for the
 *    registry comes first (its helper is run), then the `auths` entry (`{"auth": base64("user:password")}`,
 *    `identitytoken`). Docker's own file also has `credsStore`, the default helper for every registry
 *    without a `credHelpers` entry; docker then ignores `auths` (it keeps only empty markers there), and so
 *    do we. containers' `auth.json` has no `credsStore`.
 * 3. A helper that has nothing for the registry ("credentials not found") passes on to the next file, as
 *    containers/image does; a helper that is missing or fails is an error naming it.
 *
 * A helper's `<token>` user, or an `identitytoken`, is an identity token: an OAuth2 refresh token the
 * client trades at the token realm (client.ts). Credentials are never printed or logged.
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { AirlockError } from '../errors.js';
import { runCredentialHelper, type HelperAnswer } from './credential-helper.js';

export interface Credentials {
  username: string;
  password: string;
  /** An OAuth2 refresh token (docker's `identitytoken`): traded at the token realm, never sent as a password. */
  identityToken?: string;
  /** Where they came from (a file path, a helper, `--registry-user`), for messages; never the secret. */
  source: string;
}

type Env = Readonly<Record<string, string | undefined>>;

/** `https://host:port/v1/` → `host:port`; Docker Hub's legacy key stays as written. */
function normalizeKey(key: string): string {
  return key.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '').toLowerCase();
}

const DEFAULT_HELPER_TIMEOUT_MS = 30_000;

interface FileContext {
  registry: string;
  env: Env;
  /** Docker's config.json (the only file where `credsStore` means something). */
  docker: boolean;
  helperTimeoutMs: number;
}

function fromHelper(answer: HelperAnswer, name: string, source: string): Credentials | undefined {
  switch (answer.kind) {
    case 'none':
      return undefined;
    case 'password':
      return { username: answer.username, password: answer.password, source: `docker-credential-${name} (${source})` };
    case 'identity-token':
      return { username: '', password: '', identityToken: answer.token, source: `docker-credential-${name} (${source})` };
  }
}

async function helper(name: unknown, where: string, path: string, context: FileContext): Promise<Credentials | undefined> {
  if (typeof name !== 'string' || name === '') throw new AirlockError('E_USAGE', `${path}: ${where} is not a helper name`, { subject: path, hint: 'fix or remove that entry' });
  const configuredIn = `${where} in ${path}`;
  const answer = await runCredentialHelper({ name, serverUrl: context.registry, configuredIn, env: context.env, timeoutMs: context.helperTimeoutMs });
  return fromHelper(answer, name, configuredIn);
}

async function fromFile(path: string, context: FileContext): Promise<Credentials | undefined> {
  const { registry } = context;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (cause) {
    throw new AirlockError('E_USAGE', `${path} is not valid JSON`, { subject: path, cause, hint: 'fix or remove that credentials file' });
  }
  const config = (parsed ?? {}) as { auths?: unknown; credHelpers?: unknown; credsStore?: unknown };
  // 1. a helper named for this registry
  if (config.credHelpers !== null && typeof config.credHelpers === 'object') {
    for (const [key, name] of Object.entries(config.credHelpers as Record<string, unknown>)) {
      if (normalizeKey(key) === registry) return helper(name, `credHelpers["${key}"]`, path, context);
    }
  }
  // 2. docker: the default helper for every registry; docker then reads nothing from auths
  if (context.docker && typeof config.credsStore === 'string' && config.credsStore !== '') return helper(config.credsStore, 'credsStore', path, context);
  // 3. the file's own entry
  const auths = config.auths;
  if (auths === null || typeof auths !== 'object') return undefined;
  for (const [key, entry] of Object.entries(auths as Record<string, unknown>)) {
    if (normalizeKey(key) !== registry) continue;
    const e = entry as { auth?: unknown; username?: unknown; password?: unknown; identitytoken?: unknown } | null;
    let username: string | undefined;
    let password = '';
    if (typeof e?.auth === 'string' && e.auth !== '') {
      const decoded = Buffer.from(e.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0 || (colon === 0 && typeof e.identitytoken !== 'string')) throw new AirlockError('E_USAGE', `${path}: the auth entry for ${key} is not base64("user:password")`, { subject: path });
      username = decoded.slice(0, colon);
      password = decoded.slice(colon + 1);
    } else if (typeof e?.username === 'string' && typeof e.password === 'string') {
      username = e.username;
      password = e.password;
    }
    if (typeof e?.identitytoken === 'string' && e.identitytoken !== '') return { username: username ?? '', password: '', identityToken: e.identitytoken, source: path };
    if (username !== undefined) return { username, password, source: path };
    // an empty entry: the marker `docker login` leaves when a helper holds the secret
  }
  return undefined;
}

export interface CredentialOptions {
  registry: string;
  user?: string | undefined;
  password?: string | undefined;
  env: Env;
  home?: string;
  /** How long a credential helper may take (default 30 s; AIRLOCK_CREDENTIAL_HELPER_TIMEOUT_MS). */
  helperTimeoutMs?: number;
}

export async function findCredentials(options: CredentialOptions): Promise<Credentials | undefined> {
  if (options.user !== undefined) {
    if (options.password === undefined) throw new AirlockError('E_USAGE', '--registry-user needs --registry-password-stdin');
    return { username: options.user, password: options.password, source: '--registry-user' };
  }
  const { env } = options;
  const home = options.home ?? homedir();
  const files: string[] = [];
  if (env['REGISTRY_AUTH_FILE']) files.push(env['REGISTRY_AUTH_FILE']);
  if (env['XDG_RUNTIME_DIR']) files.push(join(env['XDG_RUNTIME_DIR'], 'containers', 'auth.json'));
  files.push(join(env['XDG_CONFIG_HOME'] ?? join(home, '.config'), 'containers', 'auth.json'));
  const docker = join(env['DOCKER_CONFIG'] ?? join(home, '.docker'), 'config.json');
  files.push(docker);
  const fromEnv = Number(env['AIRLOCK_CREDENTIAL_HELPER_TIMEOUT_MS']);
  const helperTimeoutMs = options.helperTimeoutMs ?? (Number.isFinite(fromEnv) && fromEnv > 0 ? fromEnv : DEFAULT_HELPER_TIMEOUT_MS);
  for (const file of files) {
    const found = await fromFile(file, { registry: options.registry.toLowerCase(), env, docker: file === docker, helperTimeoutMs });
    if (found !== undefined) return found;
  }
  return undefined;
}
