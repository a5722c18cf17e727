/**
 * `npm run bench`: airlock next to the standard tools a user would otherwise use, on the same bytes,
 * in the same run, on this machine — so results are ratios, not absolute claims. It builds its own
 * data and serves it from the project's hub on loopback (LFS from a second host, like the Hub's CDN).
 *
 * Scenarios:
 *   model   — a model of BENCH_SIZE_MIB (default 2048) in four shards: export vs curl to disk, vs the
 *             manual curl + sha256sum + tar c routine, vs huggingface_hub snapshot_download; verify and
 *             import vs tar x + sha256sum -c + mv, vs openssl dgst -sha256 (the hashing limit) and
 *             cat > /dev/null (the read limit); peak RSS of every command.
 *   files   — a dataset of BENCH_FILES (default 2000) small files: per-file overhead of export/import.
 *   rss     — a BENCH_RSS_GIB (default 0 = skipped; the issue asks for 10) bundle: peak RSS of
 *             export/verify/import as bundles grow.
 *
 *   BENCH_REPS=3  repetitions (median reported); BENCH_DIR=…  data location (needs ~4× the size free)
 *   BENCH_OUT=bench/results/bench.json  where the JSON goes
 */
import { spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startHubServer, type HubFileInput, type HubServer } from '../test/support/hub-server.ts';
import { airlockBin, cleanEnv, repoRoot } from '../test/support/cli.ts';
import { venvPython } from '../test/support/python.ts';

const SIZE_MIB = Number(process.env['BENCH_SIZE_MIB'] ?? 2048);
const FILES = Number(process.env['BENCH_FILES'] ?? 2000);
const RSS_GIB = Number(process.env['BENCH_RSS_GIB'] ?? 0);
const REPS = Math.max(1, Number(process.env['BENCH_REPS'] ?? 3));
const OUT = process.env['BENCH_OUT'] ?? join(repoRoot, 'bench', 'results', 'bench.json');
const SHARDS = 4;
const MiB = 1024 * 1024;

interface Sample {
  seconds: number;
  maxRssMiB: number;
}
interface Row extends Sample {
  scenario: string;
  label: string;
  mib: number;
  mibPerSecond: number;
}

function timed(command: string, args: string[], env: Record<string, string> = {}): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-f', '%e %M', command, ...args], { env: cleanEnv(env), cwd: repoRoot, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const m = /^([\d.]+) (\d+)$/.exec(err.trim().split('\n').pop() ?? '');
      if (code !== 0 || !m) return reject(new Error(`${command} ${args.join(' ')} failed (${code}):\n${err.slice(-2000)}`));
      resolve({ seconds: Math.max(Number(m[1]), 0.01), maxRssMiB: Number(m[2]) / 1024 });
    });
  });
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

const rows: Row[] = [];
async function measure(scenario: string, label: string, mib: number, run: () => Promise<Sample>, before?: () => Promise<void>, reps = REPS): Promise<void> {
  const samples: Sample[] = [];
  for (let i = 0; i < reps; i++) {
    await before?.();
    samples.push(await run());
  }
  const seconds = median(samples.map((s) => s.seconds));
  rows.push({ scenario, label, mib, seconds, mibPerSecond: mib / seconds, maxRssMiB: Math.max(...samples.map((s) => s.maxRssMiB)) });
  process.stderr.write(`bench: ${scenario}: ${label}: ${seconds.toFixed(2)} s\n`);
}

/**
 * A valid safetensors file of exactly `bytes` bytes: a header naming one U8 tensor that covers the
 * rest, then random data — so the bench measures the default path, weight checks included.
 */
async function randomFile(path: string, bytes: number): Promise<void> {
  let header = '';
  let data = bytes;
  for (let i = 0; i < 3; i++) {
    const json = JSON.stringify({ __metadata__: { format: 'pt' }, w: { dtype: 'U8', shape: [data], data_offsets: [0, data] } });
    header = json + ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
    data = bytes - 8 - Buffer.byteLength(header);
  }
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(header)));
  const chunk = Buffer.alloc(4 * MiB);
  const fh = await open(path, 'w');
  await fh.write(Buffer.concat([length, Buffer.from(header)]));
  for (let written = 0; written < data; written += chunk.length) {
    randomFillSync(chunk);
    await fh.write(chunk, 0, Math.min(chunk.length, data - written));
  }
  await fh.close();
}

const fresh = (path: string) => async () => {
  await rm(path, { recursive: true, force: true });
  await mkdir(path, { recursive: true });
};
const airlock = (args: string[], env: Record<string, string> = {}) => timed(process.execPath, [airlockBin, ...args], env);

const dir = process.env['BENCH_DIR'] ?? (await mkdtemp(join(tmpdir(), 'airlock-bench-')));
await mkdir(dir, { recursive: true });
const hub: HubServer = await startHubServer();
const env = { HF_ENDPOINT: hub.endpoint };
try {
  const keys = join(dir, 'keys');
  await rm(keys, { recursive: true, force: true });
  await airlock(['keys', 'generate', '--user-id', 'Bench <bench@example.org>', '--out-dir', keys]);
  const key = join(keys, 'signer.key.asc');
  const pub = join(keys, 'signer.pub.asc');

  // ---- model: a sharded model, the common case -------------------------------------------------
  {
    const shardBytes = Math.floor((SIZE_MIB * MiB) / SHARDS);
    const files: HubFileInput[] = [{ path: 'config.json', data: '{"model_type": "llama"}\n' }];
    for (let s = 1; s <= SHARDS; s++) {
      const path = join(dir, `model-0000${s}-of-0000${SHARDS}.safetensors`);
      if (!existsSync(path)) await randomFile(path, shardBytes);
      files.push({ path: `model-0000${s}-of-0000${SHARDS}.safetensors`, fromFile: path });
    }
    await hub.addRepo({ id: 'bench/model', files });
    const mib = (shardBytes * SHARDS) / MiB;
    const bundle = join(dir, 'model.airlock.tar');
    await measure('model', 'airlock export', mib, () => airlock(['export', 'bench/model', '--sign-key', key, '-o', bundle, '--force'], env));

    const dl = join(dir, 'curl');
    const curlAll = files.map((f) => `curl -sfL -o '${dl}/${f.path}' '${hub.endpoint}/bench/model/resolve/main/${f.path}' || exit 1`).join('; ');
    await measure('model', 'curl (download to disk)', mib, () => timed('sh', ['-c', curlAll]), fresh(dl));
    await measure('model', 'manual: curl + sha256sum + tar c', mib,
      () => timed('sh', ['-c', `${curlAll}; cd '${dl}' && sha256sum * > SHA256SUMS && tar -cf '${join(dir, 'manual.tar')}' .`]), fresh(dl));
    if (existsSync(venvPython)) {
      const hfCache = join(dir, 'hf-download-cache');
      await measure('model', 'huggingface_hub snapshot_download', mib,
        () => timed(venvPython, ['-c', `from huggingface_hub import snapshot_download; snapshot_download('bench/model', cache_dir='${hfCache}')`],
          { ...env, HF_HUB_DISABLE_XET: '1', HF_HUB_DISABLE_TELEMETRY: '1', HF_HUB_DISABLE_PROGRESS_BARS: '1', HF_TOKEN_PATH: '/nonexistent' }),
        fresh(hfCache));
    } else {
      process.stderr.write('bench: no .venv — snapshot_download not measured (bash scripts/ensure-python.sh)\n');
    }

    await measure('model', 'airlock verify', mib, () => airlock(['verify', bundle, '--trusted-keys', pub, '--quiet']));
    const cache = join(dir, 'cache');
    await measure('model', 'airlock import', mib, () => airlock(['import', bundle, '--trusted-keys', pub, '--cache-dir', cache]), fresh(cache));
    const x = join(dir, 'extract');
    const target = join(dir, 'manual-target');
    await measure('model', 'tar x + sha256sum -c + mv', mib,
      () => timed('sh', ['-c', `tar -xf '${bundle}' -C '${x}' && cd '${x}' && sha256sum --quiet --strict -c SHA256SUMS && mv payload '${target}/'`]),
      async () => { await fresh(x)(); await fresh(target)(); });
    await measure('model', 'openssl dgst -sha256 (hash limit)', mib, () => timed('openssl', ['dgst', '-sha256', bundle]));
    await measure('model', 'cat > /dev/null (read limit)', mib, () => timed('sh', ['-c', `cat '${bundle}' > /dev/null`]));
    await rm(bundle, { force: true });
    await rm(cache, { recursive: true, force: true });
  }

  // ---- files: many small files, where per-file overhead shows ----------------------------------
  if (FILES > 0) {
    const files: HubFileInput[] = [];
    for (let i = 0; i < FILES; i++) files.push({ path: `data/shard-${String(Math.floor(i / 100)).padStart(3, '0')}/row-${i}.json`, data: `{"i": ${i}, "text": "${'x'.repeat(i % 512)}"}\n` });
    await hub.addRepo({ id: 'bench/many-files', type: 'dataset', files });
    const mib = files.reduce((n, f) => n + Buffer.byteLength(f.data as string), 0) / MiB;
    const bundle = join(dir, 'files.airlock.tar');
    await measure('files', 'airlock export', mib, () => airlock(['export', 'datasets/bench/many-files', '--sign-key', key, '-o', bundle, '--force'], env));
    const cache = join(dir, 'files-cache');
    await measure('files', 'airlock import', mib, () => airlock(['import', bundle, '--trusted-keys', pub, '--cache-dir', cache]), fresh(cache));
    // a 3 MiB bundle: what verify costs before the first payload byte (node start-up, openpgp, signature)
    await measure('files', 'airlock verify', mib, () => airlock(['verify', bundle, '--trusted-keys', pub, '--quiet']));
    await rm(bundle, { force: true });
    await rm(cache, { recursive: true, force: true });
  }

  // ---- rss: a big bundle, memory must stay flat -----------------------------------------------
  if (RSS_GIB > 0) {
    const bytes = Math.floor(RSS_GIB * 1024 * MiB);
    const path = join(dir, 'big.safetensors');
    if (!existsSync(path)) await randomFile(path, bytes);
    await hub.addRepo({ id: 'bench/big', files: [{ path: 'big.safetensors', fromFile: path }] });
    const mib = bytes / MiB;
    const bundle = join(dir, 'big.airlock.tar');
    const cache = join(dir, 'big-cache');
    await measure('rss', 'airlock export', mib, () => airlock(['export', 'bench/big', '--sign-key', key, '-o', bundle, '--force'], env), undefined, 1);
    await measure('rss', 'airlock verify', mib, () => airlock(['verify', bundle, '--trusted-keys', pub, '--quiet']), undefined, 1);
    await measure('rss', 'airlock import', mib, () => airlock(['import', bundle, '--trusted-keys', pub, '--cache-dir', cache]), fresh(cache), 1);
    await rm(bundle, { force: true });
    await rm(cache, { recursive: true, force: true });
  }

  const get = (scenario: string, label: string) => rows.find((r) => r.scenario === scenario && r.label === label);
  const ratio = (a: Row | undefined, b: Row | undefined) => (a && b ? a.mibPerSecond / b.mibPerSecond : null);
  const ratios: Record<string, number | null> = {
    'export / curl to disk': ratio(get('model', 'airlock export'), get('model', 'curl (download to disk)')),
    'export / manual curl+sha256sum+tar': ratio(get('model', 'airlock export'), get('model', 'manual: curl + sha256sum + tar c')),
    'export / snapshot_download': ratio(get('model', 'airlock export'), get('model', 'huggingface_hub snapshot_download')),
    'import / (tar x + sha256sum -c + mv)': ratio(get('model', 'airlock import'), get('model', 'tar x + sha256sum -c + mv')),
    'import / openssl dgst': ratio(get('model', 'airlock import'), get('model', 'openssl dgst -sha256 (hash limit)')),
    'verify / openssl dgst': ratio(get('model', 'airlock verify'), get('model', 'openssl dgst -sha256 (hash limit)')),
  };
  const perFile = {
    'export ms per file': get('files', 'airlock export') ? (get('files', 'airlock export')!.seconds * 1000) / FILES : null,
    'import ms per file': get('files', 'airlock import') ? (get('files', 'airlock import')!.seconds * 1000) / FILES : null,
    'import ms per file beyond verify': get('files', 'airlock import') && get('files', 'airlock verify') ? ((get('files', 'airlock import')!.seconds - get('files', 'airlock verify')!.seconds) * 1000) / FILES : null,
    'verify fixed cost ms (small bundle)': get('files', 'airlock verify') ? get('files', 'airlock verify')!.seconds * 1000 : null,
  };

  const w = (s: string) => process.stdout.write(s);
  w(`\nairlock bench — ${new Date().toISOString()} — median of ${REPS}; loopback hub; ${SIZE_MIB} MiB model in ${SHARDS} shards, ${FILES} small files${RSS_GIB ? `, ${RSS_GIB} GiB RSS run` : ''}\n\n`);
  w(`${'scenario'.padEnd(8)} ${'what'.padEnd(38)} ${'seconds'.padStart(8)} ${'MiB/s'.padStart(8)} ${'peak RSS MiB'.padStart(13)}\n`);
  for (const r of rows) {
    w(`${r.scenario.padEnd(8)} ${r.label.padEnd(38)} ${r.seconds.toFixed(2).padStart(8)} ${r.mibPerSecond.toFixed(0).padStart(8)} ${r.maxRssMiB.toFixed(0).padStart(13)}\n`);
  }
  w('\nratios (airlock / peer, speed; > 1 means airlock is faster)\n');
  for (const [k, v] of Object.entries(ratios)) w(`  ${k.padEnd(40)} ${v === null ? 'n/a' : `${v.toFixed(2)}×`}\n`);
  for (const [k, v] of Object.entries(perFile)) w(`  ${k.padEnd(40)} ${v === null ? 'n/a' : v.toFixed(2)}\n`);
  await mkdir(dirname(OUT), { recursive: true });
  await writeFile(OUT, `${JSON.stringify({ at: new Date().toISOString(), sizeMiB: SIZE_MIB, files: FILES, rssGiB: RSS_GIB, reps: REPS, rows, ratios, perFile }, null, 2)}\n`);
  w(`\nwritten to ${OUT}\n`);
} finally {
  await hub.close();
  if (!process.env['BENCH_DIR']) await rm(dir, { recursive: true, force: true });
}
