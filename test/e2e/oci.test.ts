/**
 * publish → registry → pull, against a real registry (Debian's docker-registry, CNCF distribution 2.8)
 * started on loopback: the round trip ends in a cache huggingface_hub and transformers load offline;
 * a re-publish uploads nothing; multi-repo, dataset and split bundles publish; skopeo copies the
 * artifact and its blobs are the files; the docs/oci.md audit recipe (curl, jq, gpg, no airlock) holds;
 * and a registry that serves altered content is refused with the cache left as it was.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHubServer, type AddedCommit, type HubServer } from '../support/hub-server.ts';
import { run, runAirlock, runAirlockOnTerminal } from '../support/cli.ts';
import { runPython } from '../support/python.ts';
import { sampleModelFiles } from '../support/sample-model.ts';
import { snapshotTree } from '../support/cache-snapshot.ts';
import { startRegistry, type TestRegistry } from '../support/registry.ts';
import { Ajv2020 } from 'ajv/dist/2020.js';

let hub: HubServer;
let registry: TestRegistry;
let dir: string;
let keys: string;
let model: AddedCommit;
let dataset: AddedCommit;
let single: string;
let multi: string;

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const pub = (): string => join(keys, 'signer.pub.asc');
const datasetFiles = [
  { path: 'README.md', data: Buffer.from('# evals\nA tiny evaluation set.\n') },
  { path: 'data/test.jsonl', data: Buffer.from('{"q":"air gap?","a":"signed"}\n{"q":"verified?","a":"yes"}\n') },
];

async function exportBundle(args: string[], out: string): Promise<void> {
  const r = await runAirlock(['export', ...args, '--sign-key', join(keys, 'signer.key.asc'), '-o', out], { env: { HF_ENDPOINT: hub.endpoint } });
  assert.equal(r.code, 0, r.stderr);
}

async function publish(bundle: string, prefix: string, extra: string[] = [], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string; json: any }> {
  const r = await runAirlock(['publish', bundle, '--to', `oci://${registry.host}/${prefix}`, '--trusted-keys', pub(), '--plain-http', '--json', ...extra], { env });
  let json: any;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    json = undefined;
  }
  return { ...r, json };
}

async function pull(reference: string, cache: string, extra: string[] = [], env: Record<string, string> = {}) {
  return runAirlock(['pull', `oci://${registry.host}/${reference}`, '--trusted-keys', pub(), '--plain-http', '--cache-dir', cache, ...extra], { env });
}

async function registryGet(path: string, accept = 'application/vnd.oci.image.manifest.v1+json'): Promise<Buffer> {
  const r = await fetch(`http://${registry.host}${path}`, { headers: { accept } });
  assert.equal(r.status, 200, `${path}: ${r.status}`);
  return Buffer.from(await r.arrayBuffer());
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-oci-'));
  hub = await startHubServer();
  model = await hub.addRepo({ id: 'acme/tiny-llm', files: sampleModelFiles() });
  dataset = await hub.addRepo({ id: 'acme/evals', type: 'dataset', files: datasetFiles });
  keys = join(dir, 'keys');
  assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'ML Platform <mlops@example.org>', '--out-dir', keys])).code, 0);
  single = join(dir, 'tiny.airlock.tar');
  await exportBundle(['acme/tiny-llm', '--revision', 'main'], single);
  multi = join(dir, 'multi.airlock.tar');
  await exportBundle(['acme/tiny-llm', 'datasets/acme/evals'], multi);
  registry = await startRegistry();
});

after(async () => {
  await registry?.close();
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('publish, pull and inspect oci:// speak the one --json vocabulary', () => {
  test('each result validates against schemas/cli-result.schema.json: ok, command, signers, repos (an array), cache', async () => {
    const schema = JSON.parse(await readFile(new URL('../../schemas/cli-result.schema.json', import.meta.url), 'utf8')) as object;
    const validate = new Ajv2020({ allErrors: true, strict: false }).compile(schema);
    const check = (what: string, json: unknown): any => {
      assert.ok(validate(json), `${what}: ${JSON.stringify(validate.errors)}\n${JSON.stringify(json)}`);
      return json;
    };
    const p = check('publish', (await publish(single, 'vocab')).json);
    assert.equal(p.command, 'publish');
    assert.equal(p.signers[0].verified, true);
    const cache = join(dir, 'vocab-cache');
    const pulled = await pull('vocab/acme/tiny-llm:main', cache, ['--json']);
    assert.equal(pulled.code, 0, pulled.stderr);
    const r = check('pull', JSON.parse(pulled.stdout));
    assert.equal(r.command, 'pull');
    assert.deepEqual(r.cache, { layout: 'hf', path: cache });
    assert.equal(r.repos[0].id, 'acme/tiny-llm');
    const inspected = await runAirlock(['inspect', `oci://${registry.host}/vocab/acme/tiny-llm:main`, '--plain-http', '--json']);
    assert.equal(inspected.code, 0, inspected.stderr);
    const i = check('inspect oci://', JSON.parse(inspected.stdout));
    assert.equal(i.signatureChecked, false);
    assert.deepEqual(i.signers, [], 'nothing is claimed about signers that were not checked');
    const refused = await pull('vocab/acme/no-such:main', join(dir, 'vocab-cache-2'), ['--json']);
    assert.notEqual(refused.code, 0);
    const e = check('pull (refused)', JSON.parse(refused.stdout));
    assert.equal(e.ok, false);
  });
});

describe('publish and pull talk like verify and import: a line per blob piped, progress on a terminal, one line under --quiet', () => {
  const to = (prefix: string): string[] => ['--to', `oci://${registry.host}/${prefix}`, '--trusted-keys', pub(), '--plain-http'];
  const from = (prefix: string, cache: string): string[] => [`oci://${registry.host}/${prefix}/acme/tiny-llm:main`, '--trusted-keys', pub(), '--plain-http', '--cache-dir', cache];

  test('piped: one stderr line per blob and per layer, and the summary on stdout', async () => {
    const p = await runAirlock(['publish', single, ...to('talk-piped')]);
    assert.equal(p.code, 0, p.stderr);
    assert.match(p.stderr, /^ {2}uploaded +talk-piped\/acme\/tiny-llm model\.safetensors \(/m);
    assert.match(p.stdout, /^Published /);
    const l = await pull('talk-piped/acme/tiny-llm:main', join(dir, 'talk-piped-cache'));
    assert.equal(l.code, 0, l.stderr);
    assert.match(l.stderr, /^ {2}verified model\.safetensors \(/m);
    assert.doesNotMatch(p.stderr + l.stderr, /total .* files/, 'no progress block when piped');
  });

  test('--quiet: the one result line and nothing else, piped and on a terminal', async () => {
    const p = await runAirlock(['publish', single, ...to('talk-quiet'), '--quiet']);
    assert.equal(p.code, 0, p.stderr);
    assert.equal(p.stderr, '');
    assert.match(p.stdout, new RegExp(`^Published \\S+ to oci://${registry.host}/talk-quiet/acme/tiny-llm:main oci://${registry.host}/talk-quiet/acme/tiny-llm:${model.commit}: \\d+ blobs uploaded \\([\\d.]+ \\S+\\), 0 already there\\n$`));
    const l = await runAirlock(['pull', ...from('talk-quiet', join(dir, 'talk-quiet-cache')), '--quiet']);
    assert.equal(l.code, 0, l.stderr);
    assert.equal(l.stderr, '');
    assert.match(l.stdout, /^Pulled \S+ into \S+: \d+ files, [\d.]+ \S+\n$/);
    const again = await runAirlockOnTerminal(['publish', single, ...to('talk-quiet'), '--quiet']);
    assert.equal(again.code, 0, again.text);
    assert.match(again.text, /^Published \S+ to [^\n]*: 0 blobs uploaded \(0 B\), \d+ already there\r?\n$/, JSON.stringify(again.text));
    const tty = await runAirlockOnTerminal(['pull', ...from('talk-quiet', join(dir, 'talk-quiet-cache-2')), '--quiet']);
    assert.equal(tty.code, 0, tty.text);
    assert.match(tty.text, /^Pulled \S+ into \S+: \d+ files, [^\n]*\r?\n$/, JSON.stringify(tty.text));
  });

  test('on a terminal: publish shows the verification then the upload, pull the download, as a live block', async () => {
    const p = await runAirlockOnTerminal(['publish', single, ...to('talk-tty')]);
    assert.equal(p.code, 0, p.text);
    assert.match(p.text, /total [\d.]+ \S+ \/ [\d.]+ \S+ \(\d+%\)\s+\d+\/\d+ files/, p.text);
    assert.match(p.text, /\x1b\[\d+A\x1b\[0J/, 'redrawn in place');
    assert.doesNotMatch(p.text, /^ {2}uploaded /m, 'no line per blob under the progress block');
    assert.match(p.text, /Published /);
    const l = await runAirlockOnTerminal(['pull', ...from('talk-tty', join(dir, 'talk-tty-cache'))]);
    assert.equal(l.code, 0, l.text);
    assert.match(l.text, /total [\d.]+ \S+ \/ [\d.]+ \S+ \(\d+%\)\s+\d+\/\d+ files/, l.text);
    assert.doesNotMatch(l.text, /^ {2}verified /m);
    assert.match(l.text, /Pulled /);
  });
});

describe('a plain-HTTP registry addressed without --plain-http', () => {
  test('publish, pull and inspect say so in one line with the hint, exit 4, and write nothing', async () => {
    const cache = join(dir, 'no-plain-http-cache');
    const runs = [
      await runAirlock(['publish', single, '--to', `oci://${registry.host}/noplain`, '--trusted-keys', pub()]),
      await runAirlock(['pull', `oci://${registry.host}/vocab/acme/tiny-llm:main`, '--trusted-keys', pub(), '--cache-dir', cache]),
      await runAirlock(['inspect', `oci://${registry.host}/vocab/acme/tiny-llm:main`]),
    ];
    for (const r of runs) {
      assert.equal(r.code, 4, r.stderr);
      assert.match(r.stderr, /^airlock: error: \S+ https:\/\/\S+: the TLS handshake failed: the server answered in plain HTTP\n {2}hint: the registry speaks plain HTTP: add --plain-http/, r.stderr);
      assert.doesNotMatch(r.stderr, /ssl3_get_record|openssl/i, 'no OpenSSL record dump');
    }
    assert.equal(await snapshotTree(cache), null, 'nothing written, not even the cache folder');
  });
});

describe('what loading would run (issue 17) is judged on both sides of the registry', () => {
  test('publish refuses a pickle that would call os.system unless allowed; pull judges again and refuses, cache unchanged', async () => {
    // protocol 2: GLOBAL os.system, the argument "true", REDUCE — what pickle.loads would run
    const evil = Buffer.from('\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.', 'latin1');
    await hub.addRepo({ id: 'acme/evil-pkl', files: [{ path: 'config.json', data: Buffer.from('{}\n') }, { path: 'model.pkl', data: evil }] });
    const bundle = join(dir, 'evil.airlock.tar');
    await exportBundle(['acme/evil-pkl'], bundle);
    const refused = await publish(bundle, 'unsafe');
    assert.equal(refused.code, 3, refused.stderr);
    assert.equal(refused.json.error.code, 'E_UNSAFE_CONTENT');
    assert.match(refused.json.error.message, /model\.pkl[\s\S]*os\.system/);
    const allowed = await publish(bundle, 'unsafe', ['--allow-unsafe-pickle']);
    assert.equal(allowed.code, 0, allowed.stderr);

    const cache = join(dir, 'unsafe-cache');
    await mkdir(cache);
    const before = await snapshotTree(cache);
    const pulled = await pull('unsafe/acme/evil-pkl:main', cache, ['--json']);
    assert.equal(pulled.code, 3, pulled.stderr);
    assert.equal(JSON.parse(pulled.stdout).error.code, 'E_UNSAFE_CONTENT');
    assert.deepEqual(await snapshotTree(cache), before, 'nothing landed');
    const let_through = await pull('unsafe/acme/evil-pkl:main', cache, ['--allow-unsafe-pickle']);
    assert.equal(let_through.code, 0, let_through.stderr);
    assert.match(let_through.stdout, /UNSAFE: would import os\.system/);
  });
});

describe('publish and pull', () => {
  test('round trip: the pulled cache is the imported cache, and huggingface_hub + transformers load it offline', { timeout: 300_000 }, async () => {
    const p = await publish(single, 'models');
    assert.equal(p.code, 0, p.stderr);
    const repo = p.json.repos[0];
    assert.equal(repo.repository, 'models/acme/tiny-llm');
    assert.deepEqual(repo.tags, ['main', model.commit]);
    assert.ok(repo.bytesUploaded >= sampleModelFiles().reduce((n, f) => n + f.data.length, 0));
    assert.ok(repo.blobsUploaded >= sampleModelFiles().length + 3, JSON.stringify(repo));

    // the ModelPack manifest: one raw layer per file, digest = the file's sha256, title = filepath = path
    const manifest = JSON.parse((await registryGet(`/v2/models/acme/tiny-llm/manifests/main`)).toString());
    assert.equal(manifest.artifactType, 'application/vnd.cncf.model.manifest.v1+json');
    assert.equal(manifest.config.mediaType, 'application/vnd.cncf.model.config.v1+json');
    for (const f of sampleModelFiles()) {
      const layer = manifest.layers.find((l: any) => l.annotations['org.cncf.model.filepath'] === f.path);
      assert.ok(layer, f.path);
      assert.equal(layer.digest, `sha256:${sha(f.data)}`);
      assert.equal(layer.annotations['org.opencontainers.image.title'], f.path);
      assert.match(layer.mediaType, /^application\/vnd\.cncf\.model\.(weight|weight\.config|doc|code)\.v1\.raw$/);
      assert.equal(JSON.parse(layer.annotations['org.cncf.model.file.metadata+json']).size, f.data.length);
    }
    assert.equal(manifest.layers.find((l: any) => l.annotations['org.cncf.model.filepath'] === 'model.safetensors').mediaType, 'application/vnd.cncf.model.weight.v1.raw');
    const titles = manifest.layers.map((l: any) => l.annotations['org.opencontainers.image.title']);
    for (const t of ['SHA256SUMS', 'SHA256SUMS.asc', 'manifest.json']) assert.ok(titles.includes(t), t);
    const config = JSON.parse((await registryGet(`/v2/models/acme/tiny-llm/blobs/${manifest.config.digest}`, '*/*')).toString());
    assert.equal(config.descriptor.name, 'acme/tiny-llm');
    assert.equal(config.descriptor.revision, model.commit);
    assert.equal(config.modelfs.type, 'layers');
    assert.deepEqual(config.modelfs.diffIds, manifest.layers.map((l: any) => l.digest));

    // the second node: a fresh cache, by tag; the result is byte for byte what import makes
    const pulled = join(dir, 'node2-cache');
    const r = await pull('models/acme/tiny-llm:main', pulled);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /signature: good, by/);
    const imported = join(dir, 'imported-cache');
    const imp = await runAirlock(['import', single, '--trusted-keys', pub(), '--cache-dir', imported]);
    assert.equal(imp.code, 0, imp.stderr);
    const strip = (t: Awaited<ReturnType<typeof snapshotTree>>) => JSON.stringify(t?.filter((e) => !e.path.startsWith('.locks')).map((e) => ({ ...e, mtimeMs: 0 })));
    assert.equal(strip(await snapshotTree(pulled)), strip(await snapshotTree(imported)));

    const load = await runPython(
      `
import json
from huggingface_hub import snapshot_download, scan_cache_dir
from transformers import AutoTokenizer, AutoModelForCausalLM
import torch
path = snapshot_download("acme/tiny-llm", local_files_only=True)
info = scan_cache_dir()
tok = AutoTokenizer.from_pretrained("acme/tiny-llm")
model = AutoModelForCausalLM.from_pretrained("acme/tiny-llm")
with torch.no_grad():
    logits = model(**tok("the model crosses the air gap", return_tensors="pt")).logits
print(json.dumps({"snapshot": path, "warnings": [str(w) for w in info.warnings], "finite": bool(torch.isfinite(logits).all()), "vocab": model.config.vocab_size, "shape": list(logits.shape)}))
`,
      { HF_HUB_OFFLINE: '1', HF_HUB_CACHE: pulled, HF_ENDPOINT: 'http://127.0.0.1:9' },
      { timeoutMs: 240_000 },
    );
    assert.equal(load.code, 0, load.stderr);
    const result = JSON.parse(load.stdout.trim().split('\n').pop()!);
    assert.equal(result.snapshot, join(pulled, 'models--acme--tiny-llm', 'snapshots', model.commit));
    assert.deepEqual(result.warnings, []);
    assert.equal(result.finite, true);
    assert.equal(result.shape[2], result.vocab);

    // by digest, into a plain dir
    const local = join(dir, 'node2-dir');
    const d = await runAirlock(['pull', `oci://${registry.host}/models/acme/tiny-llm@${repo.digest}`, '--trusted-keys', pub(), '--plain-http', '--layout', 'dir', '--local-dir', local]);
    assert.equal(d.code, 0, d.stderr);
    for (const f of sampleModelFiles()) assert.equal(sha(await readFile(join(local, f.path))), sha(f.data), f.path);
  });

  test('re-publishing an unchanged bundle uploads zero blob bytes', async () => {
    const again = await publish(single, 'models');
    assert.equal(again.code, 0, again.stderr);
    assert.equal(again.json.bytesUploaded, 0);
    assert.equal(again.json.blobsUploaded, 0);
    assert.equal(again.json.repos[0].blobsSkipped, again.json.repos[0].layers + 1);
  });

  test('a re-pull on a warm node downloads nothing: files already in the cache are re-hashed, not fetched', async () => {
    const cache = join(dir, 'warm-cache');
    const first = await pull('models/acme/tiny-llm:main', cache, ['--json']);
    assert.equal(first.code, 0, first.stderr);
    assert.ok(JSON.parse(first.stdout).bytesDownloaded >= sampleModelFiles().reduce((n, f) => n + f.data.length, 0));
    const again = await pull('models/acme/tiny-llm:main', cache, ['--json']);
    assert.equal(again.code, 0, again.stderr);
    const result = JSON.parse(again.stdout);
    assert.equal(result.bytesDownloaded, 0);
    assert.equal(result.filesPresent, sampleModelFiles().length);
    assert.equal(result.repo.filesWritten, 0);
  });

  test('--layout modelscope: the same artifact lands in a ModelScope cache, committed by the same writer as import', async () => {
    const cache = join(dir, 'ms-cache');
    const r = await pull('models/acme/tiny-llm:main', cache, ['--layout', 'modelscope']);
    assert.equal(r.code, 0, r.stderr);
    const imported = join(dir, 'ms-imported');
    const imp = await runAirlock(['import', single, '--trusted-keys', pub(), '--layout', 'modelscope', '--cache-dir', imported]);
    assert.equal(imp.code, 0, imp.stderr);
    const strip = (t: Awaited<ReturnType<typeof snapshotTree>>) => JSON.stringify(t?.filter((e) => !e.path.startsWith('.locks') && !e.path.includes('/._____temp')).map((e) => ({ path: e.path, sha256: (e as { sha256?: string }).sha256 })));
    assert.equal(strip(await snapshotTree(cache)), strip(await snapshotTree(imported)));
    const weightsPath = (await snapshotTree(cache))!.find((e) => e.path.endsWith('/model.safetensors'));
    assert.ok(weightsPath, 'model.safetensors is in the modelscope cache');
  });

  test('two repos in one bundle: a model and a dataset, shared trust layers mounted across repositories', async () => {
    const p = await publish(multi, 'fleet');
    assert.equal(p.code, 0, p.stderr);
    const repos = p.json.repos.map((r: any) => r.repository).sort();
    assert.deepEqual(repos, ['fleet/acme/tiny-llm', 'fleet/datasets/acme/evals']);
    // SHA256SUMS, its signature and manifest.json are the same blobs in both: the second repo mounts them
    assert.ok(p.json.blobsMounted >= 3, JSON.stringify(p.json.repos));
    const cache = join(dir, 'dataset-cache');
    const r = await pull('fleet/datasets/acme/evals:main', cache);
    assert.equal(r.code, 0, r.stderr);
    const snap = join(cache, 'datasets--acme--evals', 'snapshots', dataset.commit);
    for (const f of datasetFiles) assert.equal(sha(await readFile(join(snap, f.path))), sha(f.data), f.path);
    const manifest = JSON.parse((await registryGet('/v2/fleet/datasets/acme/evals/manifests/main')).toString());
    assert.ok(manifest.layers.filter((l: any) => l.annotations['org.model-airlock.role'] === undefined).every((l: any) => l.mediaType === 'application/vnd.cncf.model.dataset.v1.raw'));
  });

  test('split volumes publish in place; files already in the repository are not uploaded again', async () => {
    const media = join(dir, 'usb');
    await mkdir(media);
    await exportBundle(['acme/tiny-llm', '--revision', 'main', '--split-size', '1MiB'], join(media, 'tiny.airlock.tar'));
    const first = join(media, 'tiny.airlock.tar.000');
    const p = await publish(first, 'models');
    assert.equal(p.code, 0, p.stderr);
    const payload = sampleModelFiles().reduce((n, f) => n + f.data.length, 0);
    // only the new trust layers and config: every payload file was already there
    assert.ok(p.json.bytesUploaded < payload, `${p.json.bytesUploaded} of ${payload}`);
    assert.equal(p.json.repos[0].blobsSkipped, sampleModelFiles().length);
    const cache = join(dir, 'split-cache');
    const r = await pull(`models/acme/tiny-llm:${model.commit}`, cache);
    assert.equal(r.code, 0, r.stderr);
  });

  test('skopeo copies the artifact to an OCI layout; its blobs are the files', async () => {
    const layout = join(dir, 'oci-layout');
    const r = await run('skopeo', ['copy', '--src-tls-verify=false', `docker://${registry.host}/models/acme/tiny-llm:main`, `oci:${layout}:main`]);
    assert.equal(r.code, 0, r.stderr);
    const blobs = new Set(await readdir(join(layout, 'blobs', 'sha256')));
    for (const f of sampleModelFiles()) {
      const digest = sha(f.data);
      assert.ok(blobs.has(digest), f.path);
      assert.ok((await readFile(join(layout, 'blobs', 'sha256', digest))).equals(f.data), f.path);
    }
  });

  test('the docs/oci.md audit recipe: curl, jq, gpg and sha256sum, no airlock', async () => {
    const docs = await readFile(new URL('../../docs/oci.md', import.meta.url), 'utf8');
    const recipe = /```bash audit\n([\s\S]*?)```/.exec(docs)?.[1];
    assert.ok(recipe, 'docs/oci.md has a ```bash audit block');
    const work = join(dir, 'audit');
    await mkdir(work);
    const gnupg = join(dir, 'gnupg-audit');
    await mkdir(gnupg, { mode: 0o700 });
    const env = { REGISTRY: `http://${registry.host}`, REPO: 'models/acme/tiny-llm', TAG: 'main', GNUPGHOME: gnupg, SIGNER_KEY: pub() };
    const ok = await run('bash', ['-euo', 'pipefail', '-c', recipe], { cwd: work, env });
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /ALL LAYERS MATCH THE SIGNED SHA256SUMS/);
  });
});

describe('a registry that serves altered content is refused, the cache unchanged', () => {
  test('a blob flipped in the registry storage on disk', async () => {
    await publish(single, 'flip');
    const weights = sampleModelFiles().find((f) => f.path === 'model.safetensors')!;
    const path = registry.blobPath(`sha256:${sha(weights.data)}`);
    const bytes = await readFile(path);
    bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0x01;
    await writeFile(path, bytes);
    const cache = join(dir, 'flip-cache');
    await mkdir(cache);
    await writeFile(join(cache, 'keep.txt'), 'untouched');
    const before = await snapshotTree(cache);
    const r = await pull('flip/acme/tiny-llm:main', cache, [], { AIRLOCK_RETRY_ATTEMPTS: '1' });
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /E_HASH_MISMATCH/);
    assert.match(r.stderr, /model\.safetensors/);
    assert.deepEqual(await snapshotTree(cache), before);
    // restore for the other tests (blobs are shared across repositories)
    bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0x01;
    await writeFile(path, bytes);
  });

  test("a manifest replaced by another model's", async () => {
    const other = await hub.addRepo({ id: 'acme/other-llm', files: [{ path: 'config.json', data: Buffer.from('{"model_type":"other"}\n') }, { path: 'README.md', data: Buffer.from('# other\n') }] });
    assert.ok(other.commit);
    const otherBundle = join(dir, 'other.airlock.tar');
    await exportBundle(['acme/other-llm'], otherBundle);
    assert.equal((await publish(otherBundle, 'swap')).code, 0);
    assert.equal((await publish(single, 'swap')).code, 0);
    // the registry (or whoever controls it) puts the other model's signed artifact under this name and tag
    const copy = await run('skopeo', ['copy', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${registry.host}/swap/acme/other-llm:main`, `docker://${registry.host}/swap/acme/tiny-llm:main`]);
    assert.equal(copy.code, 0, copy.stderr);
    const cache = join(dir, 'swap-cache');
    const r = await pull('swap/acme/tiny-llm:main', cache);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /E_MANIFEST_INVALID/);
    assert.match(r.stderr, /acme\/other-llm/);
    assert.equal(await snapshotTree(cache), null);
  });

  test('a layer from another model, and trust material from another bundle', async () => {
    // hand-made hostile manifests in the same registry: take the real one, change one thing
    const base = JSON.parse((await registryGet('/v2/models/acme/tiny-llm/manifests/main')).toString());
    const other = JSON.parse((await registryGet('/v2/swap/acme/other-llm/manifests/main')).toString());
    const put = async (repo: string, tag: string, manifest: unknown): Promise<void> => {
      // blobs must be in the target repository first: mount them
      for (const d of [(manifest as any).config, ...(manifest as any).layers]) {
        for (const from of ['models/acme/tiny-llm', 'swap/acme/other-llm']) {
          const m = await fetch(`http://${registry.host}/v2/${repo}/blobs/uploads/?mount=${d.digest}&from=${from}`, { method: 'POST' });
          await m.arrayBuffer();
          if (m.status === 201) break;
        }
      }
      const r = await fetch(`http://${registry.host}/v2/${repo}/manifests/${tag}`, { method: 'PUT', headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, body: JSON.stringify(manifest) });
      assert.equal(r.status, 201, await r.text());
    };
    const foreignLayer = structuredClone(base);
    const readme = foreignLayer.layers.findIndex((l: any) => l.annotations['org.cncf.model.filepath'] === 'README.md');
    const otherReadme = other.layers.find((l: any) => l.annotations['org.cncf.model.filepath'] === 'README.md');
    foreignLayer.layers[readme] = otherReadme;
    await put('hostile/acme/tiny-llm', 'main', foreignLayer);
    const cache = join(dir, 'hostile-cache');
    let r = await pull('hostile/acme/tiny-llm:main', cache);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /E_HASH_MISMATCH/);
    assert.match(r.stderr, /README\.md/);
    assert.equal(await snapshotTree(cache), null);

    const foreignTrust = structuredClone(base);
    for (const role of ['sums', 'signature', 'manifest']) {
      const i = foreignTrust.layers.findIndex((l: any) => l.annotations['org.model-airlock.role'] === role);
      foreignTrust.layers[i] = other.layers.find((l: any) => l.annotations['org.model-airlock.role'] === role);
    }
    await put('hostile2/acme/tiny-llm', 'main', foreignTrust);
    r = await pull('hostile2/acme/tiny-llm:main', cache);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /E_MANIFEST_INVALID/);
    assert.match(r.stderr, /acme\/other-llm/);
    assert.equal(await snapshotTree(cache), null);
  });

  test('a key that is not trusted: refused before any layer is fetched', async () => {
    const stranger = join(dir, 'stranger');
    assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'Stranger <s@example.org>', '--out-dir', stranger])).code, 0);
    const cache = join(dir, 'untrusted-cache');
    const r = await runAirlock(['pull', `oci://${registry.host}/models/acme/tiny-llm:main`, '--trusted-keys', join(stranger, 'signer.pub.asc'), '--plain-http', '--cache-dir', cache]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /E_SIGNATURE_UNTRUSTED/);
    assert.equal(await snapshotTree(cache), null);
  });
});
