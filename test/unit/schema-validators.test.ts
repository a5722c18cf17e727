/**
 * Precompiled schema validators (src/schema/validators.ts, made by `npm run build` with
 * scripts/build-validators.ts): the built CLI checks manifests, inventories and bundle specs with ajv's
 * standalone code instead of loading ajv and compiling at every start. Asserted: the build's validators
 * are the ones in use, they reach the same verdict with the same errors as a run-time compile of the
 * schema, a validator made from another version of the schema is not used, and the built CLI does not
 * load ajv's compiler at all.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, symlink, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { makeManifest } from '../support/bundle-builder.ts';
import type * as ValidatorsModule from '../../src/schema/validators.ts';

const root = join(import.meta.dirname, '..', '..');
type Validators = typeof ValidatorsModule;
const built = (await import(pathToFileURL(join(root, 'dist', 'schema', 'validators.js')).href)) as Validators;

const manifest = makeManifest([{ id: 'acme/tiny', files: [{ path: 'config.json', data: '{}\n' }, { path: 'model.safetensors', data: Buffer.alloc(100, 1), lfs: true }] }]).manifest;
const broken: unknown[] = [
  { ...manifest, format: 'something-else' },
  { ...manifest, repos: 'none' },
  { ...manifest, repos: [{ ...manifest.repos[0], files: [{ path: 'x', size: -1 }] }] },
  { ...manifest, extra: true, createdAt: 5 },
  [],
];

test('the build compiled every schema ahead of time, and the CLI uses those', () => {
  for (const name of ['manifest', 'inventory', 'bundle-spec'] as const) assert.equal(built.isPrecompiled(name), true, name);
});

test('a precompiled validator gives the verdict and errors of a run-time compile', async () => {
  const schema = JSON.parse(await readFile(join(root, 'schemas', 'manifest.schema.json'), 'utf8')) as object;
  const runtime = new Ajv2020({ allErrors: true, strict: true }).compile(schema);
  const pre = built.schemaValidator('manifest');
  for (const doc of [manifest, ...broken]) {
    const a = runtime(doc);
    const b = pre(doc);
    assert.equal(b, a, JSON.stringify(doc).slice(0, 80));
    assert.deepEqual(pre.errors ?? null, runtime.errors ?? null);
  }
  assert.equal(pre(manifest), true);
  assert.equal(pre(broken[0]), false);
});

test('a validator built from another version of the schema is not used', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-validators-'));
  try {
    await mkdir(join(dir, 'dist'), { recursive: true });
    await cp(join(root, 'dist', 'schema'), join(dir, 'dist', 'schema'), { recursive: true });
    await cp(join(root, 'dist', 'validators'), join(dir, 'dist', 'validators'), { recursive: true });
    await cp(join(root, 'schemas'), join(dir, 'schemas'), { recursive: true });
    await symlink(join(root, 'node_modules'), join(dir, 'node_modules'));
    await writeFile(join(dir, 'package.json'), '{"type":"module"}\n');
    // the schema now forbids what the build's validator allowed
    const path = join(dir, 'schemas', 'manifest.schema.json');
    const schema = JSON.parse(await readFile(path, 'utf8')) as { properties: { createdAt: Record<string, unknown> } };
    schema.properties.createdAt = { const: 'never' };
    await writeFile(path, JSON.stringify(schema));
    const copy = (await import(pathToFileURL(join(dir, 'dist', 'schema', 'validators.js')).href)) as Validators;
    assert.equal(copy.isPrecompiled('manifest'), false);
    assert.equal(copy.schemaValidator('manifest')(manifest), false, 'checked against the schema as it is now');
    assert.equal(copy.isPrecompiled('inventory'), true, 'the unchanged schemas keep theirs');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the built CLI reads a manifest without loading ajv', async () => {
  // every module the process loaded, listed at exit: ajv's runtime helper may be there, its compiler may not
  const probe = `
    const { parseManifest } = await import(${JSON.stringify(pathToFileURL(join(root, 'dist', 'bundle', 'manifest.js')).href)});
    parseManifest(Buffer.from(${JSON.stringify(JSON.stringify(manifest))}));
    const { createRequire } = await import('node:module');
    console.log(Object.keys(createRequire(import.meta.url).cache).filter((p) => p.includes('/ajv/')).join('\\n'));
  `;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', probe]);
  const loaded = stdout.split('\n').filter(Boolean);
  assert.ok(!loaded.some((p) => /ajv\/dist\/(2020|core|compile)/.test(p)), `ajv's compiler was loaded:\n${loaded.join('\n')}`);
});
