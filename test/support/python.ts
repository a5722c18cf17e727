/**
 * Runs snippets with the project's Python venv (real huggingface_hub / transformers), hermetically: no
 * Hub-related variable of the developer's environment leaks in, only what the caller passes.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const repoRoot: string = fileURLToPath(new URL('../../', import.meta.url));
export const venvPython: string = fileURLToPath(new URL('../../.venv/bin/python', import.meta.url));

export interface PythonResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Variables that would change what huggingface_hub / transformers do: dropped unless the caller sets them. */
const AMBIENT_PREFIXES = ['HF_', 'HUGGINGFACE_', 'HUGGING_FACE_', 'TRANSFORMERS_', 'PYTORCH_TRANSFORMERS_', 'PYTORCH_PRETRAINED_'];
const LOOPBACK = '127.0.0.1,127.0.0.2,localhost,::1';

/** Throws (never skips) when the venv is missing, with the command that creates it. */
export function assertVenv(): void {
  if (!existsSync(venvPython)) {
    throw new Error(`Python venv not found at ${venvPython}: run \`bash scripts/ensure-python.sh\` from ${repoRoot}`);
  }
}

/**
 * `.venv/bin/python -c code`. `env` is merged over a cleaned process.env (an `undefined` value unsets).
 * Unless the caller says otherwise: no token file (HF_TOKEN_PATH points nowhere), no telemetry, and
 * loopback bypasses any proxy.
 */
export async function runPython(
  code: string,
  env: Record<string, string | undefined>,
  options: { timeoutMs?: number } = {},
): Promise<PythonResult> {
  assertVenv();
  const merged: Record<string, string | undefined> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!AMBIENT_PREFIXES.some((p) => key.toUpperCase().startsWith(p))) merged[key] = value;
  }
  merged['HF_TOKEN_PATH'] = '/nonexistent/model-airlock-test/token';
  merged['HF_HUB_DISABLE_TELEMETRY'] = '1';
  merged['PYTHONUNBUFFERED'] = '1';
  merged['PYTHONDONTWRITEBYTECODE'] = '1';
  for (const key of ['NO_PROXY', 'no_proxy']) merged[key] = merged[key] ? `${merged[key]},${LOOPBACK}` : LOOPBACK;
  Object.assign(merged, env);
  const childEnv: Record<string, string> = {};
  for (const [key, value] of Object.entries(merged)) if (value !== undefined) childEnv[key] = value;

  const timeoutMs = options.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const child = spawn(venvPython, ['-c', code], { env: childEnv, cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + (signal !== null ? `\n[killed by ${signal} after ${timeoutMs} ms]` : ''),
        code: code ?? -1,
      });
    });
  });
}
