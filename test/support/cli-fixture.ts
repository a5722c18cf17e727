/**
 * One real bundle for the CLI-contract tests: a test hub on loopback, a key pair from `airlock keys
 * generate`, and `airlock export` of a small loadable model — made the way a user makes them.
 */
import * as assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHubServer, type HubServer } from './hub-server.ts';
import { airlockBin, cleanEnv, repoRoot, runAirlock } from './cli.ts';
import { sampleModelFiles } from './sample-model.ts';

export interface CliFixture {
  dir: string;
  hub: HubServer;
  /** keys/signer.key.asc and keys/signer.pub.asc */
  keyDir: string;
  privateKey: string;
  publicKey: string;
  bundle: string;
  env: Record<string, string>;
  close(): Promise<void>;
}

export const REPO = 'acme/tiny-llm';

export async function makeCliFixture(prefix: string): Promise<CliFixture> {
  const dir = await mkdtemp(join(tmpdir(), `airlock-${prefix}-`));
  const hub = await startHubServer({});
  await hub.addRepo({ id: REPO, files: sampleModelFiles() });
  const keyDir = join(dir, 'keys');
  const gen = await runAirlock(['keys', 'generate', '--user-id', 'ML Platform <mlops@example.org>', '--out-dir', keyDir]);
  assert.equal(gen.code, 0, gen.stderr);
  const env = { HF_ENDPOINT: hub.endpoint };
  const bundle = join(dir, 'tiny.airlock.tar');
  const exp = await runAirlock(['export', REPO, '--sign-key', join(keyDir, 'signer.key.asc'), '-o', bundle], { env });
  assert.equal(exp.code, 0, exp.stderr);
  return {
    dir,
    hub,
    keyDir,
    privateKey: join(keyDir, 'signer.key.asc'),
    publicKey: join(keyDir, 'signer.pub.asc'),
    bundle,
    env,
    close: async () => {
      await hub.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Spawns the CLI with the given stdio (fds, 'pipe', 'ignore'), as a user's shell would. */
export function spawnAirlock(args: readonly string[], stdio: Array<number | 'pipe' | 'ignore'>, env: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, [airlockBin, ...args], { cwd: repoRoot, env: cleanEnv(env), stdio });
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Collects whatever of stdout/stderr is piped, and the exit. */
export function exited(child: ChildProcess): Promise<Exit> {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** The repo folders an hf cache holds (models--org--name), ignoring .locks. */
export async function cachedRepos(cacheDir: string): Promise<string[]> {
  const names = await readdir(cacheDir).catch(() => [] as string[]);
  return names.filter((n) => n !== '.locks').sort();
}

/** The snapshot file of the imported model, proving the import committed. */
export async function importedConfig(cacheDir: string): Promise<string> {
  const snapshots = join(cacheDir, 'models--acme--tiny-llm', 'snapshots');
  const [commit] = await readdir(snapshots);
  return readFile(join(snapshots, commit!, 'config.json'), 'utf8');
}
