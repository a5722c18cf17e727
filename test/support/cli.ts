/** Runs the built CLI (bin/airlock.js → dist/) as a user would, capturing its output and exit code. */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
export const airlockBin = fileURLToPath(new URL('../../bin/airlock.js', import.meta.url));

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Environment with nothing from the developer's own hub setup leaking into a test. */
export function cleanEnv(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined) continue;
    if (/^(HF_|HUGGING_FACE_|HUGGINGFACE_|TRANSFORMERS_|XDG_CACHE_HOME$|HTTPS?_PROXY$|https?_proxy$)/.test(k)) continue;
    env[k] = v;
  }
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

function capture(command: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

export function runAirlock(args: readonly string[], options: { env?: Record<string, string | undefined>; cwd?: string } = {}): Promise<RunResult> {
  return capture(process.execPath, [airlockBin, ...args], options.cwd ?? repoRoot, cleanEnv(options.env));
}

/** Runs any command (tar, gpg, sha256sum…) the same way. */
export function run(command: string, args: readonly string[], options: { env?: Record<string, string>; cwd?: string } = {}): Promise<RunResult> {
  return capture(command, args, options.cwd ?? repoRoot, { ...process.env, ...options.env });
}

/** Runs the CLI on a real pseudo-terminal (util-linux script), returning everything the terminal got. */
export async function runAirlockOnTerminal(args: readonly string[]): Promise<{ code: number; text: string }> {
  const command = ['node', airlockBin, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = await run('script', ['-qec', command, '/dev/null'], { env: { COLUMNS: '120' } });
  return { code: r.code, text: r.stdout };
}
