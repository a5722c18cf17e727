/**
 * Docker credential helpers (the docker-credential-helpers protocol, as docker, podman/skopeo, oras and
 * crane speak it): `docker-credential-<name> get`, the server address (`host[:port]`) on stdin, and on
 * stdout `{"ServerURL","Username","Secret"}`. A helper that exits non-zero saying "credentials not found"
 * has none for that server; a `Username` of `<token>` means `Secret` is an identity token (an OAuth2
 * refresh token for the Bearer token flow), not a password.
 *
 * Errors name the helper and where it was configured, never the secret: the helper's output is shown
 * only when it failed (its error text), never when it answered.
 */
import { spawn } from 'node:child_process';
import { AirlockError } from '../errors.js';

/** What a helper answered: nothing for this server, or a user and password, or an identity token. */
export type HelperAnswer = { kind: 'none' } | { kind: 'password'; username: string; password: string } | { kind: 'identity-token'; token: string };

export interface HelperRequest {
  /** The suffix after `docker-credential-` (`pass`, `secretservice`, `ecr-login`, …). */
  name: string;
  /** `host[:port]`, written on the helper's stdin. */
  serverUrl: string;
  /** Where the helper was named (`credHelpers in FILE`, `credsStore in FILE`), for messages. */
  configuredIn: string;
  /** The environment the helper runs with (PATH finds it). */
  env: Readonly<Record<string, string | undefined>>;
  timeoutMs: number;
}

const MAX_OUTPUT = 64 * 1024;

function helperError(program: string, configuredIn: string, what: string, hint: string): AirlockError {
  return new AirlockError('E_AUTH', `credential helper ${program} (${configuredIn}) ${what}`, { subject: program, hint });
}

/** The first line of a failed helper's own error text, capped (it is not the secret: the helper failed). */
function firstLine(text: string): string {
  const line = text.trim().split('\n')[0] ?? '';
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

export async function runCredentialHelper(request: HelperRequest): Promise<HelperAnswer> {
  const program = `docker-credential-${request.name}`;
  const { configuredIn } = request;
  // the name becomes a program looked up on PATH: never a path, never options
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(request.name)) {
    throw helperError(program, configuredIn, 'is not a valid helper name', `a credential helper is named by the suffix of its program (e.g. "pass" for docker-credential-pass); fix ${configuredIn}`);
  }
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(request.env)) if (value !== undefined) env[key] = value;
  const outcome = await new Promise<{ code: number | null; stdout: string; stderr: string; error?: NodeJS.ErrnoException; timedOut: boolean }>((resolve) => {
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let settled = false;
    const child = spawn(program, ['get'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, request.timeoutMs);
    const finish = (result: { code: number | null; error?: NodeJS.ErrnoException }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...result, stdout, stderr, timedOut });
    };
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < MAX_OUTPUT) stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < MAX_OUTPUT) stderr += d;
    });
    child.on('error', (error: NodeJS.ErrnoException) => finish({ code: null, error }));
    child.on('close', (code) => finish({ code }));
    // a helper that exits without reading stdin must not fail the write (EPIPE)
    child.stdin.on('error', () => undefined);
    child.stdin.end(request.serverUrl);
  });
  if (outcome.error !== undefined) {
    if (outcome.error.code === 'ENOENT') {
      throw helperError(program, configuredIn, 'is not installed (not found on PATH)', `install ${program} on this machine, or remove that entry from ${configuredIn}`);
    }
    throw helperError(program, configuredIn, `could not be run: ${outcome.error.message}`, `check that ${program} is executable`);
  }
  if (outcome.timedOut) {
    throw helperError(program, configuredIn, `did not answer within ${Math.round(request.timeoutMs / 1000)} s`, `run \`echo ${request.serverUrl} | ${program} get\` to see what it waits for (a locked keychain, a prompt)`);
  }
  if (outcome.code !== 0) {
    // the protocol's "none": docker-credential-helpers' ErrCredentialsNotFound message
    if (/^credentials not found/i.test(outcome.stdout.trim())) return { kind: 'none' };
    const said = firstLine(outcome.stdout) || firstLine(outcome.stderr);
    throw helperError(program, configuredIn, `failed (exit ${outcome.code})${said === '' ? '' : `: ${said}`}`, `run \`echo ${request.serverUrl} | ${program} get\` to see why (log in again with it, or unlock its store)`);
  }
  let parsed: { Username?: unknown; Secret?: unknown };
  try {
    parsed = JSON.parse(outcome.stdout) as typeof parsed;
  } catch {
    // its output is not shown: it may hold the secret
    throw helperError(program, configuredIn, 'answered something that is not the helper protocol\'s JSON', `check that ${program} is a docker credential helper`);
  }
  const secret = typeof parsed?.Secret === 'string' ? parsed.Secret : '';
  const username = typeof parsed?.Username === 'string' ? parsed.Username : '';
  if (secret === '') return { kind: 'none' };
  if (username === '<token>') return { kind: 'identity-token', token: secret };
  return { kind: 'password', username, password: secret };
}
