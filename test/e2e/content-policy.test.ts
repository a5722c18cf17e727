/**
 * Issue 17 end to end, through the real CLI and the test hub: export records each file's verdict in the
 * signed manifest; verify and import judge every file again while it streams and, by default, refuse a
 * bundle whose pytorch_model.bin would import os.system — exit 3, E_UNSAFE_CONTENT naming the file and
 * the global, the cache exactly as it was. `--allow-unsafe-pickle` imports anyway and says so in the
 * report; `--allow-global` / `--content-policy` widen the allow-list for a site's own globals. A
 * torch-saved pytorch_model.bin goes through export → import and transformers loads it offline.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHubServer, type HubServer } from '../support/hub-server.ts';
import { runAirlock } from '../support/cli.ts';
import { runPython } from '../support/python.ts';
import { formatTree, snapshotTree, stagingLeftovers } from '../support/cache-snapshot.ts';
import { makeTestKey, writeBundleFile } from '../support/bundle-builder.ts';
import { importBundle, verifyBundle } from '../../src/import/index.ts';
import { isAirlockError } from '../../src/errors.ts';
import { startServer } from '../../src/serve/index.ts';

let hub: HubServer;
let dir: string;
let pub: string;
let signKey: string;
const bundles: Record<string, string> = {};
const commits: Record<string, string> = {};

/** A protocol-2 pickle that calls os.system('id') when loaded. */
const EVIL = Buffer.from('\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.', 'latin1');
/** A pickle of a site's own class (no code of its own beyond importing it). */
const CUSTOM = Buffer.from('\x80\x02cmysite.formats\nTable\nq\x00)\x81q\x01.', 'latin1');

async function exportRepo(id: string): Promise<string> {
  const bundle = join(dir, `${id.replace('/', '_')}.airlock.tar`);
  const exp = await runAirlock(['export', id, '--revision', 'main', '--sign-key', signKey, '-o', bundle], { env: { HF_ENDPOINT: hub.endpoint } });
  assert.equal(exp.code, 0, exp.stderr);
  bundles[id] = exp.stdout;
  return bundle;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-content-e2e-'));
  hub = await startHubServer();
  const built = join(dir, 'built');
  const py = await runPython(
    `
import os, zipfile, torch
from transformers import BertConfig, BertModel
os.makedirs(${JSON.stringify(built)}, exist_ok=True)
os.chdir(${JSON.stringify(built)})
torch.manual_seed(0)
cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
model = BertModel(cfg)
cfg.save_pretrained(".")
# what save_pretrained(safe_serialization=False) wrote before transformers 5 (which writes safetensors only)
torch.save(model.state_dict(), "pytorch_model.bin")
torch.save(model.state_dict(), "evil.bin")
with zipfile.ZipFile("evil.bin", "a") as z:
    z.writestr("evil/extra_state", bytes.fromhex(${JSON.stringify(EVIL.toString('hex'))}))
`,
    {},
    { timeoutMs: 240_000 },
  );
  assert.equal(py.code, 0, py.stderr);
  const config = await readFile(join(built, 'config.json'));
  commits['acme/tiny-bert'] = (await hub.addRepo({ id: 'acme/tiny-bert', files: [{ path: 'config.json', data: config }, { path: 'pytorch_model.bin', data: await readFile(join(built, 'pytorch_model.bin')) }] })).commit;
  commits['acme/evil-bert'] = (await hub.addRepo({ id: 'acme/evil-bert', files: [{ path: 'config.json', data: config }, { path: 'pytorch_model.bin', data: await readFile(join(built, 'evil.bin')) }] })).commit;
  commits['acme/custom'] = (await hub.addRepo({ id: 'acme/custom', files: [{ path: 'README.md', data: Buffer.from('# custom\n') }, { path: 'table.pkl', data: CUSTOM }] })).commit;
  const keys = join(dir, 'keys');
  assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'ML Platform <mlops@example.org>', '--out-dir', keys])).code, 0);
  pub = join(keys, 'signer.pub.asc');
  signKey = join(keys, 'signer.key.asc');
});
after(async () => {
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('content policy: a safe torch checkpoint', () => {
  test('export records the verdict in the signed manifest; verify and import judge again; transformers loads it offline', { timeout: 300_000 }, async () => {
    const bundle = await exportRepo('acme/tiny-bert');
    assert.match(bundles['acme/tiny-bert']!, /content: 1 pickle file\(s\) safe/);
    const inspect = await runAirlock(['inspect', bundle, '--json']);
    assert.equal(inspect.code, 0, inspect.stderr);
    const files = (JSON.parse(inspect.stdout) as { manifest: { repos: Array<{ files: Array<{ path: string; content?: { verdict: string; format: string; globals?: string[] } }> }> } }).manifest.repos[0]!.files;
    const bin = files.find((f) => f.path === 'pytorch_model.bin')!;
    assert.equal(bin.content?.verdict, 'safe');
    assert.equal(bin.content?.format, 'torch-zip');
    assert.ok(bin.content?.globals?.includes('torch._utils._rebuild_tensor_v2'));
    assert.deepEqual(files.find((f) => f.path === 'config.json')!.content, { verdict: 'no-code', format: 'json' });

    const verify = await runAirlock(['verify', bundle, '--trusted-keys', pub]);
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stdout, /content acme\/tiny-bert@\w+ pytorch_model\.bin \(torch-zip\): safe/);
    const cache = join(dir, 'cache-safe');
    const imp = await runAirlock(['import', bundle, '--trusted-keys', pub, '--json'], { env: { HF_HUB_CACHE: cache } });
    assert.equal(imp.code, 0, imp.stderr);
    const content = (JSON.parse(imp.stdout) as { content: { files: Array<{ path: string; verdict: string }> } }).content;
    assert.deepEqual(content.files.map((f) => [f.path, f.verdict]).sort(), [['config.json', 'no-code'], ['pytorch_model.bin', 'safe']]);

    const load = await runPython(
      `
import torch
from transformers import BertModel
m = BertModel.from_pretrained("acme/tiny-bert", local_files_only=True)
with torch.no_grad():
    out = m(input_ids=torch.tensor([[1, 2, 3]])).last_hidden_state
print(list(out.shape), bool(torch.isfinite(out).all()))
`,
      { HF_HUB_OFFLINE: '1', HF_HUB_CACHE: cache, HF_ENDPOINT: 'http://127.0.0.1:9' },
      { timeoutMs: 240_000 },
    );
    assert.equal(load.code, 0, load.stderr);
    assert.equal(load.stdout.trim().split('\n').pop(), '[1, 3, 16] True');
  });
});

describe('content policy: a checkpoint that would run os.system', () => {
  let bundle: string;
  before(async () => {
    bundle = await exportRepo('acme/evil-bert');
  });

  test('export succeeds but reports it (the offline side decides)', () => {
    assert.match(bundles['acme/evil-bert']!, /pytorch_model\.bin is UNSAFE: loading it would import os\.system — import will refuse it/);
  });

  test('verify refuses: exit 3, E_UNSAFE_CONTENT naming the file and the global', async () => {
    const verify = await runAirlock(['verify', bundle, '--trusted-keys', pub]);
    assert.equal(verify.code, 3, verify.stdout);
    assert.match(verify.stderr, /E_UNSAFE_CONTENT/);
    assert.match(verify.stderr, /acme\/evil-bert@[0-9a-f]{40}: pytorch_model\.bin \(torch-zip\) would import os\.system/);
  });

  test('import refuses and leaves an existing cache exactly as it was; the report records the refusal', async () => {
    const cache = join(dir, 'cache-refuse');
    const first = await runAirlock(['import', join(dir, 'acme_tiny-bert.airlock.tar'), '--trusted-keys', pub], { env: { HF_HUB_CACHE: cache } });
    assert.equal(first.code, 0, first.stderr);
    const beforeTree = await snapshotTree(cache, { mtimes: true });
    const report = join(dir, 'refused.json');
    const imp = await runAirlock(['import', bundle, '--trusted-keys', pub, '--report', report], { env: { HF_HUB_CACHE: cache } });
    assert.equal(imp.code, 3, imp.stdout);
    assert.match(imp.stderr, /E_UNSAFE_CONTENT/);
    assert.match(imp.stderr, /pytorch_model\.bin \(torch-zip\) would import os\.system/);
    assert.match(imp.stderr, /--allow-unsafe-pickle/);
    assert.equal(formatTree(await snapshotTree(cache, { mtimes: true })), formatTree(beforeTree));
    assert.deepEqual(await stagingLeftovers(cache), []);
    const record = JSON.parse(await readFile(report, 'utf8')) as { result: string; error: { code: string; subject: string } };
    assert.equal(record.result, 'refused');
    assert.equal(record.error.code, 'E_UNSAFE_CONTENT');
    assert.equal(record.error.subject, 'pytorch_model.bin');
  });

  test('--allow-unsafe-pickle imports anyway and the report says so', async () => {
    const cache = join(dir, 'cache-allowed');
    const report = join(dir, 'allowed.json');
    const imp = await runAirlock(['import', bundle, '--trusted-keys', pub, '--allow-unsafe-pickle', '--report', report], { env: { HF_HUB_CACHE: cache } });
    assert.equal(imp.code, 0, imp.stderr);
    assert.match(imp.stdout, /UNSAFE: would import os\.system — let through by --allow-unsafe-pickle/);
    const record = JSON.parse(await readFile(report, 'utf8')) as { result: string; content: { allowUnsafe: boolean; files: Array<{ path: string; verdict: string; unsafeGlobals: string[] }> } };
    assert.equal(record.result, 'imported');
    assert.equal(record.content.allowUnsafe, true);
    assert.deepEqual(record.content.files.map((f) => [f.path, f.verdict, f.unsafeGlobals]), [['pytorch_model.bin', 'unsafe', ['os.system']]]);
    // the auditor summary verify prints carries it too
    const verify = await runAirlock(['verify', bundle, '--trusted-keys', pub, '--allow-unsafe-pickle']);
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stdout, /UNSAFE:\s+acme\/evil-bert@\w+ pytorch_model\.bin: os\.system \(let through: --allow-unsafe-pickle\)/);
    const blob = await readFile(join(cache, 'models--acme--evil-bert', 'snapshots', commits['acme/evil-bert']!, 'pytorch_model.bin'));
    assert.ok(blob.length > 0);
    // cache verify re-hashes and re-judges what is in the cache
    const cacheVerify = await runAirlock(['cache', 'verify', '--cache-dir', cache]);
    assert.equal(cacheVerify.code, 0, cacheVerify.stderr);
    assert.match(cacheVerify.stdout, /content acme\/evil-bert pytorch_model\.bin \(torch-zip\): UNSAFE: would import os\.system/);
    // inspect shows what the exporter recorded, and says it is the exporter's judgement
    const inspect = await runAirlock(['inspect', bundle]);
    assert.match(inspect.stdout, /pytorch_model\.bin .*\[unsafe: .*os\.system.* — as the exporter judged; verify\/import judge again\]/);
    // airlock serve answers the verdict import recorded as the Hub's securityFileStatus (expand=true)
    const served = await startServer({ cacheDir: cache, host: '127.0.0.1', port: 0 });
    try {
      const tree = (await (await fetch(`${served.url}/api/models/acme/evil-bert/tree/main?expand=true`)).json()) as Array<{ path: string; securityFileStatus?: { status: string; pickleImportScan: { highestSafetyLevel: string; imports: Array<{ module: string; name: string; safety: string }> } } }>;
      const status = tree.find((e) => e.path === 'pytorch_model.bin')?.securityFileStatus;
      assert.equal(status?.status, 'unsafe');
      assert.equal(status?.pickleImportScan.highestSafetyLevel, 'dangerous');
      assert.ok(status?.pickleImportScan.imports.some((i) => i.module === 'os' && i.name === 'system' && i.safety === 'dangerous'), JSON.stringify(status));
      assert.equal(tree.find((e) => e.path === 'config.json')?.securityFileStatus, undefined, 'a file without code claims no scan');
    } finally {
      await served.close();
    }
  });
});

describe('content policy: a site widens the allow-list for its own globals', () => {
  let bundle: string;
  before(async () => {
    bundle = await exportRepo('acme/custom');
  });

  test('refused by default, accepted with --allow-global or a policy file; a wildcard is a usage error', async () => {
    const refused = await runAirlock(['verify', bundle, '--trusted-keys', pub]);
    assert.equal(refused.code, 3);
    assert.match(refused.stderr, /table\.pkl \(pickle\) would import mysite\.formats\.Table/);
    const flag = await runAirlock(['verify', bundle, '--trusted-keys', pub, '--allow-global', 'mysite.formats.Table']);
    assert.equal(flag.code, 0, flag.stderr);
    assert.match(flag.stdout, /table\.pkl \(pickle\): safe/);
    const policy = join(dir, 'site-policy.txt');
    await writeFile(policy, '# our own formats\nmysite.formats.Table\n\n');
    const cache = join(dir, 'cache-custom');
    const imp = await runAirlock(['import', bundle, '--trusted-keys', pub, '--content-policy', policy], { env: { HF_HUB_CACHE: cache } });
    assert.equal(imp.code, 0, imp.stderr);
    assert.match(imp.stdout, /allow-list widened by mysite\.formats\.Table/);
    const bad = await runAirlock(['verify', bundle, '--trusted-keys', pub, '--allow-global', 'mysite.*']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /not a module\.name global: "mysite\.\*"/);
  });
});

describe('content policy: the offline side never trusts the exporter\'s verdict', () => {
  test('a signed manifest calling os.system "safe", a truncated GGUF, a zip trick: refused, nothing written', async () => {
    const key = await makeTestKey();
    const evilZip = Buffer.concat([
      // a one-member zip whose central directory names the member differently from its local header
      ...(() => {
        const name = Buffer.from('archive/data.pkl');
        const local = Buffer.alloc(30);
        local.writeUInt32LE(0x04034b50, 0);
        local.writeUInt32LE(EVIL.length, 18);
        local.writeUInt32LE(EVIL.length, 22);
        local.writeUInt16LE(name.length, 26);
        const cd = Buffer.alloc(46);
        cd.writeUInt32LE(0x02014b50, 0);
        cd.writeUInt32LE(EVIL.length, 20);
        cd.writeUInt32LE(EVIL.length, 24);
        cd.writeUInt16LE(name.length, 28);
        const cdName = Buffer.from('archive/data.txt');
        const end = Buffer.alloc(22);
        end.writeUInt32LE(0x06054b50, 0);
        end.writeUInt16LE(1, 8);
        end.writeUInt16LE(1, 10);
        end.writeUInt32LE(46 + cdName.length, 12);
        end.writeUInt32LE(30 + name.length + EVIL.length, 16);
        return [local, name, EVIL, cd, cdName, end];
      })(),
    ]);
    const gguf = Buffer.concat([Buffer.from('GGUF'), Buffer.from([3, 0, 0, 0]), Buffer.alloc(8, 0), Buffer.from([1, 0, 0, 0, 0, 0, 0, 0])]);
    const cases = [
      { path: 'model.pkl', data: EVIL, claim: 'safe', expect: /model\.pkl \(pickle\) would import os\.system/ },
      { path: 'model.gguf', data: gguf, claim: 'no-code', expect: /model\.gguf \(gguf\) cannot be fully analysed/ },
      { path: 'weights.zip', data: evilZip, claim: 'no-code', expect: /weights\.zip \(torch-zip\) would import os\.system/ },
    ];
    for (const c of cases) {
      const bundle = join(dir, `lie-${c.path}.airlock.tar`);
      await writeBundleFile(bundle, {
        repos: [{ id: 'acme/liar', files: [{ path: 'README.md', data: '# hi\n' }, { path: c.path, data: c.data, lfs: true }] }],
        signer: key.signer,
        editManifest: (m) => {
          for (const f of m.repos[0]!.files) f.content = { verdict: c.claim as 'safe', format: 'pickle' };
        },
      });
      const cache = join(dir, `cache-lie-${c.path}`);
      const beforeTree = await snapshotTree(cache);
      await assert.rejects(importBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, cacheDir: cache, handleSignals: false }), (error: unknown) => {
        assert.ok(isAirlockError(error, 'E_UNSAFE_CONTENT'), String(error));
        assert.match(error.message, c.expect);
        return true;
      });
      assert.equal(formatTree(await snapshotTree(cache)), formatTree(beforeTree));
      await assert.rejects(verifyBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys }), (error: unknown) => isAirlockError(error, 'E_UNSAFE_CONTENT'));
      const allowed = await verifyBundle({ bundlePath: bundle, trustedKeys: key.trustedKeys, contentPolicy: { allowGlobals: [], allowUnsafe: true } });
      assert.equal(allowed.content?.files.find((f) => f.path === c.path)?.verdict !== 'safe', true);
    }
  });
});
