/**
 * Keeps `npm run bench` runnable: a tiny variant runs every scenario and writes its JSON. It asserts
 * that each measurement happened and produced sane numbers — never how fast anything was, nor how
 * much disk anything took (only that the peak was sampled).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, repoRoot } from '../support/cli.ts';

test('the benchmark suite runs every scenario and reports ratios', { timeout: 300_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-bench-smoke-'));
  const out = join(dir, 'bench.json');
  try {
    const r = await run(process.execPath, ['--import', 'tsx', 'bench/run.ts'], {
      cwd: repoRoot,
      env: { BENCH_SIZE_MIB: '16', BENCH_FILES: '50', BENCH_RSS_GIB: '0.01', BENCH_REPS: '1', BENCH_OUT: out, BENCH_DIR: join(dir, 'data') },
    });
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(await readFile(out, 'utf8'));
    const labels = result.rows.map((row: { scenario: string; label: string }) => `${row.scenario}: ${row.label}`);
    for (const expected of [
      'model: airlock export', 'model: curl (download to disk)', 'model: manual: curl + sha256sum + tar c',
      'model: huggingface_hub snapshot_download', 'model: airlock verify', 'model: airlock import',
      'model: tar x + sha256sum -c + mv', 'model: openssl dgst -sha256 (hash limit)', 'model: cat > /dev/null (read limit)',
      'model: dd conv=fsync (write limit)', 'model: airlock export (one large file)', 'model: curl (one large file, single stream)',
      'files: airlock export', 'files: airlock import', 'rss: airlock export', 'rss: airlock verify', 'rss: airlock import',
      'model: airlock export --source modelscope',
      'pickle: import torch zip, analysis on', 'pickle: import torch zip, analysis off',
      'model: airlock publish (OCI registry)', 'model: curl -T (upload to the registry)', 'model: airlock pull (OCI registry)',
      'model: curl (download blobs from the registry)', 'model: dd conv=fsync (write limit, beside pull)', 'model: curl | tee | sha256sum, digest checked, sync (pull\'s job with standard tools)', 'model: Node floor: raw socket, 2 hash threads, write, fsync (bench/pull-floor.ts; no checks, start not counted)', 'model: airlock pull, 4 nodes at once',
      'files: airlock publish (OCI registry)', 'files: registry floor: POST+PUT per blob', 'files: registry floor: HEAD+POST+PUT per blob (docker, skopeo, oras)', 'files: airlock pull (OCI registry)',
      'serve: airlock serve, 1 client', 'serve: nginx, 1 client', 'serve: airlock serve, 16 clients', 'serve: nginx, 16 clients',
    ]) {
      assert.ok(labels.includes(expected), `${expected} measured (got ${labels.join(', ')})`);
    }
    for (const row of result.rows) {
      assert.ok(row.seconds > 0 && Number.isFinite(row.mibPerSecond), `${row.label} has a time`);
      assert.ok(row.maxRssMiB > 0, `${row.label} has a peak RSS`);
    }
    // the download side reports its peak disk footprint; the rest leaves it null
    const diskSampled = [
      'model: airlock export', 'model: curl (download to disk)', 'model: manual: curl + sha256sum + tar c',
      'model: huggingface_hub snapshot_download', 'model: airlock export (one large file)',
      'model: curl (one large file, single stream)', 'rss: airlock export', 'model: airlock export --source modelscope',
    ];
    for (const row of result.rows) {
      const name = `${row.scenario}: ${row.label}`;
      if (diskSampled.includes(name)) assert.ok(typeof row.peakDiskMiB === 'number' && row.peakDiskMiB > 0, `${name} has a peak disk footprint`);
      else assert.equal(row.peakDiskMiB, null, `${name} is not disk-sampled`);
    }
    assert.ok('export one file / curl one file' in result.ratios, 'the one-file ratio is reported');
    assert.ok('import / dd conv=fsync (write limit)' in result.ratios, 'import is compared with the write limit');
    assert.ok('import torch zip: analysis on / off' in result.ratios, 'the content analysis cost is reported');
    assert.ok('publish / curl -T upload' in result.ratios && 'pull / max(curl download, dd conv=fsync)' in result.ratios, 'publish and pull are compared');
    assert.ok('serve / nginx, 16 clients' in result.ratios, 'airlock serve is compared with nginx');
    assert.ok('publish / registry floor (many files)' in result.ratios, "many-file publish is compared with the registry's own floor");
    for (const value of Object.values(result.ratios)) assert.equal(typeof value, 'number');
    for (const key of [
      'export peak disk / model size', 'curl peak disk / model size', 'manual peak disk / model size',
      'snapshot_download peak disk / model size', 'export one file peak disk / file size', 'export peak disk / size (rss bundle)',
      'modelscope export peak disk / model size',
    ]) {
      assert.equal(typeof result.disk[key], 'number', `${key} reported`);
      assert.ok(result.disk[key] > 0, `${key} is positive`);
    }
    assert.match(r.stdout, /ratios \(airlock \/ peer/);
    assert.match(r.stdout, /peak disk MiB/);
    assert.match(r.stdout, /export peak disk \/ model size/);
    assert.match(r.stdout, /modelscope export peak disk \/ model size/);
    assert.match(r.stdout, /export one file \/ curl one file/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
