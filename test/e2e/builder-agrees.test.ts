/**
 * The test bundle builder (test/support/bundle-builder.ts) must make what `airlock export` makes: the
 * resign bug of issue 13 hid behind fixtures that had drifted from the writer (plain ustar leading
 * entries, while export pads its reserve with a pax comment header). Here the real export of a repo
 * from the test hub and the builder given the same manifest, SHA256SUMS and signature must be the
 * same bytes — signed and unsigned, with a git file, LFS files and a path too long for ustar.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHubServer, type HubServer, type AddedCommit } from '../support/hub-server.ts';
import { runAirlock } from '../support/cli.ts';
import { buildBundle, makeTestKey, type BuilderFile } from '../support/bundle-builder.ts';
import { tarLayout } from '../support/tar-layout.ts';
import type { Manifest } from '../../src/bundle/manifest.ts';

let dir: string;
let hub: HubServer;
let added: AddedCommit;
const LONG = `deeply/${'nested-folder/'.repeat(9)}tokenizer_config.json`;
const files: BuilderFile[] = [
  { path: 'config.json', data: '{"model_type": "llama"}\n' },
  { path: 'weights.bin', data: Buffer.alloc(70_000, 7), lfs: true },
  { path: 'pytorch_model-00001.bin', data: Buffer.alloc(1234, 3), lfs: true },
  { path: LONG, data: '{"a": 1}\n' },
];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-agree-'));
  hub = await startHubServer();
  added = await hub.addRepo({ id: 'acme/agree', files: files.map((f) => ({ path: f.path, data: f.data, lfs: f.lfs ?? false })) });
  assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'Agree <agree@example.org>', '--out-dir', join(dir, 'keys')])).code, 0);
});

after(async () => {
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

function entry(tar: Buffer, name: string): Buffer | undefined {
  const e = tarLayout(tar).find((x) => x.name === name);
  return e === undefined ? undefined : tar.subarray(e.dataOffset, e.dataOffset + e.size);
}

for (const signed of [true, false]) {
  test(`builder and export agree byte for byte (${signed ? 'signed' : 'unsigned'})`, async () => {
    const out = join(dir, `${signed ? 'signed' : 'unsigned'}.airlock.tar`);
    const r = await runAirlock(['export', 'acme/agree', ...(signed ? ['--sign-key', join(dir, 'keys', 'signer.key.asc')] : ['--unsigned']), '-o', out], {
      env: { HF_ENDPOINT: hub.endpoint },
    });
    assert.equal(r.code, 0, r.stderr);
    const exported = await readFile(out);
    const manifest = JSON.parse(entry(exported, 'manifest.json')!.toString('utf8')) as Manifest;
    assert.ok(tarLayout(exported).some((e) => e.name.endsWith(LONG)), 'the long path needs a pax header');
    const signature = entry(exported, 'SHA256SUMS.asc')?.toString('utf8');
    assert.equal(signature !== undefined, signed);

    const built = await buildBundle({
      repos: [{ id: 'acme/agree', commit: added.commit, files }],
      // the builder signs with its own key; the signature bytes are export's (signatures carry a time)
      signer: signed ? (await makeTestKey()).signer : undefined,
      ...(signature === undefined ? {} : { editSignature: () => signature }),
      editManifest: (m) => {
        m.tool = manifest.tool;
        m.createdAt = manifest.createdAt;
        m.repos = manifest.repos;
      },
    });
    assert.ok(built.sumsBytes.equals(entry(exported, 'SHA256SUMS')!), 'same SHA256SUMS');
    assert.ok(built.bytes.equals(exported), `builder ${built.bytes.length} B vs export ${exported.length} B: same bytes`);
  });
}
