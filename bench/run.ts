/**
 * `npm run bench`: the round trip on a generated model (default 1 GiB in four shards) served by the
 * project's hub on loopback. Measures airlock export / verify / import (wall time, MiB/s, peak RSS via
 * GNU time) and, in the same run, the standard tools a user would otherwise use on the same bytes, so
 * the numbers are ratios on this machine rather than absolute claims.
 *
 *   BENCH_SIZE_MIB=1024  total model size (split into 4 shards)
 *   BENCH_REPS=3         repetitions per measurement (median reported)
 *   BENCH_DIR=/tmp/…     where to put the data (needs ~4× the size free)
 */
import { spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile, open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHubServer } from '../test/support/hub-server.ts';
import { airlockBin, cleanEnv, repoRoot } from '../test/support/cli.ts';

const SIZE_MIB = Number(process.env['BENCH_SIZE_MIB'] ?? 1024);
const REPS = Number(process.env['BENCH_REPS'] ?? 3);
const SHARDS = 4;

interface Sample {
  seconds: number;
  maxRssMiB: number;
}

function timed(command: string, args: string[], env: Record<string, string> = {}, cwd?: string): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-f', '%e %M', command, ...args], { env: cleanEnv(env), cwd: cwd ?? repoRoot, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const last = err.trim().split('\n').pop() ?? '';
      const m = /^([\d.]+) (\d+)$/.exec(last);
      if (code !== 0 || !m) return reject(new Error(`${command} ${args.join(' ')} failed (${code}):\n${err}`));
      resolve({ seconds: Number(m[1]), maxRssMiB: Number(m[2]) / 1024 });
    });
  });
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function measure(label: string, run: () => Promise<Sample>, before?: () => Promise<void>): Promise<Sample & { label: string }> {
  const samples: Sample[] = [];
  for (let i = 0; i < REPS; i++) {
    await before?.();
    samples.push(await run());
  }
  return { label, seconds: median(samples.map((s) => s.seconds)), maxRssMiB: Math.max(...samples.map((s) => s.maxRssMiB)) };
}

const dir = process.env['BENCH_DIR'] ?? (await mkdtemp(join(tmpdir(), 'airlock-bench-')));
await mkdir(dir, { recursive: true });
const hub = await startHubServer();
try {
  process.stderr.write(`bench: generating ${SIZE_MIB} MiB in ${SHARDS} shards under ${dir}\n`);
  const shardBytes = Math.floor((SIZE_MIB * 1024 * 1024) / SHARDS);
  const files: Array<{ path: string; fromFile?: string; data?: string }> = [];
  const chunk = Buffer.alloc(4 * 1024 * 1024);
  for (let s = 1; s <= SHARDS; s++) {
    const name = `model-0000${s}-of-0000${SHARDS}.safetensors`;
    const path = join(dir, name);
    const fh = await open(path, 'w');
    for (let written = 0; written < shardBytes; written += chunk.length) {
      randomFillSync(chunk);
      await fh.write(chunk, 0, Math.min(chunk.length, shardBytes - written));
    }
    await fh.close();
    files.push({ path: name, fromFile: path });
  }
  files.push({ path: 'config.json', data: '{"model_type": "llama"}\n' });
  await hub.addRepo({ id: 'bench/model', files });
  const totalMiB = (shardBytes * SHARDS) / 1024 / 1024;

  const keys = join(dir, 'keys');
  await rm(keys, { recursive: true, force: true });
  await timed(process.execPath, [airlockBin, 'keys', 'generate', '--user-id', 'Bench <bench@example.org>', '--out-dir', keys]);
  const bundle = join(dir, 'bench.airlock.tar');
  const cache = join(dir, 'cache');
  const env = { HF_ENDPOINT: hub.endpoint };
  const pub = join(keys, 'signer.pub.asc');

  const results = [];
  results.push(
    await measure('airlock export', () =>
      timed(process.execPath, [airlockBin, 'export', 'bench/model', '--sign-key', join(keys, 'signer.key.asc'), '-o', bundle, '--force'], env),
    ),
  );
  const urls = files.map((f) => `${hub.endpoint}/bench/model/resolve/main/${f.path}`);
  const dl = join(dir, 'curl-download');
  const fresh = async () => {
    await rm(dl, { recursive: true, force: true });
    await mkdir(dl);
  };
  const curlAll = urls.map((u, i) => `curl -sfL -o '${dl}/${files[i]!.path}' '${u}' || exit 1`).join('; ');
  // what export replaces for users: the same files downloaded to disk, by curl, one after another
  results.push(await measure('curl (download to disk)', () => timed('sh', ['-c', curlAll]), fresh));
  // …and the manual routine: download, hash, pack into one tar
  results.push(
    await measure(
      'manual: curl + sha256sum + tar c',
      () => timed('sh', ['-c', `${curlAll}; cd '${dl}' && sha256sum * > SHA256SUMS && tar -cf '${join(dir, 'manual.tar')}' .`]),
      fresh,
    ),
  );
  results.push(await measure('airlock verify', () => timed(process.execPath, [airlockBin, 'verify', bundle, '--trusted-keys', pub])));
  results.push(
    await measure(
      'airlock import',
      () => timed(process.execPath, [airlockBin, 'import', bundle, '--trusted-keys', pub, '--cache-dir', cache]),
      () => rm(cache, { recursive: true, force: true }),
    ),
  );
  const extract = join(dir, 'extract');
  results.push(
    await measure(
      'tar x + sha256sum -c',
      () => timed('sh', ['-c', `tar -xf '${bundle}' -C '${extract}' && cd '${extract}' && sha256sum --quiet --strict -c SHA256SUMS`]),
      async () => {
        await rm(extract, { recursive: true, force: true });
        await mkdir(extract);
      },
    ),
  );
  results.push(await measure('openssl dgst -sha256 (hash limit)', () => timed('openssl', ['dgst', '-sha256', bundle])));
  results.push(await measure('cat > /dev/null (read limit)', () => timed('sh', ['-c', `cat '${bundle}' > /dev/null`])));

  const rows = results.map((r) => ({ ...r, mibPerSecond: totalMiB / r.seconds }));
  const by = (label: string) => rows.find((r) => r.label === label)!;
  const ratios = {
    'export / curl to disk (speed)': by('airlock export').mibPerSecond / by('curl (download to disk)').mibPerSecond,
    'export / manual curl+sha256sum+tar (speed)': by('airlock export').mibPerSecond / by('manual: curl + sha256sum + tar c').mibPerSecond,
    'import / (tar x + sha256sum -c) (speed)': by('airlock import').mibPerSecond / by('tar x + sha256sum -c').mibPerSecond,
    'verify / openssl dgst (speed)': by('airlock verify').mibPerSecond / by('openssl dgst -sha256 (hash limit)').mibPerSecond,
  };
  process.stdout.write(`\nmodel: ${totalMiB.toFixed(0)} MiB in ${SHARDS} shards; median of ${REPS}; loopback hub; ${new Date().toISOString()}\n\n`);
  process.stdout.write(`${'what'.padEnd(36)} ${'seconds'.padStart(8)} ${'MiB/s'.padStart(8)} ${'peak RSS MiB'.padStart(13)}\n`);
  for (const r of rows) {
    process.stdout.write(`${r.label.padEnd(36)} ${r.seconds.toFixed(2).padStart(8)} ${r.mibPerSecond.toFixed(0).padStart(8)} ${r.maxRssMiB.toFixed(0).padStart(13)}\n`);
  }
  process.stdout.write('\n');
  for (const [k, v] of Object.entries(ratios)) process.stdout.write(`${k.padEnd(44)} ${v.toFixed(2)}×\n`);
  await mkdir(join(repoRoot, 'bench', 'results'), { recursive: true });
  const out = join(repoRoot, 'bench', 'results', 'roundtrip.json');
  await writeFile(out, `${JSON.stringify({ sizeMiB: totalMiB, reps: REPS, rows, ratios, at: new Date().toISOString() }, null, 2)}\n`);
  process.stdout.write(`\nwritten to ${out}\n`);
} finally {
  await hub.close();
  if (!process.env['BENCH_DIR']) await rm(dir, { recursive: true, force: true });
}
