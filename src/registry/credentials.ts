/**
 * Where registry credentials come from, by convention: `--registry-user` + `--registry-password-stdin`,
 * then `$REGISTRY_AUTH_FILE` or containers' `auth.json` (`$XDG_RUNTIME_DIR/containers/auth.json`,
 * `~/.config/containers/auth.json`), then Docker's `$DOCKER_CONFIG/config.json` or
 * `~/.docker/config.json`. Each is `{"auths": {"host[:port]": {"auth": base64("user:password")}}}`.
 * Credential helpers (`credsStore`) are not run. Credentials are never printed or logged.
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { AirlockError } from '../errors.js';

export interface Credentials {
  username: string;
  password: string;
  /** Where they came from (a file path or `--registry-user`), for messages; never the secret. */
  source: string;
}

type Env = Readonly<Record<string, string | undefined>>;

/** `https://host:port/v1/` → `host:port`; Docker Hub's legacy key stays as written. */
function normalizeKey(key: string): string {
  return key.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '').toLowerCase();
}

async function fromFile(path: string, registry: string): Promise<Credentials | undefined> {
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
  const auths = (parsed as { auths?: unknown } | null)?.auths;
  if (auths === null || typeof auths !== 'object') return undefined;
  for (const [key, entry] of Object.entries(auths as Record<string, unknown>)) {
    if (normalizeKey(key) !== registry) continue;
    const e = entry as { auth?: unknown; username?: unknown; password?: unknown } | null;
    if (typeof e?.auth === 'string' && e.auth !== '') {
      const decoded = Buffer.from(e.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon <= 0) throw new AirlockError('E_USAGE', `${path}: the auth entry for ${key} is not base64("user:password")`, { subject: path });
      return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1), source: path };
    }
    if (typeof e?.username === 'string' && typeof e.password === 'string') return { username: e.username, password: e.password, source: path };
  }
  return undefined;
}

export interface CredentialOptions {
  registry: string;
  user?: string | undefined;
  password?: string | undefined;
  env: Env;
  home?: string;
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
  files.push(join(env['DOCKER_CONFIG'] ?? join(home, '.docker'), 'config.json'));
  for (const file of files) {
    const found = await fromFile(file, options.registry.toLowerCase());
    if (found !== undefined) return found;
  }
  return undefined;
}
