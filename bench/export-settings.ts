/**
 * What `--concurrency` and `--connections-per-file` buy, measured on loopback with the project's hub
 * (LFS from a second loopback host, like the Hub's CDN). Two links:
 *   fast — loopback as is: the limit is CPU (HTTP parsing, SHA-256, writes), client and server sharing it;
 *   slow — each connection capped (BENCH_LINK_MIBPS, default 20 MiB/s per response, the hub's
 *          `bytesPerSecond` fault), like a CDN that throttles per connection.
 *
 *   node --import tsx bench/export-settings.ts
 *   BENCH_SHARD_MIB=64 BENCH_SHARDS=4 BENCH_SMALL=40 BENCH_REPS=3 BENCH_OUT=bench/results/export-settings.json
 */
import { spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHubServer, type HubFileInput, type HubServer } from '../test/support/hub-server.ts';
import { airlockBin, cleanEnv, repoRoot } from '../test/support/cli.ts';

const MiB = 1024 * 1024;
const SHARD_MIB = Number(process.env['BENCH_SHARD_MIB'] ?? 64);
const SHARDS = Number(process.env['BENCH_SHARDS'] ?? 4);
const SMALL = Number(process.env['BENCH_SMALL'] ?? 40);
const REPS = Math.max(1, Number(process.env['BENCH_REPS'] ?? 3));
const LINK_MIBPS = Number(process.env['BENCH_LINK_MIBPS'] ?? 20);
const OUT = process.env['BENCH_OUT'] ?? join(repoRoot, 'bench', 'results', 'export-settings.json');

interface Row {
  link: 'fast' | 'slow';
  concurrency: number;
  connectionsPerFile: number;
  seconds: number;
  mibPerSecond: number;
}

function runExport(hub: HubServer, out: string, concurrency: number, connections: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(
      process.execPath,
      [airlockBin, 'export', 'bench/model', '--unsigned', '--force', '-o', out, '--concurrency', String(concurrency), '--connections-per-file', String(connections), '--json'],
      { cwd: repoRoot, env: cleanEnv({ HF_ENDPOINT: hub.endpoint }), stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve((performance.now() - started) / 1000) : reject(new Error(`export failed (${code}): ${err}`))));
  });
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-bench-settings-'));
  const hub = await startHubServer();
  try {
    const files: HubFileInput[] = [{ path: 'config.json', data: '{"model_type":"llama"}\n' }];
    for (let i = 1; i <= SHARDS; i++) {
      const path = join(dir, `shard-${i}.bin`);
      const buf = Buffer.allocUnsafe(SHARD_MIB * MiB);
      randomFillSync(buf);
      await writeFile(path, buf);
      files.push({ path: `model-${String(i).padStart(5, '0')}-of-${String(SHARDS).padStart(5, '0')}.safetensors`, fromFile: path });
    }
    for (let i = 0; i < SMALL; i++) files.push({ path: `extra/file-${i}.json`, data: JSON.stringify({ i, pad: 'x'.repeat(2000) }) });
    await hub.addRepo({ id: 'bench/model', files });
    const mib = SHARDS * SHARD_MIB;
    const out = join(dir, 'bench.airlock.tar');
    const rows: Row[] = [];
    const settings: Array<[number, number]> = [
      [1, 1],
      [4, 1],
      [8, 1],
      [1, 4],
      [4, 4],
    ];
    for (const link of ['fast', 'slow'] as const) {
      hub.setFaults(link === 'slow' ? { bytesPerSecond: LINK_MIBPS * MiB } : {});
      for (const [concurrency, connections] of settings) {
        const times: number[] = [];
        for (let r = 0; r < REPS; r++) times.push(await runExport(hub, out, concurrency, connections));
        const seconds = median(times);
        const row = { link, concurrency, connectionsPerFile: connections, seconds: Number(seconds.toFixed(2)), mibPerSecond: Number((mib / seconds).toFixed(1)) };
        rows.push(row);
        process.stdout.write(`${link.padEnd(5)} --concurrency ${concurrency} --connections-per-file ${connections}: ${row.seconds} s, ${row.mibPerSecond} MiB/s\n`);
      }
    }
    const result = { date: new Date().toISOString(), node: process.version, shards: SHARDS, shardMiB: SHARD_MIB, smallFiles: SMALL, linkMiBps: LINK_MIBPS, reps: REPS, rows };
    await writeFile(OUT, `${JSON.stringify(result, null, 2)}\n`);
    process.stdout.write(`written to ${OUT}\n`);
  } finally {
    await hub.close();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
