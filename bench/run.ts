/**
 * `npm run bench`: airlock next to the standard tools a user would otherwise use, on the same bytes,
 * in the same run, on this machine — so results are ratios, not absolute claims. It builds its own
 * data and serves it from the project's hub on loopback (LFS from a second host, like the Hub's CDN).
 *
 * Scenarios:
 *   model   — a model of BENCH_SIZE_MIB (default 2048) in four shards: export vs curl to disk, vs the
 *             manual curl + sha256sum + tar c routine, vs huggingface_hub snapshot_download; verify and
 *             import vs tar x + sha256sum -c + mv, vs openssl dgst -sha256 (the hashing limit),
 *             cat > /dev/null (the read limit) and dd conv=fsync (the write limit, for import); peak
 *             RSS of every command. Every timed run starts after `sync`. Also one large file alone
 *             (the first shard as repo bench/one-file): export vs a single-stream curl of it. Every
 *             download-side command (export, curl, manual routine, snapshot_download) also reports its
 *             peak disk footprint: bytes allocated under the directories it writes to, sampled. The same
 *             model is also exported from the project's test ModelScope (`--source modelscope`), so the
 *             peak disk of both sources shows side by side.
 *             peak disk footprint: bytes allocated under the directories it writes to, sampled.
 *             OCI (docs/oci.md): `airlock publish` of the bundle to a local docker-registry vs `curl -T`
 *             of the same shards (4 in parallel, like publish), and `airlock pull` into a fresh cache vs
 *             curl downloads of the blobs and the dd write limit (and the standard tools doing pull's
 *             whole job: curl | tee | sha256sum with the digest checked, then sync; and the least any Node
 *             program does for it, bench/pull-floor.ts).
 *   serve   — (BENCH_SERVE=0 skips) the imported model's first shard served to 1 and 16 concurrent curl
 *             clients by `airlock serve --workers <cores/2>` (which hashes every byte it sends) and by Debian's nginx over
 *             the same blob files on loopback, in the same run; the servers' peak RSS (VmHWM).
 *   files   — a dataset of BENCH_FILES (default 2000) small files: per-file overhead of export/import,
 *             and of publish/pull (one layer per file) against the local registry, with the registry's
 *             own floor (POST and PUT per blob from a bare client; and HEAD, POST, PUT as most clients
 *             do) measured in turn with publish.
 *   rss     — a BENCH_RSS_GIB (default 0 = skipped; the issue asks for 10) bundle: peak RSS of
 *             export/verify/import as bundles grow.
 *   pickle  — a torch.save zip checkpoint of BENCH_TORCH_MIB (default BENCH_SIZE_MIB) written by the
 *             venv's torch: import with the content analysis on vs off (issue 17: within 5 %).
 *
 *   BENCH_SCENARIOS=model,files,rss,pickle  which scenarios run (default all)
 *   BENCH_ROWS=export,import,serve,oci  which rows of the model scenario run (default all; the
 *             bundle and the imported cache that serve/oci need are still made, unmeasured)
 *   BENCH_SERVE=0  same as leaving serve out of BENCH_ROWS
 *
 *   BENCH_REPS=3  repetitions (median reported); BENCH_DIR=…  data location (needs ~4× the size free)
 *   BENCH_OUT=bench/results/bench.json  where the JSON goes
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { randomFillSync } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startHubServer, type HubFileInput, type HubServer } from '../test/support/hub-server.ts';
import { fileOnDisk, startModelScopeServer, type ModelScopeServer } from '../test/support/modelscope-server.ts';
import { airlockBin, cleanEnv, repoRoot } from '../test/support/cli.ts';
import { venvPython } from '../test/support/python.ts';
import { startRegistry } from '../test/support/registry.ts';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { manyFiles } from './many-files.ts';

const SIZE_MIB = Number(process.env['BENCH_SIZE_MIB'] ?? 2048);
const FILES = Number(process.env['BENCH_FILES'] ?? 2000);
const RSS_GIB = Number(process.env['BENCH_RSS_GIB'] ?? 0);
const REPS = Math.max(1, Number(process.env['BENCH_REPS'] ?? 3));
const OUT = process.env['BENCH_OUT'] ?? join(repoRoot, 'bench', 'results', 'bench.json');
const TORCH_MIB = Number(process.env['BENCH_TORCH_MIB'] ?? SIZE_MIB);
const SCENARIOS = new Set((process.env['BENCH_SCENARIOS'] ?? 'model,files,rss,pickle').split(',').map((s) => s.trim()));
const want = (scenario: string): boolean => SCENARIOS.has(scenario);
const MODEL_ROWS = new Set((process.env['BENCH_ROWS'] ?? 'export,import,serve,oci').split(',').map((s) => s.trim()));
if (process.env['BENCH_SERVE'] === '0') MODEL_ROWS.delete('serve');
const wantRows = (group: string): boolean => MODEL_ROWS.has(group);
/**
 * A shell script that runs `commands` at once and fails when any of them fails. (`$(jobs -p)` runs in a
 * subshell that has no jobs, so `wait` would be skipped: the pids are collected as they start.)
 */
const inParallelSh = (commands: string[]): string =>
  `pids=''\n${commands.map((c) => `( ${c} ) & pids="$pids $!"`).join('\n')}\nfail=0; for p in $pids; do wait $p || fail=1; done; exit $fail`;
const SHARDS = 4;
const PULL_FLOOR = 'Node floor: raw socket, 2 hash threads, write, fsync (bench/pull-floor.ts; no checks, start not counted)';
const MiB = 1024 * 1024;
/** How often the disk sampler walks a command's directories (plus the walk itself). */
const DISK_SAMPLE_MS = 25;

interface Sample {
  seconds: number;
  maxRssMiB: number;
  /** Peak bytes allocated under the command's output directories, when sampled (see `withPeakDisk`). */
  peakDiskMiB?: number;
}
interface Row {
  scenario: string;
  label: string;
  mib: number;
  seconds: number;
  mibPerSecond: number;
  maxRssMiB: number;
  /** Largest peak over the repetitions; null for commands whose disk use is not sampled. */
  peakDiskMiB: number | null;
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

/**
 * Bytes allocated on disk under `path`, counted the way `du` does (st_blocks × 512, links not
 * followed), so sparse or preallocated files count for what they really take. Commands create, rename
 * and delete files while we walk: an entry that vanishes between readdir and lstat counts as nothing.
 */
async function allocatedBytes(path: string): Promise<number> {
  const gone = (e: unknown) => (e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR';
  let bytes: number;
  let isDirectory: boolean;
  try {
    const info = await lstat(path);
    bytes = info.blocks * 512;
    isDirectory = info.isDirectory();
  } catch (e) {
    if (gone(e)) return 0;
    throw e;
  }
  if (!isDirectory) return bytes;
  let names: string[];
  try {
    names = await readdir(path);
  } catch (e) {
    if (gone(e)) return bytes;
    throw e;
  }
  for (const n of await Promise.all(names.map((name) => allocatedBytes(join(path, name))))) bytes += n;
  return bytes;
}

/**
 * Runs a measured command while one async loop samples, every ~DISK_SAMPLE_MS, the bytes allocated
 * under `roots` (the directories the command writes to, emptied beforehand), and records the peak.
 * The command runs in its own process, so the sampler costs it only a little CPU, never event-loop
 * time. The loop stops when the process exits; one last sample then counts what it left behind (the
 * bundle), which was on disk at exit too — so a command shorter than one interval still has a peak.
 */
async function withPeakDisk(roots: string[], run: () => Promise<Sample>): Promise<Sample> {
  let peak = 0;
  let running = true;
  const sample = async () => {
    const sizes = await Promise.all(roots.map((root) => allocatedBytes(root)));
    peak = Math.max(peak, sizes.reduce((a, b) => a + b, 0));
  };
  const sampler = (async () => {
    while (running) {
      await sample();
      await sleep(DISK_SAMPLE_MS);
    }
  })();
  const [result] = await Promise.all([run().finally(() => (running = false)), sampler]);
  await sample();
  return { ...result, peakDiskMiB: peak / MiB };
}


/** Peak resident set of a running process (VmHWM), in MiB; 0 when it cannot be read. */
async function peakRssMiB(pid: number | undefined): Promise<number> {
  if (pid === undefined) return 0;
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const m = /VmHWM:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) / 1024 : 0;
}

/** The pids of a process's children (the serve workers). */
function childPids(pid: number | undefined): number[] {
  if (pid === undefined) return [];
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number).concat(pid);
  } catch {
    return [pid];
  }
}

/** Starts a long-running server and waits until `ready(stderr+stdout)` matches. */
function startDaemon(command: string, args: string[], ready: RegExp): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: cleanEnv({}), cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    const on = (d: Buffer) => {
      text += d.toString('utf8');
      const m = ready.exec(text);
      if (m) resolve({ child, match: m });
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`${command} exited (${code}) before it was ready:\n${text.slice(-2000)}`)));
  });
}

/**
 * The serve rows: one large blob to 1 and 16 concurrent curl clients, from `airlock serve` and from
 * nginx serving the same files (sendfile, no hashing: the ceiling). Throughput counts every client's bytes.
 */
async function serveBench(cache: string, fileName: string, fileMib: number, workDir: string): Promise<void> {
  const commit = (await readFile(join(cache, 'models--bench--model', 'refs', 'main'), 'utf8')).trim();
  // one worker per two cores: each worker is two busy threads (sockets; reading and hashing), and
  // concurrent downloads of one file cost one hash pass per worker (docs/serve.md)
  const workers = Math.max(1, Math.floor(cpus().length / 2));
  const airlockServe = await startDaemon(process.execPath, [airlockBin, 'serve', '--cache-dir', cache, '--listen', '127.0.0.1:0', '--access-log', '/dev/null', '--workers', String(workers)], /export HF_ENDPOINT=(\S+)/);
  await mkdir(workDir, { recursive: true });
  const conf = join(workDir, 'nginx.conf');
  // a port that was free a moment ago (nginx cannot be told to pick one)
  const nginxPort = await new Promise<number>((resolve, reject) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
    probe.on('error', reject);
  });
  await writeFile(conf, [
    'daemon off;', 'user root;', 'worker_processes auto;', `pid ${join(workDir, 'nginx.pid')};`, `error_log ${join(workDir, 'nginx-error.log')};`,
    'events { worker_connections 256; }',
    `http { access_log off; sendfile on; tcp_nopush on; types { } default_type application/octet-stream;`,
    `  client_body_temp_path ${workDir}; proxy_temp_path ${workDir}; fastcgi_temp_path ${workDir}; uwsgi_temp_path ${workDir}; scgi_temp_path ${workDir};`,
    `  server { listen 127.0.0.1:${nginxPort}; root ${cache}; } }`, '',
  ].join('\n'));
  const nginx = spawn('/usr/sbin/nginx', ['-c', conf, '-p', workDir], { stdio: 'ignore' });
  const nginxUrl = `http://127.0.0.1:${nginxPort}/models--bench--model/snapshots/${commit}/${fileName}`;
  try {
    // nginx has no "ready" line: wait until it answers
    for (let i = 0; i < 200; i++) {
      const ok = await fetch(nginxUrl, { method: 'HEAD' }).then((r) => r.ok, () => false);
      if (ok) break;
      await sleep(50);
    }
    const serveUrl = `${airlockServe.match[1]}/bench/model/resolve/main/${fileName}`;
    // both servers start from the same warm page cache (else the first one pays the disk read)
    const blob = join(cache, 'models--bench--model', 'snapshots', commit, fileName);
    const warm = () => timed('sh', ['-c', `cat '${blob}' > /dev/null`]).then(() => undefined);
    for (const clients of [1, 16]) {
      const load = (url: string) => () => timed('sh', ['-c', `seq ${clients} | xargs -P ${clients} -I{} curl -sf --noproxy '*' -o /dev/null '${url}'`]);
      const plural = clients > 1 ? 's' : '';
      await measureInTurn('serve', [
        { label: `airlock serve, ${clients} client${plural}`, mib: fileMib * clients, run: load(serveUrl), before: warm },
        { label: `nginx, ${clients} client${plural}`, mib: fileMib * clients, run: load(nginxUrl), before: warm },
      ]);
      // per process, the high-water mark: the largest worker (each serves its share of the clients)
      rows[rows.length - 2]!.maxRssMiB = Math.max(...(await Promise.all(childPids(airlockServe.child.pid).map(peakRssMiB))));
      const workers = (await readFile(join(workDir, 'nginx.pid'), 'utf8').catch(() => '')).trim();
      rows[rows.length - 1]!.maxRssMiB = await peakRssMiB(workers ? Number(workers) : nginx.pid);
    }
  } finally {
    airlockServe.child.kill('SIGTERM');
    nginx.kill('SIGQUIT');
  }
}

const rows: Row[] = [];
/** `sync`: waits until every dirty page on the machine is written back (outside any timed run). */
function settleDisk(): Promise<void> {
  return new Promise((resolve, reject) => {
    spawn('sync', { stdio: 'ignore' }).on('error', reject).on('close', () => resolve());
  });
}

async function measure(scenario: string, label: string, mib: number, run: () => Promise<Sample>, before?: () => Promise<void>, reps = REPS): Promise<void> {
  const samples: Sample[] = [];
  for (let i = 0; i < reps; i++) {
    await before?.();
    // every command starts with nothing dirty in the page cache: otherwise one pays for the write-back
    // of what the one before it wrote (the data just generated, an export's bundle, an extraction)
    await settleDisk();
    samples.push(await run());
  }
  const seconds = median(samples.map((s) => s.seconds));
  const disk = samples.flatMap((s) => (s.peakDiskMiB === undefined ? [] : [s.peakDiskMiB]));
  rows.push({
    scenario, label, mib, seconds, mibPerSecond: mib / seconds,
    maxRssMiB: Math.max(...samples.map((s) => s.maxRssMiB)),
    peakDiskMiB: disk.length > 0 ? Math.max(...disk) : null,
  });
  process.stderr.write(`bench: ${scenario}: ${label}: ${seconds.toFixed(2)} s\n`);
}

interface Contestant {
  label: string;
  mib: number;
  run: () => Promise<Sample>;
  before?: () => Promise<void>;
}

/**
 * Measures several commands that are compared with each other IN TURN: rep 1 runs A, B, C; rep 2 runs
 * B, C, A; and so on. On a virtual machine whose speed drifts within a run (page-cache memory the host
 * has or has not backed yet, a neighbour's load), measuring all reps of A and then all of B puts the
 * drift into the ratio; taking turns spreads it over both sides. Rows come out in the given order.
 */
async function measureInTurn(scenario: string, contestants: Contestant[], reps = REPS): Promise<void> {
  const samples: Sample[][] = contestants.map(() => []);
  for (let i = 0; i < reps; i++) {
    for (let k = 0; k < contestants.length; k++) {
      const at = (i + k) % contestants.length;
      const c = contestants[at]!;
      await c.before?.();
      await settleDisk();
      samples[at]!.push(await c.run());
    }
  }
  contestants.forEach((c, at) => {
    const seconds = median(samples[at]!.map((x) => x.seconds));
    rows.push({ scenario, label: c.label, mib: c.mib, seconds, mibPerSecond: c.mib / seconds, maxRssMiB: Math.max(...samples[at]!.map((x) => x.maxRssMiB)), peakDiskMiB: null });
    process.stderr.write(`bench: ${scenario}: ${c.label}: ${seconds.toFixed(2)} s (${samples[at]!.map((x) => x.seconds.toFixed(2)).join(', ')})\n`);
  });
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
/**
 * `airlock export … -o <outDir>/<name>` with its work dir inside `outDir` too, so everything the export
 * writes — downloads, partial files, the bundle — lands in one directory that `fresh(outDir)` empties
 * before each repetition and the disk sampler (unless `sampleDisk` is false) watches.
 */
const exportInto = (outDir: string, name: string, args: string[], env: Record<string, string>, sampleDisk = true) => () => {
  const run = () => airlock(['export', ...args, '-o', join(outDir, name), '--work-dir', join(outDir, 'work')], env);
  return sampleDisk ? withPeakDisk([outDir], run) : run();
};

const dir = process.env['BENCH_DIR'] ?? (await mkdtemp(join(tmpdir(), 'airlock-bench-')));
await mkdir(dir, { recursive: true });
const hub: HubServer = await startHubServer();
const env = { HF_ENDPOINT: hub.endpoint };
const modelscope: ModelScopeServer = await startModelScopeServer();
try {
  const keys = join(dir, 'keys');
  await rm(keys, { recursive: true, force: true });
  await airlock(['keys', 'generate', '--user-id', 'Bench <bench@example.org>', '--out-dir', keys]);
  const key = join(keys, 'signer.key.asc');
  const pub = join(keys, 'signer.pub.asc');

  // ---- model: a sharded model, the common case -------------------------------------------------
  if (want('model')) {
    const shardBytes = Math.floor((SIZE_MIB * MiB) / SHARDS);
    const files: HubFileInput[] = [{ path: 'config.json', data: '{"model_type": "llama"}\n' }];
    for (let s = 1; s <= SHARDS; s++) {
      const path = join(dir, `model-0000${s}-of-0000${SHARDS}.safetensors`);
      if (!existsSync(path)) await randomFile(path, shardBytes);
      files.push({ path: `model-0000${s}-of-0000${SHARDS}.safetensors`, fromFile: path });
    }
    await hub.addRepo({ id: 'bench/model', files });
    const mib = (shardBytes * SHARDS) / MiB;
    // the bundle (and the export's work dir) in a directory of its own: its peak disk is all export's
    const out = join(dir, 'out-model');
    const bundle = join(out, 'model.airlock.tar');
    if (wantRows('export')) await measure('model', 'airlock export', mib, exportInto(out, 'model.airlock.tar', ['bench/model', '--sign-key', key], env), fresh(out));
    else await fresh(out)().then(exportInto(out, 'model.airlock.tar', ['bench/model', '--sign-key', key], env, false));
    // the same files from ModelScope (API + signed-URL CDN, streamed from disk): its own output directory
    if (wantRows('export')) {
      const msFiles = [];
      for (const f of files) msFiles.push({ path: f.path, data: f.fromFile === undefined ? (f.data ?? '') : await fileOnDisk(f.fromFile) });
      modelscope.addRepo({ id: 'bench/model', files: msFiles });
      const msOut = join(dir, 'out-modelscope');
      await measure('model', 'airlock export --source modelscope', mib,
        exportInto(msOut, 'model.airlock.tar', ['--source', 'modelscope', 'bench/model', '--sign-key', key], { MODELSCOPE_ENDPOINT: modelscope.endpoint }), fresh(msOut));
      await rm(msOut, { recursive: true, force: true });
    }

    if (wantRows('export')) {
    const dl = join(dir, 'curl');
    const curlAll = files.map((f) => `curl -sfL -o '${dl}/${f.path}' '${hub.endpoint}/bench/model/resolve/main/${f.path}' || exit 1`).join('; ');
    await measure('model', 'curl (download to disk)', mib, () => withPeakDisk([dl], () => timed('sh', ['-c', curlAll])), fresh(dl));
    // the manual routine's disk: the downloads plus the tar made from them (in a directory of its own)
    const manualOut = join(dir, 'out-manual');
    await measure('model', 'manual: curl + sha256sum + tar c', mib,
      () => withPeakDisk([dl, manualOut], () => timed('sh', ['-c', `${curlAll}; cd '${dl}' && sha256sum * > SHA256SUMS && tar -cf '${join(manualOut, 'manual.tar')}' .`])),
      async () => { await fresh(dl)(); await fresh(manualOut)(); });
    await rm(manualOut, { recursive: true, force: true });
    if (existsSync(venvPython)) {
      const hfCache = join(dir, 'hf-download-cache');
      await measure('model', 'huggingface_hub snapshot_download', mib,
        () => withPeakDisk([hfCache], () => timed(venvPython, ['-c', `from huggingface_hub import snapshot_download; snapshot_download('bench/model', cache_dir='${hfCache}')`],
          { ...env, HF_HUB_DISABLE_XET: '1', HF_HUB_DISABLE_TELEMETRY: '1', HF_HUB_DISABLE_PROGRESS_BARS: '1', HF_TOKEN_PATH: '/nonexistent' })),
        fresh(hfCache));
    } else {
      process.stderr.write('bench: no .venv — snapshot_download not measured (bash scripts/ensure-python.sh)\n');
    }

    // one large file alone (the first shard, served again as its own repo): export against one curl
    // stream, the network-bound limit for a single file (export's default is one connection per file)
    {
      const oneFile = files[1]!;
      await hub.addRepo({ id: 'bench/one-file', files: [{ path: 'model.safetensors', fromFile: oneFile.fromFile! }] });
      const oneMib = shardBytes / MiB;
      const oneOut = join(dir, 'out-one-file');
      await measure('model', 'airlock export (one large file)', oneMib,
        exportInto(oneOut, 'one-file.airlock.tar', ['bench/one-file', '--sign-key', key], env), fresh(oneOut));
      const oneDl = join(dir, 'curl-one-file');
      await measure('model', 'curl (one large file, single stream)', oneMib,
        () => withPeakDisk([oneDl], () => timed('curl', ['-sfL', '-o', join(oneDl, 'model.safetensors'), `${hub.endpoint}/bench/one-file/resolve/main/model.safetensors`])),
        fresh(oneDl));
      await rm(oneOut, { recursive: true, force: true });
      await rm(oneDl, { recursive: true, force: true });
    }
    }

    const cache = join(dir, 'cache');
    if (wantRows('import')) {
      await measure('model', 'airlock verify', mib, () => airlock(['verify', bundle, '--trusted-keys', pub, '--quiet']));
      await measure('model', 'airlock import', mib, () => airlock(['import', bundle, '--trusted-keys', pub, '--cache-dir', cache]), fresh(cache));
    } else if (wantRows('serve')) await fresh(cache)().then(() => airlock(['import', bundle, '--trusted-keys', pub, '--cache-dir', cache]));
    if (wantRows('serve')) await serveBench(cache, files[1]!.path, shardBytes / MiB, join(dir, 'serve-work'));
    if (wantRows('import')) {
    const x = join(dir, 'extract');
    const target = join(dir, 'manual-target');
    await measure('model', 'tar x + sha256sum -c + mv', mib,
      () => timed('sh', ['-c', `tar -xf '${bundle}' -C '${x}' && cd '${x}' && sha256sum --quiet --strict -c SHA256SUMS && mv payload '${target}/'`]),
      async () => { await fresh(x)(); await fresh(target)(); });
    await measure('model', 'openssl dgst -sha256 (hash limit)', mib, () => timed('openssl', ['dgst', '-sha256', bundle]));
    await measure('model', 'cat > /dev/null (read limit)', mib, () => timed('sh', ['-c', `cat '${bundle}' > /dev/null`]));
    }
    // import writes every byte once more and makes it durable before the commit: this is that floor
    const copy = join(dir, 'write-limit.tar');
    if (wantRows('import')) await measure('model', 'dd conv=fsync (write limit)', mib, () => timed('dd', [`if=${bundle}`, `of=${copy}`, 'bs=1M', 'conv=fsync', 'status=none']), () => rm(copy, { force: true }));
    await rm(copy, { force: true });

    // ---- OCI: publish / pull against a local registry (docs/oci.md) ------------------------------
    if (wantRows('oci')) {
      const registry = await startRegistry();
      try {
        const shards = files.slice(1).map((f) => ({ path: f.fromFile!, name: f.path }));
        const digests = await Promise.all(
          shards.map(async (f) => {
            const hash = createHash('sha256');
            for await (const chunk of createReadStream(f.path)) hash.update(chunk as Buffer);
            return `sha256:${hash.digest('hex')}`;
          }),
        );
        let round = 0;
        // a new repository prefix each time: the registry has no link to the blobs there, so every byte moves
        // the first push of these blobs writes them into the registry's storage; later ones (any client)
        // only link them: one untimed push first, so that cost lands on neither side
        await airlock(['publish', bundle, '--to', `oci://${registry.host}/p0`, '--trusted-keys', pub, '--plain-http']);
        await measureInTurn('model', [
          { label: 'airlock publish (OCI registry)', mib, run: () => airlock(['publish', bundle, '--to', `oci://${registry.host}/p${++round}`, '--trusted-keys', pub, '--plain-http']) },
          {
            label: 'curl -T (upload to the registry)',
            mib,
            run: () => {
              const repo = `curl${++round}`;
              const one = shards.map((f, i) =>
                `loc=$(curl -sf -D - -o /dev/null -X POST 'http://${registry.host}/v2/${repo}/blobs/uploads/' | tr -d '\\r' | sed -n 's/^[Ll]ocation: //p') && curl -sf -o /dev/null -T '${f.path}' -H 'Content-Type: application/octet-stream' "$loc&digest=${digests[i]}"`,
              );
              return timed('sh', ['-c', inParallelSh(one)]);
            },
          },
        ]);
        const pulled = join(dir, 'pull-cache');
        const blobs = join(dir, 'curl-blobs');
        const copy = join(dir, 'write-limit.tar');
        await measureInTurn('model', [
          { label: 'airlock pull (OCI registry)', mib, run: () => airlock(['pull', `oci://${registry.host}/p0/bench/model:main`, '--trusted-keys', pub, '--plain-http', '--cache-dir', pulled]), before: fresh(pulled) },
          { label: 'curl (download blobs from the registry)', mib, run: () => timed('sh', ['-c', inParallelSh(digests.map((d, i) => `curl -sf -o '${blobs}/${i}' 'http://${registry.host}/v2/p0/bench/model/blobs/${d}'`))]), before: fresh(blobs) },
          { label: 'dd conv=fsync (write limit, beside pull)', mib, run: () => timed('dd', [`if=${bundle}`, `of=${copy}`, 'bs=1M', 'conv=fsync', 'status=none']), before: () => rm(copy, { force: true }) },
          // pull's own job (download, hash each byte, check the digest, write, fsync) done by standard
          // tools, the blobs 4 at once: what a careful admin's script would do, for context
          {
            label: 'curl | tee | sha256sum, digest checked, sync (pull\'s job with standard tools)',
            mib,
            run: () => timed('bash', ['-c', inParallelSh(digests.map((d, i) => `[ "$(curl -sf 'http://${registry.host}/v2/p0/bench/model/blobs/${d}' | tee '${blobs}/${i}' | sha256sum | cut -d' ' -f1)" = '${d.slice('sha256:'.length)}' ] && sync '${blobs}/${i}'`))]),
            before: fresh(blobs),
          },
          // the bound any Node program meets here (bench/pull-floor.ts): a raw socket into shared memory,
          // two hashing threads, write, fsync — none of pull's checks, no HTTP library, start-up not counted
          {
            label: PULL_FLOOR,
            mib,
            run: async () => {
              const secondsFile = join(dir, 'pull-floor.seconds');
              const sample = await timed(process.execPath, ['--import', 'tsx', join(repoRoot, 'bench', 'pull-floor.ts'), registry.host, 'p0/bench/model', blobs, secondsFile, ...digests]);
              return { ...sample, seconds: Number(await readFile(secondsFile, 'utf8')) };
            },
            before: fresh(blobs),
          },
        ]);
        await rm(copy, { force: true });
        await rm(blobs, { recursive: true, force: true });
        // the fan-out: four nodes pull the same artifact at once (here four caches on one machine, so the
        // four share its CPUs and disk: the aggregate is a floor for what separate nodes get)
        const nodes = [1, 2, 3, 4].map((n) => join(dir, `pull-node-${n}`));
        await measure('model', 'airlock pull, 4 nodes at once', mib * nodes.length, async () => {
          const started = Date.now();
          const samples = await Promise.all(nodes.map((cache) => airlock(['pull', `oci://${registry.host}/p0/bench/model:main`, '--trusted-keys', pub, '--plain-http', '--cache-dir', cache])));
          return { seconds: (Date.now() - started) / 1000, maxRssMiB: Math.max(...samples.map((x) => x.maxRssMiB)) };
        }, async () => { for (const n of nodes) await fresh(n)(); });
        for (const n of nodes) await rm(n, { recursive: true, force: true });
        await rm(pulled, { recursive: true, force: true });
      } finally {
        await registry.close();
      }
    }
    await rm(out, { recursive: true, force: true });
    await rm(cache, { recursive: true, force: true });
  }

  // ---- files: many small files, where per-file overhead shows ----------------------------------
  if (FILES > 0 && want('files')) {
    const files: HubFileInput[] = manyFiles(FILES);
    await hub.addRepo({ id: 'bench/many-files', type: 'dataset', files });
    const mib = files.reduce((n, f) => n + Buffer.byteLength(f.data as string), 0) / MiB;
    const out = join(dir, 'out-files');
    const bundle = join(out, 'files.airlock.tar');
    // not disk-sampled: walking 2,000 files every 25 ms would take CPU from the per-file cost measured here
    await measure('files', 'airlock export', mib, exportInto(out, 'files.airlock.tar', ['datasets/bench/many-files', '--sign-key', key], env, false), fresh(out));
    const cache = join(dir, 'files-cache');
    await measure('files', 'airlock import', mib, () => airlock(['import', bundle, '--trusted-keys', pub, '--cache-dir', cache]), fresh(cache));
    // a 3 MiB bundle: what verify costs before the first payload byte (node start-up, openpgp, signature)
    await measure('files', 'airlock verify', mib, () => airlock(['verify', bundle, '--trusted-keys', pub, '--quiet']));
    // the registry side of the same 2,000 files: one layer per file (a POST and a PUT each), and back
    {
      const registry = await startRegistry();
      try {
        let round = 0;
        // the first push of these blobs writes them into the registry's storage; later ones (any client)
        // only link them: one untimed publish first (pulled below), so that cost lands on no side
        await airlock(['publish', bundle, '--to', `oci://${registry.host}/f0`, '--trusted-keys', pub, '--plain-http']);
        const floor = (mode: 'mount' | 'head') => () => timed(process.execPath, ['--import', 'tsx', join(repoRoot, 'bench', 'registry-floor.ts'), registry.host, `floor${++round}`, String(FILES), mode]);
        await measureInTurn('files', [
          { label: 'airlock publish (OCI registry)', mib, run: () => airlock(['publish', bundle, '--to', `oci://${registry.host}/f${++round}`, '--trusted-keys', pub, '--plain-http']) },
          // the registry's own floor for the same blobs: the two requests a client must make per new blob
          // (a POST that opens the upload, the PUT), 16 at once over kept-alive connections, from a bare
          // client — no bundle read, no verification. Against Debian's docker-registry on two cores this
          // is most of publish's time. And the three most clients make (HEAD first), for reference.
          { label: 'registry floor: POST+PUT per blob', mib, run: floor('mount') },
          { label: 'registry floor: HEAD+POST+PUT per blob (docker, skopeo, oras)', mib, run: floor('head') },
        ]);
        const pulled = join(dir, 'files-pull-cache');
        await measure('files', 'airlock pull (OCI registry)', mib, () =>
          airlock(['pull', `oci://${registry.host}/f0/datasets/bench/many-files:main`, '--trusted-keys', pub, '--plain-http', '--cache-dir', pulled]), fresh(pulled));
        await rm(pulled, { recursive: true, force: true });
      } finally {
        await registry.close();
      }
    }
    await rm(out, { recursive: true, force: true });
    await rm(cache, { recursive: true, force: true });
  }

  // ---- rss: a big bundle, memory must stay flat -----------------------------------------------
  if (RSS_GIB > 0 && want('rss')) {
    const bytes = Math.floor(RSS_GIB * 1024 * MiB);
    const path = join(dir, 'big.safetensors');
    if (!existsSync(path)) await randomFile(path, bytes);
    await hub.addRepo({ id: 'bench/big', files: [{ path: 'big.safetensors', fromFile: path }] });
    const mib = bytes / MiB;
    const out = join(dir, 'out-big');
    const bundle = join(out, 'big.airlock.tar');
    const cache = join(dir, 'big-cache');
    await measure('rss', 'airlock export', mib, exportInto(out, 'big.airlock.tar', ['bench/big', '--sign-key', key], env), fresh(out), 1);
    await measure('rss', 'airlock verify', mib, () => airlock(['verify', bundle, '--trusted-keys', pub, '--quiet']), undefined, 1);
    await measure('rss', 'airlock import', mib, () => airlock(['import', bundle, '--trusted-keys', pub, '--cache-dir', cache]), fresh(cache), 1);
    await rm(out, { recursive: true, force: true });
    await rm(cache, { recursive: true, force: true });
  }

  // ---- pickle: a torch zip checkpoint, import with the content analysis on vs off ---------------
  if (want('pickle')) {
    if (!existsSync(venvPython)) throw new Error('bench pickle: no .venv (bash scripts/ensure-python.sh)');
    const path = join(dir, `pytorch_model-${TORCH_MIB}.bin`);
    if (!existsSync(path)) {
      // 16 MiB tensors, like a model's layers; written by torch itself (flag-bit-3 zip members, data descriptors)
      const made = await timed(venvPython, ['-c', `import torch, collections
n = max(1, ${TORCH_MIB} // 16)
sd = collections.OrderedDict((f"layers.{i}.weight", torch.empty(4 * 1024 * 1024).uniform_()) for i in range(n))
torch.save(sd, ${JSON.stringify(path)})`]);
      process.stderr.write(`bench: pickle: wrote ${path} in ${made.seconds.toFixed(1)} s\n`);
    }
    await hub.addRepo({ id: 'bench/torch', files: [{ path: 'config.json', data: '{"model_type": "bert"}\n' }, { path: 'pytorch_model.bin', fromFile: path }] });
    const mib = (await lstat(path)).size / MiB;
    const out = join(dir, 'out-torch');
    await fresh(out)();
    const bundle = join(out, 'torch.airlock.tar');
    await airlock(['export', 'bench/torch', '--sign-key', key, '-o', bundle, '--work-dir', join(out, 'work')], env);
    const cache = join(dir, 'torch-cache');
    const helper = join(repoRoot, 'bench', 'import-content.ts');
    // alternate on/off runs so drift on a shared machine hits both alike, and swap which goes first each
    // rep: the very first import after the export pays a cold read (≈ +50 % at 2 GiB) that would land on one side
    for (let i = 0; i < REPS; i++) {
      for (const mode of i % 2 === 0 ? (['on', 'off'] as const) : (['off', 'on'] as const)) {
        await measure('pickle', `import torch zip, analysis ${mode}`, mib, () => timed(process.execPath, ['--import', 'tsx', helper, mode, bundle, cache, pub]), fresh(cache), 1);
      }
    }
    await rm(out, { recursive: true, force: true });
    await rm(cache, { recursive: true, force: true });
  }

  const get = (scenario: string, label: string) => rows.find((r) => r.scenario === scenario && r.label === label);
  const ratio = (a: Row | undefined, b: Row | undefined) => (a && b ? a.mibPerSecond / b.mibPerSecond : null);
  /** Median of each alternating run's rows (measure() adds one row per run here). */
  function pickleRatio(): number | null {
    const secs = (label: string) => rows.filter((r) => r.scenario === 'pickle' && r.label === label).map((r) => r.seconds);
    const on = secs('import torch zip, analysis on');
    const off = secs('import torch zip, analysis off');
    return on.length > 0 && off.length > 0 ? median(off) / median(on) : null;
  }
  const ratios: Record<string, number | null> = {
    'export / curl to disk': ratio(get('model', 'airlock export'), get('model', 'curl (download to disk)')),
    'export / manual curl+sha256sum+tar': ratio(get('model', 'airlock export'), get('model', 'manual: curl + sha256sum + tar c')),
    'export / snapshot_download': ratio(get('model', 'airlock export'), get('model', 'huggingface_hub snapshot_download')),
    'import / (tar x + sha256sum -c + mv)': ratio(get('model', 'airlock import'), get('model', 'tar x + sha256sum -c + mv')),
    'import / openssl dgst': ratio(get('model', 'airlock import'), get('model', 'openssl dgst -sha256 (hash limit)')),
    'verify / openssl dgst': ratio(get('model', 'airlock verify'), get('model', 'openssl dgst -sha256 (hash limit)')),
    'import / dd conv=fsync (write limit)': ratio(get('model', 'airlock import'), get('model', 'dd conv=fsync (write limit)')),
    'export one file / curl one file': ratio(get('model', 'airlock export (one large file)'), get('model', 'curl (one large file, single stream)')),
    'modelscope export / HF export': ratio(get('model', 'airlock export --source modelscope'), get('model', 'airlock export')),
    'import torch zip: analysis on / off': pickleRatio(),
    'publish / curl -T upload': ratio(get('model', 'airlock publish (OCI registry)'), get('model', 'curl -T (upload to the registry)')),
    'pull / max(curl download, dd conv=fsync)': (() => {
      const pull = get('model', 'airlock pull (OCI registry)');
      const curl = get('model', 'curl (download blobs from the registry)');
      const dd = get('model', 'dd conv=fsync (write limit, beside pull)');
      return pull && curl && dd ? pull.mibPerSecond / Math.min(curl.mibPerSecond, dd.mibPerSecond) : null;
    })(),
    'publish / registry floor (many files)': ratio(get('files', 'airlock publish (OCI registry)'), get('files', 'registry floor: POST+PUT per blob')),
    'pull / standard tools doing its job (curl | tee | sha256sum, sync)': ratio(get('model', 'airlock pull (OCI registry)'), get('model', 'curl | tee | sha256sum, digest checked, sync (pull\'s job with standard tools)')),
    'pull / Node floor (raw socket, hash, write, fsync; no checks)': ratio(get('model', 'airlock pull (OCI registry)'), get('model', PULL_FLOOR)),
    'Node floor / max(curl download, dd conv=fsync)': (() => {
      const floor = get('model', PULL_FLOOR);
      const curl = get('model', 'curl (download blobs from the registry)');
      const dd = get('model', 'dd conv=fsync (write limit, beside pull)');
      return floor && curl && dd ? floor.mibPerSecond / Math.min(curl.mibPerSecond, dd.mibPerSecond) : null;
    })(),
    'pull, 4 nodes at once / 1 node (aggregate)': ratio(get('model', 'airlock pull, 4 nodes at once'), get('model', 'airlock pull (OCI registry)')),
    'serve / nginx, 1 client': ratio(get('serve', 'airlock serve, 1 client'), get('serve', 'nginx, 1 client')),
    'serve / nginx, 16 clients': ratio(get('serve', 'airlock serve, 16 clients'), get('serve', 'nginx, 16 clients')),
  };
  // peak disk over the payload size: 1 is the downloads alone; the target for export is ≤ 1.1
  const diskOverSize = (r: Row | undefined) => (r && r.peakDiskMiB !== null ? r.peakDiskMiB / r.mib : null);
  const disk: Record<string, number | null> = {
    'export peak disk / model size': diskOverSize(get('model', 'airlock export')),
    'modelscope export peak disk / model size': diskOverSize(get('model', 'airlock export --source modelscope')),
    'curl peak disk / model size': diskOverSize(get('model', 'curl (download to disk)')),
    'manual peak disk / model size': diskOverSize(get('model', 'manual: curl + sha256sum + tar c')),
    'snapshot_download peak disk / model size': diskOverSize(get('model', 'huggingface_hub snapshot_download')),
    'export one file peak disk / file size': diskOverSize(get('model', 'airlock export (one large file)')),
    'export peak disk / size (rss bundle)': diskOverSize(get('rss', 'airlock export')),
  };
  const perFile = {
    'export ms per file': get('files', 'airlock export') ? (get('files', 'airlock export')!.seconds * 1000) / FILES : null,
    'import ms per file': get('files', 'airlock import') ? (get('files', 'airlock import')!.seconds * 1000) / FILES : null,
    'import ms per file beyond verify': get('files', 'airlock import') && get('files', 'airlock verify') ? ((get('files', 'airlock import')!.seconds - get('files', 'airlock verify')!.seconds) * 1000) / FILES : null,
    'verify fixed cost ms (small bundle)': get('files', 'airlock verify') ? get('files', 'airlock verify')!.seconds * 1000 : null,
    'publish ms per file': get('files', 'airlock publish (OCI registry)') ? (get('files', 'airlock publish (OCI registry)')!.seconds * 1000) / FILES : null,
    'pull ms per file': get('files', 'airlock pull (OCI registry)') ? (get('files', 'airlock pull (OCI registry)')!.seconds * 1000) / FILES : null,
    'registry floor ms per file (POST+PUT)': get('files', 'registry floor: POST+PUT per blob') ? (get('files', 'registry floor: POST+PUT per blob')!.seconds * 1000) / FILES : null,
    'registry floor ms per file (HEAD+POST+PUT)': get('files', 'registry floor: HEAD+POST+PUT per blob (docker, skopeo, oras)') ? (get('files', 'registry floor: HEAD+POST+PUT per blob (docker, skopeo, oras)')!.seconds * 1000) / FILES : null,
  };

  const w = (s: string) => process.stdout.write(s);
  w(`\nairlock bench — ${new Date().toISOString()} — median of ${REPS}; loopback hub; ${SIZE_MIB} MiB model in ${SHARDS} shards, ${FILES} small files${RSS_GIB ? `, ${RSS_GIB} GiB RSS run` : ''}\n\n`);
  w(`${'scenario'.padEnd(8)} ${'what'.padEnd(38)} ${'seconds'.padStart(8)} ${'MiB/s'.padStart(8)} ${'peak RSS MiB'.padStart(13)} ${'peak disk MiB'.padStart(14)}\n`);
  for (const r of rows) {
    const peakDisk = r.peakDiskMiB === null ? '-' : r.peakDiskMiB.toFixed(0);
    w(`${r.scenario.padEnd(8)} ${r.label.padEnd(38)} ${r.seconds.toFixed(2).padStart(8)} ${r.mibPerSecond.toFixed(0).padStart(8)} ${r.maxRssMiB.toFixed(0).padStart(13)} ${peakDisk.padStart(14)}\n`);
  }
  w('\nratios (airlock / peer, speed; > 1 means airlock is faster)\n');
  for (const [k, v] of Object.entries(ratios)) w(`  ${k.padEnd(40)} ${v === null ? 'n/a' : `${v.toFixed(2)}×`}\n`);
  for (const [k, v] of Object.entries(perFile)) w(`  ${k.padEnd(40)} ${v === null ? 'n/a' : v.toFixed(2)}\n`);
  w('  peak disk / payload size (lower is better; the target for export is ≤ 1.10×)\n');
  for (const [k, v] of Object.entries(disk)) w(`  ${k.padEnd(40)} ${v === null ? 'n/a' : `${v.toFixed(2)}×`}\n`);
  await mkdir(dirname(OUT), { recursive: true });
  await writeFile(OUT, `${JSON.stringify({ at: new Date().toISOString(), sizeMiB: SIZE_MIB, files: FILES, rssGiB: RSS_GIB, reps: REPS, rows, ratios, perFile, disk }, null, 2)}\n`);
  w(`\nwritten to ${OUT}\n`);
} finally {
  await hub.close();
  await modelscope.close();
  if (!process.env['BENCH_DIR']) await rm(dir, { recursive: true, force: true });
}
