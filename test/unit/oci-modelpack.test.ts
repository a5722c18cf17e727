/** The bundle ↔ ModelPack mapping, references and credential lookup: pure parts of src/registry. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import type { Manifest, ManifestRepo } from '../../src/bundle/manifest.ts';
import { buildArtifact, layerKind, parseArtifactManifest } from '../../src/registry/modelpack.ts';
import { parseOciReference, repositoryFor, tagsFor } from '../../src/registry/reference.ts';
import { findCredentials } from '../../src/registry/credentials.ts';

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

const repo: ManifestRepo = {
  type: 'model',
  id: 'Acme/Tiny-LLM',
  revision: 'refs/pr/1',
  commit: 'a'.repeat(40),
  source: { kind: 'huggingface', endpoint: 'https://huggingface.co' },
  files: [
    { path: 'config.json', size: 10, sha256: sha('c'), etag: 'e1', blobId: 'e1', lfs: false },
    { path: 'model.safetensors', size: 20, sha256: sha('w'), etag: sha('w'), blobId: 'b2', lfs: true },
    { path: 'README.md', size: 5, sha256: sha('r'), etag: 'e3', blobId: 'e3', lfs: false },
  ],
};
const bundle: Manifest = { format: 'model-airlock-bundle', formatVersion: 1, tool: { name: 'model-airlock', version: '0.1.0' }, createdAt: '2026-01-01T00:00:00.000Z', repos: [repo] };
const trust = [
  { role: 'sums' as const, sha256: sha('s'), size: 100 },
  { role: 'signature' as const, sha256: sha('a'), size: 300 },
  { role: 'manifest' as const, sha256: sha('m'), size: 900 },
];

test('the config validates against the ModelPack config schema; diffIds are every layer digest', async () => {
  const artifact = buildArtifact(bundle, repo, trust, (b) => createHash('sha256').update(b).digest('hex'));
  const schema = JSON.parse(await readFile(new URL('../../schemas/modelpack-config.schema.json', import.meta.url), 'utf8')) as object;
  const ajv = addFormats(new Ajv2020({ allErrors: true, strict: true }));
  const validate = ajv.compile(schema);
  const config = JSON.parse(artifact.configBytes.toString('utf8'));
  assert.ok(validate(structuredClone(config)), JSON.stringify(validate.errors));
  assert.deepEqual(config.modelfs.diffIds, artifact.manifest.layers.map((l) => l.digest));
  assert.equal(config.descriptor.revision, repo.commit);
  assert.equal(config.config.format, 'safetensors');
  // a config with an extra key is refused by the same schema (the schema does check)
  assert.equal(validate({ ...(config as object), extra: 1 }), false);
  assert.equal(artifact.manifest.config.digest, `sha256:${createHash('sha256').update(artifact.configBytes).digest('hex')}`);
  // deterministic: the same bundle gives the same bytes (re-publish changes nothing)
  assert.deepEqual(buildArtifact(bundle, repo, trust, (b) => createHash('sha256').update(b).digest('hex')).configBytes, artifact.configBytes);
});

test('layer kinds follow the spec; a repo file named like trust material moves the trust layer aside', () => {
  assert.deepEqual(layerKind(repo, 'model-00001-of-00002.safetensors'), { kind: 'weight', guessed: false });
  assert.deepEqual(layerKind(repo, 'tokenizer.json'), { kind: 'weight.config', guessed: false });
  assert.deepEqual(layerKind(repo, 'LICENSE'), { kind: 'doc', guessed: false });
  assert.deepEqual(layerKind(repo, 'modeling_x.py'), { kind: 'code', guessed: false });
  assert.deepEqual(layerKind({ type: 'dataset' }, 'data/train.parquet'), { kind: 'dataset', guessed: false });
  assert.equal(layerKind(repo, 'weird.xyz').guessed, true);
  const clash = { ...repo, files: [...repo.files, { path: 'manifest.json', size: 2, sha256: sha('x'), etag: 'e4', blobId: 'e4', lfs: false }] };
  const artifact = buildArtifact({ ...bundle, repos: [clash] }, clash, trust, (b) => createHash('sha256').update(b).digest('hex'));
  const titles = artifact.manifest.layers.map((l) => l.annotations!['org.opencontainers.image.title']);
  assert.ok(titles.includes('manifest.json') && titles.includes('.airlock/manifest.json'));
});

test('readers accept the older vnd.cnai / org.cnai names, and refuse non-model artifacts naming why', () => {
  const legacy = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    artifactType: 'application/vnd.cnai.model.manifest.v1+json',
    config: { mediaType: 'application/vnd.cnai.model.config.v1+json', digest: `sha256:${sha('c')}`, size: 2 },
    layers: [{ mediaType: 'application/vnd.cnai.model.weight.v1.raw', digest: `sha256:${sha('w')}`, size: 20, annotations: { 'org.cnai.model.filepath': 'model.safetensors' } }],
  };
  const parsed = parseArtifactManifest(Buffer.from(JSON.stringify(legacy)), 'legacy');
  assert.equal(parsed.layers[0]!.path, 'model.safetensors');
  const image = { ...legacy, artifactType: undefined, config: { ...legacy.config, mediaType: 'application/vnd.oci.image.config.v1+json' } };
  assert.throws(() => parseArtifactManifest(Buffer.from(JSON.stringify(image)), 'img'), /not a ModelPack model artifact/);
  const bad = { ...legacy, layers: [{ mediaType: 'x', digest: 'sha256:nothex', size: -1 }] };
  assert.throws(() => parseArtifactManifest(Buffer.from(JSON.stringify(bad)), 'bad'), (e: Error & { code?: string }) => e.code === 'E_MANIFEST_INVALID' && /layer 0: digest/.test(e.message));
});

test('references, repository names and tags', () => {
  assert.deepEqual(parseOciReference('oci://Registry.lab:5000/models/acme/tiny:main', { needReference: true }), { registry: 'registry.lab:5000', repository: 'models/acme/tiny', reference: 'main' });
  assert.equal(parseOciReference(`oci://r/x/y@sha256:${sha('m')}`, { needReference: true }).reference, `sha256:${sha('m')}`);
  assert.deepEqual(parseOciReference('oci://r:5000/models', { needReference: false }), { registry: 'r:5000', repository: 'models', reference: undefined });
  assert.throws(() => parseOciReference('oci://r/models/Acme:main', { needReference: true }), /not a valid repository path/);
  assert.throws(() => parseOciReference('oci://r/models/a', { needReference: true }), /names no tag/);
  assert.throws(() => parseOciReference('https://r/models', { needReference: false }), /not an oci:\/\//);
  assert.equal(repositoryFor('models', repo), 'models/acme/tiny-llm');
  assert.equal(repositoryFor('models', { type: 'dataset', id: 'acme/evals' }), 'models/datasets/acme/evals');
  assert.deepEqual(tagsFor(repo), ['refs-pr-1', repo.commit]);
  assert.deepEqual(tagsFor({ revision: repo.commit, commit: repo.commit }), [repo.commit]);
});

test('credentials: flags, then REGISTRY_AUTH_FILE, then containers auth.json, then DOCKER_CONFIG', async () => {
  const home = await mkdtemp(join(tmpdir(), 'airlock-creds-'));
  try {
    const entry = (u: string, p: string) => ({ auth: Buffer.from(`${u}:${p}`).toString('base64') });
    await mkdir(join(home, 'docker'));
    await writeFile(join(home, 'docker', 'config.json'), JSON.stringify({ auths: { 'https://reg.lab:5000/v1/': entry('docker', 'pw-d') } }));
    await writeFile(join(home, 'auth.json'), JSON.stringify({ auths: { 'reg.lab:5000': entry('podman', 'pw-p') } }));
    const env = { DOCKER_CONFIG: join(home, 'docker'), XDG_CONFIG_HOME: join(home, 'none') };
    assert.equal((await findCredentials({ registry: 'reg.lab:5000', env, home }))?.username, 'docker');
    assert.equal((await findCredentials({ registry: 'reg.lab:5000', env: { ...env, REGISTRY_AUTH_FILE: join(home, 'auth.json') }, home }))?.username, 'podman');
    assert.equal((await findCredentials({ registry: 'reg.lab:5000', user: 'flag', password: 'x', env, home }))?.username, 'flag');
    assert.equal(await findCredentials({ registry: 'other:5000', env, home }), undefined);
  } finally {
    await rm(home, { recursive: true, force: true });
  }
});
