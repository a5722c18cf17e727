/**
 * Export writes the bundle in place (issue 8: disk footprint ≈ 1×S): the tar is laid out from the
 * listing, each download lands at its final offset, and the leading entries are written last into a
 * reserved space, padded with a pax `comment` record on manifest.json. These tests check the result
 * is still one standard tar that GNU tar, gpg-less `sha256sum -c` and airlock's reader agree on — on
 * the normal path, on the rare copy when the leading entries outgrow their reserve, and as volumes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startHubServer, type HubServer } from '../support/hub-server.ts';
import { tarLayout } from '../support/tar-layout.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';
import { exportBundle } from '../../src/export/exporter.ts';
import { createHuggingFaceClient } from '../../src/hub/huggingface/client.ts';
import { discardSink, readBundle } from '../../src/bundle/reader.ts';
import { partPath } from '../../src/bundle/parts.ts';
import type { Signer } from '../../src/signing/sign.ts';
import { makeTestKey, type TestKey } from '../support/bundle-builder.ts';

const exec = promisify(execFile);
let hub: HubServer;
let dir: string;

let key: TestKey;

/**
 * The test key's signer, its armored signatures grown by `extra` bytes of `Comment:` armor headers
 * (which OpenPGP readers ignore): a stand-in for a signature too big for its reserved space.
 */
function signer(extra: number): Signer {
  const comments = Array.from({ length: Math.ceil(extra / 64) }, () => `Comment: ${'c'.repeat(54)}\n`).join('');
  return {
    fingerprint: key.signer.fingerprint,
    userIds: key.signer.userIds,
    sign: async (data) => (await key.signer.sign(data)).replace('-----BEGIN PGP SIGNATURE-----\n', `-----BEGIN PGP SIGNATURE-----\n${comments}`),
  };
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-in-place-'));
  key = await makeTestKey();
  hub = await startHubServer();
  await hub.addRepo({
    id: 'acme/in-place',
    files: [
      { path: 'config.json', data: '{"model_type":"llama"}\n' },
      { path: 'model-00001-of-00002.safetensors', data: safetensorsOf(randomBytes(300_000)) },
      { path: 'model-00002-of-00002.safetensors', data: safetensorsOf(randomBytes(70_001)) },
      { path: `deep/${'d'.repeat(120)}/${'n'.repeat(90)}.txt`, data: 'a name that needs a pax header\n' },
      { path: 'empty.txt', data: '' },
    ],
  });
});
after(async () => {
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

async function exportTo(name: string, options: { signatureBytes?: number; splitSize?: number } = {}): Promise<{ out: string; work: string }> {
  const out = join(dir, name, 'b.airlock.tar');
  const work = join(dir, name, 'work');
  await mkdir(join(dir, name), { recursive: true });
  const client = createHuggingFaceClient({ endpoint: hub.endpoint });
  await exportBundle({
    client,
    repos: [{ type: 'model', id: 'acme/in-place', revision: 'main' }],
    include: [],
    exclude: [],
    outPath: out,
    workDir: work,
    keepWorkDir: true,
    signer: signer(options.signatureBytes ?? 0),
    ...(options.splitSize === undefined ? {} : { splitSize: options.splitSize }),
  });
  return { out, work };
}

/** GNU tar lists exactly the leading entries then sorted payload; extracted, sha256sum -c passes. */
async function checkWithStandardTools(tar: string, where: string): Promise<string[]> {
  const { stdout } = await exec('tar', ['-tf', tar]);
  const names = stdout.trim().split('\n');
  assert.deepEqual(names.slice(0, 3), ['SHA256SUMS', 'SHA256SUMS.asc', 'manifest.json']);
  assert.ok(names.slice(3).every((n) => n.startsWith('payload/models/acme/in-place/')), names.join('\n'));
  assert.equal(names.length, 3 + 5);
  const x = join(where, 'x');
  await mkdir(x, { recursive: true });
  await exec('tar', ['-xf', tar, '-C', x]);
  await exec('sha256sum', ['--strict', '-c', 'SHA256SUMS'], { cwd: x });
  // and airlock's own reader (tar guard included) checks the signature and every hash to the end
  const verified = await readBundle(createReadStream(tar), { subject: tar, trustedKeys: key.trustedKeys, sink: discardSink });
  assert.equal(verified.manifest.repos[0]!.files.length, 5);
  return names;
}

describe('export writes the bundle in place', () => {
  test('one standard tar; the reserve is closed by a pax comment on manifest.json; no partial or work copy left', async () => {
    const { out, work } = await exportTo('normal');
    await checkWithStandardTools(out, join(dir, 'normal'));
    const tar = await readFile(out);
    const layout = tarLayout(tar);
    const manifest = layout.find((e) => e.name === 'manifest.json')!;
    const pax = tar.subarray(layout[1]!.dataOffset + Math.ceil(layout[1]!.size / 512) * 512, manifest.headerOffset).toString('latin1');
    assert.match(pax, /\d+ path=manifest\.json\n\d+ comment=model-airlock: space reserved/);
    assert.deepEqual((await readdir(join(dir, 'normal'))).sort(), ['b.airlock.tar', 'work', 'x']);
    // --keep-work-dir keeps only the pinned commit: no payload was ever written there
    const kept = await readdir(work, { recursive: true, withFileTypes: true });
    assert.deepEqual(kept.filter((e) => e.isFile()).map((e) => e.name), ['main']);
  });

  test('a signature bigger than its reserve: the payload is copied once behind the leading entries', async () => {
    const { out } = await exportTo('big-signature', { signatureBytes: 40_000 });
    await checkWithStandardTools(out, join(dir, 'big-signature'));
    const asc = (await exec('tar', ['-xOf', out, 'SHA256SUMS.asc'], { maxBuffer: 1 << 20 })).stdout;
    assert.ok(asc.length > 40_000);
    assert.ok(!existsSync(`${out}.partial`) && !existsSync(`${out}.relayout.partial`), 'no partial left');
  });

  for (const signatureBytes of [0, 40_000]) {
    test(`volumes (${signatureBytes === 0 ? 'in place' : 'copied behind a big signature'}): cat of the parts is the tar, parts named as usual`, async () => {
      const name = `split-${signatureBytes}`;
      const { out } = await exportTo(name, { signatureBytes, splitSize: 64 * 1024 });
      const files = (await readdir(join(dir, name))).filter((n) => n.startsWith('b.airlock.tar.')).sort();
      assert.ok(files.length >= 6, files.join(', '));
      assert.deepEqual(files, files.map((_, i) => partPath('b.airlock.tar', i, files.length)));
      const joined = Buffer.concat(await Promise.all(files.map((f) => readFile(join(dir, name, f)))));
      const whole = join(dir, name, 'joined.tar');
      await writeFile(whole, joined);
      await checkWithStandardTools(whole, join(dir, name));
      const index = JSON.parse(await readFile(join(dir, name, 'b.airlock.parts.json'), 'utf8'));
      assert.deepEqual(index.parts.map((p: { name: string }) => p.name), files);
      assert.ok(!existsSync(`${out}.000.partial`) && !existsSync(`${out}.relayout.000.partial`), 'no partial left');
    });
  }
});
