/**
 * Every command that reads a bundle × every kind of bundle a user can make (issue 13), publish → pull
 * through a real registry included (issue 15). The bundles
 * come ONLY from the real CLI against the test hubs — `airlock export` (single tar, split volumes,
 * --gpg-sign, delta with a `cache inventory`, ModelScope, a multi-repo --spec, --from-cache,
 * --unsigned) and `airlock resign --add` (two signatures) — never from a hand builder: a fixture that
 * drifts from the writer is how resign broke on every real bundle while its tests still passed.
 *
 * Each bundle is built once (before) and shared; each cell copies what it changes. Child processes
 * are capped (LIMIT) so the cells run side by side without swamping the machine.
 */
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { startHubServer, type HubServer } from '../support/hub-server.ts';
import { startModelScopeServer, type ModelScopeServer } from '../support/modelscope-server.ts';
import { run, runAirlock, type RunResult } from '../support/cli.ts';
import { sampleModelFiles } from '../support/sample-model.ts';
import { snapshotTree } from '../support/cache-snapshot.ts';
import { tarLayout } from '../support/tar-layout.ts';
import { startRegistry, type TestRegistry } from '../support/registry.ts';

const LIMIT = 4;
let running = 0;
const waiting: Array<() => void> = [];
async function limited<T>(work: () => Promise<T>): Promise<T> {
  while (running >= LIMIT) await new Promise<void>((resolve) => waiting.push(resolve));
  running++;
  try {
    return await work();
  } finally {
    running--;
    waiting.shift()?.();
  }
}
const airlock = (args: readonly string[], env?: Record<string, string>): Promise<RunResult> => limited(() => runAirlock(args, env === undefined ? {} : { env }));
const tool = (command: string, args: readonly string[], cwd?: string, env?: Record<string, string>): Promise<RunResult> =>
  limited(() => run(command, args, { ...(cwd === undefined ? {} : { cwd }), ...(env === undefined ? {} : { env }) }));

function ok(r: RunResult, what: string): void {
  assert.equal(r.code, 0, `${what}: exit ${r.code}\n${r.stderr}`);
}

let dir: string;
let hub: HubServer;
let ms: ModelScopeServer;
/** The in-gap registry publish writes to and pull reads from. */
let registry: TestRegistry;
/** Key pairs from `airlock keys generate`. */
const keys: Record<'k1' | 'k2' | 'k3', { key: string; pub: string }> = {} as never;
let gnupg: string;
let gpgPub: string;
/** The offline side's cache holding the single-tar bundle (the delta's base). */
let baseCache: string;

type Layout = 'hf' | 'modelscope' | 'dir';
interface Kind {
  name: string;
  /** What every command is given: the tar, or the first part of split volumes. */
  path: string;
  split: boolean;
  /** Public key files whose signatures the bundle carries (empty: unsigned). */
  pubs: string[];
  repos: number;
  /** The layouts import must accept; the others must be refused with this code. */
  layouts: Partial<Record<Layout, 'ok' | RegExp>>;
  /** Delta: imports need a cache that already holds the base. */
  delta?: boolean;
  /** --layout dir takes one repo: name it. */
  dirRepo?: string;
}
const kinds = new Map<string, Kind>();
/** Kinds whose build failed: their cells fail with this error, the other kinds still run. */
const broken = new Map<string, unknown>();
function kindOf(name: string): Kind {
  const kind = kinds.get(name);
  if (kind === undefined) {
    const failure = broken.get(name);
    throw failure instanceof Error ? failure : new Error(`bundle kind ${name} was not built: ${String(failure)}`);
  }
  return kind;
}
async function building(name: string, work: () => Promise<void>): Promise<void> {
  await work().catch((error: unknown) => {
    broken.set(name, error);
  });
}
const ALL_OK = { hf: 'ok', modelscope: 'ok', dir: 'ok' } as const;

const trustArgs = (pubs: readonly string[]): string[] => pubs.flatMap((p) => ['--trusted-keys', p]);

async function exportBundle(name: string, args: string[], env: Record<string, string>, kind: Omit<Kind, 'name' | 'path'>): Promise<void> {
  await building(name, async () => {
    const path = join(dir, name, 'b.airlock.tar');
    await mkdir(dirname(path), { recursive: true });
    const r = await airlock(['export', ...args, '-o', path], env);
    ok(r, `export ${name}`);
    kinds.set(name, { name, path: kind.split ? `${path}.000` : path, ...kind });
  });
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-matrix-'));
  hub = await startHubServer();
  ms = await startModelScopeServer();
  registry = await startRegistry();
  await hub.addRepo({ id: 'acme/tiny-llm', files: sampleModelFiles() });
  // split volumes are at least 1 MiB each: a 4 MiB extra file makes five parts of the split kind
  await hub.addRepo({ id: 'acme/tiny-llm-xl', files: [...sampleModelFiles(), { path: 'extra/blob.bin', data: randomBytes(4 << 20) }] });
  ms.addRepo({ id: 'qwen/Tiny.Chat-0.5B', files: sampleModelFiles() });
  await Promise.all(
    (['k1', 'k2', 'k3'] as const).map(async (k) => {
      const r = await airlock(['keys', 'generate', '--user-id', `${k} <${k}@example.org>`, '--out-dir', join(dir, 'keys', k)]);
      ok(r, `keys generate ${k}`);
      keys[k] = { key: join(dir, 'keys', k, 'signer.key.asc'), pub: join(dir, 'keys', k, 'signer.pub.asc') };
    }),
  );
  gnupg = join(dir, 'gnupg');
  await mkdir(gnupg, { mode: 0o700 });
  await chmod(gnupg, 0o700);
  ok(await tool('gpg', ['--homedir', gnupg, '--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--quick-gen-key', 'Agent <agent@example.org>', 'ed25519', 'sign', 'never']), 'gpg key');
  gpgPub = join(dir, 'agent.pub.asc');
  ok(await tool('gpg', ['--homedir', gnupg, '--batch', '--armor', '--output', gpgPub, '--export', 'agent@example.org']), 'gpg export');

  const hf = { HF_ENDPOINT: hub.endpoint };
  const specDir = join(dir, 'spec');
  await mkdir(specDir);
  await writeFile(
    join(specDir, 'airlock.yaml'),
    [
      'output: b.airlock.tar',
      `signingKey: ${keys.k1.key}`,
      'repos:',
      '  - id: acme/tiny-llm',
      `    endpoint: ${hub.endpoint}`,
      '  - id: qwen/Tiny.Chat-0.5B',
      '    source: modelscope',
      `    endpoint: ${ms.endpoint}`,
      '',
    ].join('\n'),
  );
  const k1 = ['--sign-key', keys.k1.key];
  await Promise.all([
    exportBundle('single', ['acme/tiny-llm', ...k1], hf, { split: false, pubs: [keys.k1.pub], repos: 1, layouts: ALL_OK }),
    // 5000 bytes: cuts fall inside tar headers, inside files and inside the leading block
    exportBundle('split', ['acme/tiny-llm-xl', ...k1, '--split-size', '1MiB'], hf, { split: true, pubs: [keys.k1.pub], repos: 1, layouts: ALL_OK, dirRepo: 'acme/tiny-llm-xl' }),
    exportBundle('gpg-sign', ['acme/tiny-llm', '--gpg-sign', 'agent@example.org', '--gpg-homedir', gnupg], hf, { split: false, pubs: [gpgPub], repos: 1, layouts: ALL_OK }),
    exportBundle('modelscope', ['--source', 'modelscope', 'qwen/Tiny.Chat-0.5B', ...k1], { MODELSCOPE_ENDPOINT: ms.endpoint }, { split: false, pubs: [keys.k1.pub], repos: 1, layouts: ALL_OK }),
    exportBundle('unsigned', ['acme/tiny-llm', '--unsigned'], hf, { split: false, pubs: [], repos: 1, layouts: ALL_OK }),
    building('spec', async () => {
      ok(await airlock(['export', '--spec', join(specDir, 'airlock.yaml')]), 'export --spec');
      kinds.set('spec', { name: 'spec', path: join(specDir, 'b.airlock.tar'), split: false, pubs: [keys.k1.pub], repos: 2, layouts: ALL_OK, dirRepo: 'acme/tiny-llm' });
    }),
  ]);

  const single = kindOf('single');
  baseCache = join(dir, 'base-cache');
  await Promise.all([
    building('two-signatures', async () => {
      // two signatures: the second one added by `airlock resign --add`
      const path = join(dir, 'two-signatures', 'b.airlock.tar');
      await mkdir(dirname(path));
      await cp(single.path, path);
      ok(await airlock(['resign', path, '--add', '--trusted-keys', keys.k1.pub, '--sign-key', keys.k2.key]), 'resign --add (two signatures)');
      kinds.set('two-signatures', { ...single, name: 'two-signatures', path, pubs: [keys.k1.pub, keys.k2.pub] });
    }),
    (async () => {
      ok(await airlock(['import', single.path, '--trusted-keys', keys.k1.pub, '--cache-dir', baseCache]), 'import of the base');
      ok(await airlock(['cache', 'inventory', '--cache-dir', baseCache, '--out', join(dir, 'have.json'), '--sign-key', keys.k2.key]), 'cache inventory');
      await exportBundle('from-cache', ['--from-cache', 'acme/tiny-llm', '--cache-dir', baseCache, ...k1], { HF_HUB_OFFLINE: '1' }, { split: false, pubs: [keys.k1.pub], repos: 1, layouts: ALL_OK });
    })(),
  ]);
  // upstream moves on (every other export of acme/tiny-llm is done): the delta leaves out the held weights
  const files = sampleModelFiles().map((f) => (f.path === 'config.json' ? { ...f, data: Buffer.from(`${f.data.toString('utf8').trimEnd()}\n\n`) } : f));
  await hub.addCommit({ id: 'acme/tiny-llm' }, files);
  await exportBundle('delta', ['acme/tiny-llm', '--have', join(dir, 'have.json'), '--trusted-keys', keys.k2.pub, ...k1], hf, {
    split: false,
    pubs: [keys.k1.pub],
    repos: 1,
    delta: true,
    layouts: { hf: 'ok', modelscope: /delta bundles import only into a Hugging Face cache[\s\S]*E_USAGE/, dir: /delta bundles import only into a Hugging Face cache[\s\S]*E_USAGE/ },
  });
});

after(async () => {
  await tool('gpgconf', ['--homedir', gnupg, '--kill', 'gpg-agent']).catch(() => undefined);
  await hub?.close();
  await ms?.close();
  await registry?.close();
  await rm(dir, { recursive: true, force: true });
});

/** A private copy of the bundle (all parts and the index, for split volumes) in a fresh folder. */
async function copyOf(kind: Kind, cell: string): Promise<string> {
  const to = join(dir, 'cells', `${kind.name}-${cell}`);
  await mkdir(to, { recursive: true });
  const from = dirname(kind.path);
  for (const n of await readdir(from)) if (n.startsWith(basename(kind.split ? kind.path.slice(0, -'.000'.length) : kind.path).replace(/\.tar$/, ''))) await cp(join(from, n), join(to, n));
  return join(to, basename(kind.path));
}

/** The tar bytes: the file, or the parts joined in order. */
async function tarBytes(path: string, split: boolean): Promise<Buffer> {
  if (!split) return readFile(path);
  const joined = path.slice(0, -'.000'.length);
  const names = (await readdir(dirname(path))).filter((n) => n.startsWith(`${basename(joined)}.`) && /^\d{3,}$/.test(n.slice(basename(joined).length + 1))).sort();
  return Buffer.concat(await Promise.all(names.map((n) => readFile(join(dirname(path), n)))));
}

/** Everything after manifest.json: the payload entries and the end-of-archive blocks. */
function payloadRegion(tar: Buffer): Buffer {
  const manifest = tarLayout(tar).find((e) => e.name === 'manifest.json')!;
  return tar.subarray(manifest.dataOffset + Math.ceil(manifest.size / 512) * 512);
}

/** A target for one import: empty, or (delta) a copy of the cache holding the base. */
async function target(kind: Kind, cell: string): Promise<string> {
  const path = join(dir, 'targets', `${kind.name}-${cell}`);
  if (kind.delta) await cp(baseCache, path, { recursive: true });
  return path;
}

function layoutArgs(kind: Kind, layout: Layout, path: string): string[] {
  switch (layout) {
    case 'hf':
      return ['--layout', 'hf', '--cache-dir', path];
    case 'modelscope':
      return ['--layout', 'modelscope', '--cache-dir', path];
    case 'dir':
      return ['--local-dir', path, ...(kind.dirRepo === undefined ? [] : ['--repo', kind.dirRepo])];
  }
}

/**
 * publish to the registry under a prefix of the cell's own, then pull every published repo onto a
 * fresh "node" requiring every signature the bundle carries: the pulled signers are the bundle's.
 */
async function publishThenPull(kind: Kind, trust: string[], pubs: number): Promise<void> {
  const prefix = `matrix/${kind.name}`;
  const r = await airlock(['publish', kind.path, '--to', `oci://${registry.host}/${prefix}`, ...trust, '--plain-http', '--json']);
  ok(r, 'publish');
  const published = JSON.parse(r.stdout) as { signers: unknown[]; repos: Array<{ references: string[] }> };
  assert.equal(published.repos.length, kind.repos);
  assert.equal(published.signers.length, pubs);
  for (const [i, repo] of published.repos.entries()) {
    const cache = await target({ ...kind, delta: false }, `pull-${i}`);
    const require = pubs > 0 ? ['--require-signatures', String(pubs)] : [];
    const pulled = await airlock(['pull', repo.references[0]!, ...trust, ...require, '--plain-http', '--cache-dir', cache, '--json']);
    ok(pulled, `pull ${repo.references[0]}`);
    const result = JSON.parse(pulled.stdout) as { signers: unknown[]; signed: boolean };
    assert.equal(result.signers.length, pubs);
    assert.equal(result.signed, pubs > 0);
  }
}

/** GNU tar lists and extracts it, gpg verifies every signature, sha256sum checks every file. */
async function standardTools(tar: Buffer, pubs: readonly string[], cell: string): Promise<void> {
  const work = join(dir, 'tools', cell);
  await mkdir(join(work, 'x'), { recursive: true });
  const file = join(work, 'b.tar');
  await writeFile(file, tar);
  const list = await tool('tar', ['-tf', file]);
  ok(list, 'tar -tf');
  assert.match(list.stdout, pubs.length > 0 ? /^SHA256SUMS\nSHA256SUMS\.asc\nmanifest\.json\npayload\// : /^SHA256SUMS\nmanifest\.json\npayload\//);
  ok(await tool('tar', ['-xf', file, '-C', join(work, 'x')]), 'tar -xf');
  if (pubs.length > 0) {
    const home = join(work, 'gnupg');
    await mkdir(home, { mode: 0o700 });
    for (const p of pubs) ok(await tool('gpg', ['--homedir', home, '--batch', '--import', p]), 'gpg --import');
    const v = await tool('gpg', ['--homedir', home, '--batch', '--status-fd', '1', '--verify', 'SHA256SUMS.asc', 'SHA256SUMS'], join(work, 'x'));
    ok(v, 'gpg --verify');
    assert.equal(v.stdout.match(/^\[GNUPG:\] GOODSIG /gm)?.length, pubs.length, v.stdout);
    await tool('gpgconf', ['--homedir', home, '--kill', 'gpg-agent']);
  }
  const sums = await tool('sha256sum', ['--strict', '-c', 'SHA256SUMS'], join(work, 'x'));
  ok(sums, 'sha256sum --strict -c');
  assert.doesNotMatch(sums.stdout, /FAILED/);
}

const KIND_NAMES = ['single', 'split', 'gpg-sign', 'two-signatures', 'delta', 'modelscope', 'spec', 'from-cache'];

describe('every command on every signed kind of bundle', { concurrency: true }, () => {
  for (const name of KIND_NAMES) {
    describe(name, { concurrency: true }, () => {
      const kind = (): Kind => kindOf(name);

      test('verify', async () => {
        const r = await airlock(['verify', kind().path, ...trustArgs(kind().pubs), '--json']);
        ok(r, 'verify');
        const result = JSON.parse(r.stdout);
        assert.equal(result.signers.length, kind().pubs.length);
        assert.equal(result.repos.length, kind().repos);
      });

      for (const layout of ['hf', 'modelscope', 'dir'] as const) {
        test(`import --layout ${layout}`, async () => {
          const into = await target(kind(), `import-${layout}`);
          const before = await snapshotTree(into).catch(() => undefined);
          const r = await airlock(['import', kind().path, ...trustArgs(kind().pubs), ...layoutArgs(kind(), layout, into), '--json']);
          const expected = kind().layouts[layout]!;
          if (expected === 'ok') {
            ok(r, `import --layout ${layout}`);
            const result = JSON.parse(r.stdout);
            assert.equal(result.layout, layout);
            assert.ok(result.files > 0);
          } else {
            assert.equal(r.code, 2, r.stderr);
            assert.match(r.stderr, expected);
            assert.deepEqual(await snapshotTree(into).catch(() => undefined), before, 'nothing written');
          }
        });
      }

      test('publish to an OCI registry, then pull on a fresh node', async () => {
        if (!kind().delta) return publishThenPull(kind(), trustArgs(kind().pubs), kind().pubs.length);
        // a delta leaves files out: no artifact can be made of it, and nothing is pushed
        const r = await airlock(['publish', kind().path, '--to', `oci://${registry.host}/matrix/delta`, ...trustArgs(kind().pubs), '--plain-http']);
        assert.equal(r.code, 2, r.stderr);
        assert.match(r.stderr, /is a delta bundle[\s\S]*E_USAGE/);
        assert.equal((await fetch(`http://${registry.host}/v2/matrix/delta/acme/tiny-llm/tags/list`)).status, 404, 'no tag');
      });

      test('inspect', async () => {
        const r = await airlock(['inspect', kind().path, '--json']);
        ok(r, 'inspect');
        const result = JSON.parse(r.stdout);
        assert.equal(result.manifest.repos.length, kind().repos);
        assert.equal(result.signed, true);
        assert.equal(result.signatureKeyIds.length, kind().pubs.length);
      });

      test('standard tools: tar, gpg --verify, sha256sum --strict -c', async () => {
        await standardTools(await tarBytes(kind().path, kind().split), kind().pubs, `${name}-tools`);
      });

      test('resign (replace): only the new key verifies, payload bytes identical, standard tools agree', async () => {
        const copy = await copyOf(kind(), 'replace');
        const old = await tarBytes(copy, kind().split);
        const r = await airlock(['resign', copy, ...trustArgs(kind().pubs), '--sign-key', keys.k3.key]);
        ok(r, 'resign');
        const now = await tarBytes(copy, kind().split);
        assert.ok(payloadRegion(now).equals(payloadRegion(old)), 'payload bytes identical');
        ok(await airlock(['verify', copy, '--trusted-keys', keys.k3.pub, '--quiet']), 'verify with the new key');
        if (name === 'single' || name === 'split') {
          // the old key no longer counts (checked on two kinds: each CLI run costs half a second of CPU)
          const stale = await airlock(['verify', copy, ...trustArgs(kind().pubs), '--quiet']);
          assert.equal(stale.code, 3, stale.stderr);
          assert.match(stale.stderr, /E_SIGNATURE_UNTRUSTED/);
        }
        await standardTools(now, [keys.k3.pub], `${name}-replace`);
      });

      test('resign --add, then import --require-signatures 2', async () => {
        const copy = await copyOf(kind(), 'add');
        const old = await tarBytes(copy, kind().split);
        ok(await airlock(['resign', copy, '--add', ...trustArgs(kind().pubs), '--sign-key', keys.k3.key]), 'resign --add');
        assert.ok(payloadRegion(await tarBytes(copy, kind().split)).equals(payloadRegion(old)), 'payload bytes identical');
        const into = await target(kind(), 'add');
        const r = await airlock(['import', copy, ...trustArgs([...kind().pubs, keys.k3.pub]), '--require-signatures', String(kind().pubs.length + 1), '--cache-dir', into, '--json']);
        ok(r, 'import --require-signatures');
        assert.equal(JSON.parse(r.stdout).signers.length, kind().pubs.length + 1);
      });
    });
  }
});

describe('an unsigned bundle (export --unsigned): what the docs promise', { concurrency: true }, () => {
  const kind = (): Kind => kindOf('unsigned');
  const refusedUnsigned = (r: RunResult): void => {
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /E_UNSIGNED/);
  };

  test('verify refuses it without --allow-unsigned, accepts it with', async () => {
    refusedUnsigned(await airlock(['verify', kind().path, '--trusted-keys', keys.k1.pub]));
    const r = await airlock(['verify', kind().path, '--allow-unsigned', '--json']);
    ok(r, 'verify --allow-unsigned');
    assert.equal(JSON.parse(r.stdout).signed, false);
  });

  for (const layout of ['hf', 'modelscope', 'dir'] as const) {
    test(`import --layout ${layout}: refused without --allow-unsigned (nothing written), imported with`, async () => {
      const into = await target(kind(), `import-${layout}`);
      refusedUnsigned(await airlock(['import', kind().path, '--trusted-keys', keys.k1.pub, ...layoutArgs(kind(), layout, into)]));
      assert.deepEqual(await readdir(into).catch(() => []), [], 'nothing written');
      ok(await airlock(['import', kind().path, '--allow-unsigned', ...layoutArgs(kind(), layout, into)]), `import --allow-unsigned --layout ${layout}`);
    });
  }

  test('publish refuses it without --allow-unsigned (nothing pushed); with it, pull needs --allow-unsigned too', async () => {
    const refused = await airlock(['publish', kind().path, '--to', `oci://${registry.host}/matrix/refused`, '--trusted-keys', keys.k1.pub, '--plain-http']);
    refusedUnsigned(refused);
    assert.equal((await fetch(`http://${registry.host}/v2/matrix/refused/acme/tiny-llm/tags/list`)).status, 404, 'no tag');
    await publishThenPull(kind(), ['--allow-unsigned'], 0);
    refusedUnsigned(await airlock(['pull', `oci://${registry.host}/matrix/unsigned/acme/tiny-llm:main`, '--trusted-keys', keys.k1.pub, '--plain-http', '--cache-dir', await target(kind(), 'pull-refused')]));
  });

  test('inspect says UNSIGNED', async () => {
    const r = await airlock(['inspect', kind().path]);
    ok(r, 'inspect');
    assert.match(r.stdout, /UNSIGNED bundle/);
  });

  test('standard tools: tar lists no signature, sha256sum --strict -c passes', async () => {
    await standardTools(await readFile(kind().path), [], 'unsigned-tools');
  });

  test('resign needs --force (no signature to check), then the bundle verifies; bytes untouched when refused', async () => {
    const copy = await copyOf(kind(), 'replace');
    const old = await readFile(copy);
    refusedUnsigned(await airlock(['resign', copy, '--trusted-keys', keys.k1.pub, '--sign-key', keys.k1.key]));
    assert.ok((await readFile(copy)).equals(old), 'a refused resign leaves the bundle as it was');
    ok(await airlock(['resign', copy, '--force', '--sign-key', keys.k1.key]), 'resign --force');
    assert.ok(payloadRegion(await readFile(copy)).equals(payloadRegion(old)), 'payload bytes identical');
    ok(await airlock(['verify', copy, '--trusted-keys', keys.k1.pub, '--quiet']), 'verify after resign --force');
    await standardTools(await readFile(copy), [keys.k1.pub], 'unsigned-replace');
  });

  test('resign --force --add, then --add a second key: import --require-signatures 2', async () => {
    const copy = await copyOf(kind(), 'add');
    ok(await airlock(['resign', copy, '--force', '--add', '--sign-key', keys.k1.key]), 'resign --force --add');
    ok(await airlock(['resign', copy, '--add', '--trusted-keys', keys.k1.pub, '--sign-key', keys.k3.key]), 'resign --add');
    const r = await airlock(['import', copy, ...trustArgs([keys.k1.pub, keys.k3.pub]), '--require-signatures', '2', '--cache-dir', await target(kind(), 'add')]);
    ok(r, 'import --require-signatures 2');
  });
});

describe('split volumes whose index was not copied', { concurrency: true }, () => {
  const kind = (): Kind => kindOf('split');
  /** The parts only (and optionally the index without its signature), as copied by a hurried user. */
  async function partsOnly(cell: string, withUnsignedIndex: boolean): Promise<string> {
    const copy = await copyOf(kind(), cell);
    await rm(`${copy.slice(0, -'.airlock.tar.000'.length)}.airlock.parts.json.asc`);
    if (!withUnsignedIndex) await rm(`${copy.slice(0, -'.airlock.tar.000'.length)}.airlock.parts.json`);
    return copy;
  }

  test('verify and import read the parts as one stream, saying so; nothing on the media changes', async () => {
    for (const unsignedIndex of [false, true]) {
      const copy = await partsOnly(`noindex-${unsignedIndex}`, unsignedIndex);
      const media = await snapshotTree(dirname(copy));
      for (const arg of [copy, dirname(copy)]) {
        const v = await airlock(['verify', arg, '--trusted-keys', keys.k1.pub]);
        ok(v, `verify ${arg}`);
        assert.match(v.stdout, unsignedIndex ? /parts\.json has no signature and was not used/ : /parts\.json is missing/);
        assert.match(v.stdout, /verified as one stream by the signed SHA256SUMS/);
      }
      const into = await target(kind(), `noindex-${unsignedIndex}`);
      const i = await airlock(['import', copy, '--trusted-keys', keys.k1.pub, '--cache-dir', into, '--json']);
      ok(i, 'import without the index');
      assert.equal(JSON.parse(i.stdout).splitWithoutIndex.parts, (await readdir(dirname(copy))).filter((n) => /\.tar\.\d{3,}$/.test(n)).length);
      assert.deepEqual(await snapshotTree(dirname(copy)), media, 'parts untouched');
    }
  });

  test('a damaged part is refused, and the error says it cannot be named without the index', async () => {
    const copy = await partsOnly('noindex-damaged', false);
    const part = `${copy.slice(0, -3)}003`;
    const data = await readFile(part);
    data[100] = data[100]! ^ 0x01;
    await writeFile(part, data);
    const into = await target(kind(), 'noindex-damaged');
    const r = await airlock(['import', copy, '--trusted-keys', keys.k1.pub, '--cache-dir', into]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /cannot be told without the index/);
    assert.deepEqual(await readdir(into).catch(() => []), [], 'nothing imported');
  });

  test('a missing middle part is named from the numbering', async () => {
    const copy = await partsOnly('noindex-gap', false);
    await rm(`${copy.slice(0, -3)}002`);
    const r = await airlock(['verify', copy, '--trusted-keys', keys.k1.pub]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /E_MISSING_ENTRY/);
    assert.match(r.stderr, /b\.airlock\.tar\.002 is missing/);
  });

  test('an index whose signature is there but does not verify is still refused', async () => {
    const copy = await copyOf(kind(), 'badindex');
    const index = `${copy.slice(0, -'.airlock.tar.000'.length)}.airlock.parts.json`;
    // a valid signature by another key over the index
    ok(await airlock(['resign', copy, '-o', join(dirname(copy), 'other.airlock.tar'), '--trusted-keys', keys.k1.pub, '--sign-key', keys.k2.key]), 'resign -o (another key)');
    const indexBytes = await readFile(index);
    const foreign = JSON.parse(await readFile(join(dirname(copy), 'other.airlock.parts.json'), 'utf8'));
    assert.notEqual(foreign.sha256, JSON.parse(indexBytes.toString('utf8')).sha256);
    await cp(join(dirname(copy), 'other.airlock.parts.json.asc'), `${index}.asc`);
    const r = await airlock(['verify', copy, '--trusted-keys', keys.k1.pub]);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /parts\.json\.asc/);
  });
});
