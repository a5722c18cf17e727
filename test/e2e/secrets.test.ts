/**
 * The token never leaks (issue 7 §7): every byte the tool writes — the bundle, the work directory
 * (kept), the hub cache after import, stdout/stderr (text, --json, the --verbose request log, progress)
 * of every command, success and
 * failure paths (bad token, missing repo, denied repo, endpoint with credentials in the URL, a broken
 * endpoint) — is searched for the token used in the test, raw and in common encodings.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { lstat, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHubServer, type HubServer } from '../support/hub-server.ts';
import { runAirlock, type RunResult } from '../support/cli.ts';
import { safetensorsOf } from '../support/safetensors-fixture.ts';

const TOKEN = 'hf_SecretSecretSecret0123456789abcdXYZ';
/** The token as it could appear if something encoded it on the way. */
const FORMS = [
  TOKEN,
  Buffer.from(TOKEN).toString('base64'),
  Buffer.from(`user:${TOKEN}`).toString('base64'),
  Buffer.from(`:${TOKEN}`).toString('base64'),
  encodeURIComponent(TOKEN),
  Buffer.from(TOKEN).toString('hex'),
  TOKEN.slice(3, 20), // a distinctive part of it (a truncated or partly redacted copy)
];

let hub: HubServer;
let dir: string;
const outputs: Array<{ what: string; result: RunResult }> = [];

async function run(what: string, args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  const result = await runAirlock(args, { env: { HF_ENDPOINT: hub.endpoint, HF_HOME: join(dir, 'hf-home'), ...env } });
  outputs.push({ what, result });
  return result;
}

/** Every file under `root` (symlink targets too), as bytes. */
async function everyByte(root: string): Promise<Array<{ path: string; bytes: Buffer }>> {
  const out: Array<{ path: string; bytes: Buffer }> = [];
  const walk = async (path: string): Promise<void> => {
    const stats = await lstat(path);
    if (stats.isSymbolicLink()) out.push({ path, bytes: Buffer.from(await readlink(path)) });
    else if (stats.isDirectory()) for (const name of await readdir(path)) await walk(join(path, name));
    else if (stats.isFile()) out.push({ path, bytes: await readFile(path) });
    out.push({ path: `${path} (name)`, bytes: Buffer.from(path) });
  };
  await walk(root);
  return out;
}

function assertClean(what: string, bytes: Buffer): void {
  for (const form of FORMS) assert.ok(!bytes.includes(Buffer.from(form)), `the token (${form === TOKEN ? 'raw' : `as ${JSON.stringify(form)}`}) appears in ${what}`);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-secrets-'));
  hub = await startHubServer({ tokens: [TOKEN] });
  await hub.addRepo({
    id: 'acme/private',
    private: true,
    files: [
      { path: 'config.json', data: '{"model_type": "llama"}\n' },
      { path: 'model.safetensors', data: safetensorsOf(Buffer.alloc(200_000, 9)) },
    ],
  });
});
after(async () => {
  await hub?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('the token appears in nothing the tool writes', () => {
  test('export (kept work dir, --json and text), verify, import, and every failure path', async () => {
    const keys = join(dir, 'keys');
    assert.equal((await run('keys generate', ['keys', 'generate', '--user-id', 'T <t@example.org>', '--out-dir', keys])).code, 0);
    const bundle = join(dir, 'private.airlock.tar');
    const work = join(dir, 'work');
    const cache = join(dir, 'cache');
    const sign = ['--sign-key', join(keys, 'signer.key.asc')];

    // successes: token by environment, then by flag; JSON and text output
    const viaEnv = await run('export (HF_TOKEN, --json, --verbose request log, progress)', ['export', 'acme/private', ...sign, '-o', bundle, '--work-dir', work, '--keep-work-dir', '--json', '--verbose'], {
      HF_TOKEN: TOKEN,
      AIRLOCK_PROGRESS_INTERVAL_MS: '1',
    });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    const bundle2 = join(dir, 'private2.airlock.tar');
    const viaFlag = await run('export (--token, text)', ['export', 'acme/private', ...sign, '-o', bundle2, '--token', TOKEN]);
    assert.equal(viaFlag.code, 0, viaFlag.stderr);
    for (const [what, args] of [
      ['verify --json', ['verify', bundle, '--trusted-keys', join(keys, 'signer.pub.asc'), '--json']],
      ['import --json', ['import', bundle, '--trusted-keys', join(keys, 'signer.pub.asc'), '--cache-dir', cache, '--json']],
      ['import (text)', ['import', bundle2, '--trusted-keys', join(keys, 'signer.pub.asc'), '--cache-dir', cache]],
      ['inspect --json', ['inspect', bundle, '--json']],
    ] as const) {
      const r = await run(what, [...args]);
      assert.equal(r.code, 0, `${what}: ${r.stderr}`);
    }

    // failures that carry the token somewhere on their way
    const failures: Array<[string, string[], Record<string, string>]> = [
      ['wrong token', ['export', 'acme/private', '--unsigned', '-o', join(dir, 'f1.tar'), '--token', `${TOKEN}x`, '--json'], {}],
      ['missing repo, with token', ['export', 'acme/nope', '--unsigned', '-o', join(dir, 'f2.tar')], { HF_TOKEN: TOKEN }],
      ['missing revision, with token (--json)', ['export', 'acme/private', '--revision', 'nope', '--unsigned', '-o', join(dir, 'f3.tar'), '--json'], { HF_TOKEN: TOKEN }],
      ['endpoint URL with the token as credentials', ['export', 'acme/private', '--unsigned', '-o', join(dir, 'f4.tar'), '--endpoint', hub.endpoint.replace('://', `://user:${TOKEN}@`)], { HF_TOKEN: TOKEN }],
      ['endpoint that refuses connections', ['export', 'acme/private', '--unsigned', '-o', join(dir, 'f5.tar'), '--endpoint', 'http://127.0.0.1:9', '--verbose'], { HF_TOKEN: TOKEN, AIRLOCK_RETRY_BASE_MS: '1' }],
      ['bad signing key path, with token', ['export', 'acme/private', '--sign-key', join(dir, 'nope.asc'), '-o', join(dir, 'f6.tar')], { HF_TOKEN: TOKEN }],
    ];
    for (const [what, args, env] of failures) {
      const r = await run(what, args, env);
      assert.notEqual(r.code, 0, `${what} should fail`);
      assert.doesNotMatch(r.stderr, /\n\s+at /, `${what}: no stack trace`);
    }

    // every byte written: bundles, the kept work dir, the cache, anything else under the test dir
    // (keys and the fake hub's own state excepted: the hub is the test's, not the tool's)
    let files = 0;
    for (const { path, bytes } of await everyByte(dir)) {
      files += 1;
      assertClean(path, bytes);
    }
    for (const { what, result } of outputs) {
      assertClean(`${what} stdout`, Buffer.from(result.stdout));
      assertClean(`${what} stderr`, Buffer.from(result.stderr));
    }
    assert.ok(files > 10, `searched ${files} files`);
    console.log(`# secrets: ${files} files/names and ${outputs.length * 2} output streams searched for ${FORMS.length} forms of the token`);
  });
});
