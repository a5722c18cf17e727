/** Runs `airlock serve` as a user would (the built CLI), on a free loopback port, and collects its access log. */
import { spawn, type ChildProcess } from 'node:child_process';
import { airlockBin, cleanEnv, repoRoot } from './cli.ts';

export interface ServeProcess {
  url: string;
  child: ChildProcess;
  /** Parsed access-log lines (stdout), in order. */
  access: Array<Record<string, unknown>>;
  stdout(): string;
  stderr(): string;
  /** SIGTERM, then the exit code. */
  stop(): Promise<number | null>;
  /** Resolves once the access log holds a line that satisfies `match` (synchronises on observable state). */
  waitForAccess(match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
}

export function startServe(args: readonly string[], env: Record<string, string | undefined> = {}): Promise<ServeProcess> {
  const child = spawn(process.execPath, [airlockBin, 'serve', '--listen', '127.0.0.1:0', ...args], { cwd: repoRoot, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const access: Array<Record<string, unknown>> = [];
  const waiters: Array<{ match: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }> = [];
  let partial = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    partial += d;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      try {
        const parsed = JSON.parse(line) as Record<string, unknown>;
        access.push(parsed);
        for (const w of [...waiters]) {
          if (w.match(parsed)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(parsed);
          }
        }
      } catch {
        // not a log line
      }
    }
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      const m = /export HF_ENDPOINT=(\S+)/.exec(err);
      if (m) {
        resolve({
          url: m[1]!,
          child,
          access,
          stdout: () => out,
          stderr: () => err,
          stop: async () => {
            if (child.exitCode === null) child.kill('SIGTERM');
            return exited;
          },
          waitForAccess: (match) => {
            const hit = access.find(match);
            if (hit) return Promise.resolve(hit);
            return new Promise((res) => waiters.push({ match, resolve: res }));
          },
        });
      }
    });
    void exited.then((code) => reject(new Error(`airlock serve exited (${code}) before listening:\n${err}`)));
  });
}
