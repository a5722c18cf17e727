/**
 * Docker credential helpers for `publish` / `pull`, against the real registry (htpasswd Basic and token
 * auth with the test token service): `credHelpers` (per registry) and `credsStore` (docker's default) in
 * Docker's config.json, `credHelpers` in containers' auth.json, with the precedence docker and
 * containers/image use; "credentials not found" passes on to the next file; a missing, failing or hanging
 * helper is an error naming it; the secret is never printed. An identity token (`Username: "<token>"`, or
 * `identitytoken` in config.json) is traded at the token realm with the OAuth2 refresh-token grant.
 *
 * The helper is a stand-in `docker-credential-test` script the test puts on PATH; it answers from a
 * folder of `<server>.json` files and logs the server address it was asked for.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HubServer } from '../support/hub-server.ts';
import { runAirlock } from '../support/cli.ts';
import { exportSampleBundle } from '../support/sample-bundle.ts';
import { startRegistry, type TestRegistry, type TokenServer } from '../support/registry.ts';

let hub: HubServer;
let dir: string;
let keys: string;
let bundle: string;
let bin: string;
let counter = 0;
const registries: TestRegistry[] = [];

const pub = (): string => join(keys, 'signer.pub.asc');
const basic = (user: string, password: string): { auth: string } => ({ auth: Buffer.from(`${user}:${password}`).toString('base64') });

const HELPER = `#!/bin/sh
# a stand-in docker credential helper: "get" answers from $HELPER_STORE/<server>.json
[ "$1" = get ] || { echo "unsupported action: $1"; exit 1; }
server=$(cat)
printf '%s\\n' "$server" >> "$HELPER_LOG"
case "$HELPER_MODE" in
  fail) echo "the keychain is locked"; exit 1 ;;
  hang) exec sleep 600 ;;
esac
if [ -f "$HELPER_STORE/$server.json" ]; then cat "$HELPER_STORE/$server.json"; else echo "credentials not found in native keychain"; exit 1; fi
`;

interface Setup {
  /** Docker's config.json (DOCKER_CONFIG points at its folder). */
  docker?: object;
  /** containers' auth.json ($REGISTRY_AUTH_FILE). */
  containers?: object;
  /** What the helper holds: server → {Username, Secret}. */
  store?: Record<string, { Username: string; Secret: string }>;
  mode?: 'fail' | 'hang';
  env?: Record<string, string>;
}

/** A fresh HOME, config files and helper store; the environment the CLI runs with. */
async function setup(s: Setup): Promise<{ env: Record<string, string>; log: string }> {
  const at = join(dir, `case-${(counter += 1)}`);
  await mkdir(join(at, 'docker'), { recursive: true });
  await mkdir(join(at, 'store'));
  const log = join(at, 'helper.log');
  await writeFile(log, '');
  if (s.docker !== undefined) await writeFile(join(at, 'docker', 'config.json'), JSON.stringify(s.docker));
  if (s.containers !== undefined) await writeFile(join(at, 'auth.json'), JSON.stringify(s.containers));
  for (const [server, creds] of Object.entries(s.store ?? {})) await writeFile(join(at, 'store', `${server}.json`), JSON.stringify({ ServerURL: server, ...creds }));
  const env: Record<string, string> = {
    HOME: at,
    XDG_CONFIG_HOME: join(at, 'config'),
    XDG_RUNTIME_DIR: join(at, 'run'),
    DOCKER_CONFIG: join(at, 'docker'),
    PATH: `${bin}:${process.env['PATH'] ?? ''}`,
    HELPER_STORE: join(at, 'store'),
    HELPER_LOG: log,
    ...(s.containers === undefined ? {} : { REGISTRY_AUTH_FILE: join(at, 'auth.json') }),
    ...(s.mode === undefined ? {} : { HELPER_MODE: s.mode }),
    ...s.env,
  };
  return { env, log };
}

function pull(registry: TestRegistry, env: Record<string, string>) {
  return runAirlock(['pull', `oci://${registry.host}/models/acme/tiny-llm:main`, '--trusted-keys', pub(), '--plain-http', '--cache-dir', join(dir, `cache-${(counter += 1)}`)], { env });
}

function publish(registry: TestRegistry, env: Record<string, string>) {
  return runAirlock(['publish', bundle, '--to', `oci://${registry.host}/models`, '--trusted-keys', pub(), '--plain-http'], { env });
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-credhelpers-'));
  bin = join(dir, 'bin');
  await mkdir(bin);
  await writeFile(join(bin, 'docker-credential-test'), HELPER);
  await chmod(join(bin, 'docker-credential-test'), 0o755);
  ({ hub, keys, bundle } = await exportSampleBundle(dir));
});

after(async () => {
  for (const r of registries) await r.close();
  await hub?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('credential helpers, htpasswd Basic registry', () => {
  const SECRET = 'helper-secret-7f3a';
  let registry: TestRegistry;
  const good = (): Record<string, { Username: string; Secret: string }> => ({ [registry.host]: { Username: 'pusher', Secret: SECRET } });

  before(async () => {
    registry = await startRegistry({ kind: 'basic', user: 'pusher', password: SECRET });
    registries.push(registry);
  });

  test('credHelpers and credsStore in config.json: the helper is asked for host:port, the secret never shown', async () => {
    const perRegistry = await setup({ docker: { credHelpers: { [registry.host]: 'test' } }, store: good() });
    const p = await publish(registry, perRegistry.env);
    assert.equal(p.code, 0, p.stderr);
    assert.doesNotMatch(p.stdout + p.stderr, new RegExp(SECRET));
    assert.deepEqual([...new Set((await readFile(perRegistry.log, 'utf8')).trim().split('\n'))], [registry.host]);

    // credsStore: the default helper; `docker login` leaves only an empty marker in auths
    const store = await setup({ docker: { auths: { [registry.host]: {} }, credsStore: 'test' }, store: good() });
    const r = await pull(registry, store.env);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout + r.stderr, new RegExp(SECRET));
  });

  test('precedence as docker: credHelpers over credsStore over auths; containers auth.json credHelpers first, "not found" passes on', async () => {
    // credHelpers wins: the credsStore helper does not exist and the auths entry is wrong, neither is used
    const first = await setup({ docker: { credHelpers: { [registry.host]: 'test' }, credsStore: 'nosuch', auths: { [registry.host]: basic('pusher', 'wrong') } }, store: good() });
    assert.equal((await pull(registry, first.env)).code, 0);
    // credsStore wins over an auths entry (docker reads nothing from auths then)
    const second = await setup({ docker: { credsStore: 'test', auths: { [registry.host]: basic('pusher', 'wrong') } }, store: good() });
    const r2 = await pull(registry, second.env);
    assert.equal(r2.code, 0, r2.stderr);
    // containers' auth.json comes before docker's config; its credHelpers entry before its auths
    const third = await setup({ containers: { credHelpers: { [registry.host]: 'test' }, auths: { [registry.host]: basic('pusher', 'wrong') } }, docker: { auths: { [registry.host]: basic('pusher', 'wrong') } }, store: good() });
    const r3 = await pull(registry, third.env);
    assert.equal(r3.code, 0, r3.stderr);
    assert.match(await readFile(third.log, 'utf8'), new RegExp(registry.host.replace(/\./g, '\\.')));
    // the helper has nothing for this registry: on to the next file (docker's config with the right entry)
    const fourth = await setup({ containers: { credHelpers: { [registry.host]: 'test' } }, docker: { auths: { [registry.host]: basic('pusher', SECRET) } }, store: {} });
    const r4 = await pull(registry, fourth.env);
    assert.equal(r4.code, 0, r4.stderr);
    // containers' auth.json has no credsStore: it is not run from there
    const fifth = await setup({ containers: { credsStore: 'nosuch' }, docker: { auths: { [registry.host]: basic('pusher', SECRET) } } });
    const r5 = await pull(registry, fifth.env);
    assert.equal(r5.code, 0, r5.stderr);
  });

  test('a missing, failing or hanging helper: exit 4 naming the helper and where it was configured; wrong secrets: the 401 names the helper', async () => {
    const missing = await setup({ docker: { credHelpers: { [registry.host]: 'nosuch' } } });
    const m = await pull(registry, missing.env);
    assert.equal(m.code, 4, m.stderr);
    assert.match(m.stderr, /E_AUTH/);
    assert.match(m.stderr, /credential helper docker-credential-nosuch \(credHelpers\[".*"\] in .*config\.json\) is not installed \(not found on PATH\)/);
    assert.match(m.stderr, /hint: install docker-credential-nosuch/);

    const failing = await setup({ docker: { credsStore: 'test' }, store: good(), mode: 'fail' });
    const f = await pull(registry, failing.env);
    assert.equal(f.code, 4, f.stderr);
    assert.match(f.stderr, /docker-credential-test \(credsStore in .*config\.json\) failed \(exit 1\): the keychain is locked/);

    // a helper that never answers (a locked keychain waiting for a prompt) is given up on
    const hanging = await setup({ docker: { credsStore: 'test' }, store: good(), mode: 'hang', env: { AIRLOCK_CREDENTIAL_HELPER_TIMEOUT_MS: '300' } });
    const h = await pull(registry, hanging.env);
    assert.equal(h.code, 4, h.stderr);
    assert.match(h.stderr, /docker-credential-test .* did not answer within/);

    const wrong = await setup({ docker: { credHelpers: { [registry.host]: 'test' } }, store: { [registry.host]: { Username: 'pusher', Secret: 'not-the-password-42' } } });
    const w = await pull(registry, wrong.env);
    assert.equal(w.code, 4, w.stderr);
    assert.match(w.stderr, /authentication failed \(HTTP 401\) with the credentials from docker-credential-test/);
    assert.doesNotMatch(w.stdout + w.stderr, /not-the-password-42/);
  });

  test('an identity token for a registry that only speaks Basic: refused with a clear error', async () => {
    const token = await setup({ docker: { credHelpers: { [registry.host]: 'test' } }, store: { [registry.host]: { Username: '<token>', Secret: 'refresh-for-basic-9' } } });
    const r = await pull(registry, token.env);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stderr, /asks for a password \(Basic auth\), but the credentials from docker-credential-test .* are an identity token/);
    assert.match(r.stderr, /hint: an identity token works only with a registry that uses token auth/);
    assert.doesNotMatch(r.stdout + r.stderr, /refresh-for-basic-9/);
  });
});

describe('identity tokens, token-auth registry', () => {
  const REFRESH = 'refresh-token-5d1e9c';
  let registry: TestRegistry & { token: TokenServer };

  before(async () => {
    registry = (await startRegistry({ kind: 'token', user: 'ci', password: 'ci-password-0b2', refreshToken: REFRESH })) as TestRegistry & { token: TokenServer };
    registries.push(registry);
  });

  test('a helper answering Username "<token>": publish and pull trade it with the refresh-token grant, per scope', async () => {
    const s = await setup({ docker: { credHelpers: { [registry.host]: 'test' } }, store: { [registry.host]: { Username: '<token>', Secret: REFRESH } } });
    const p = await publish(registry, s.env);
    assert.equal(p.code, 0, p.stderr);
    const r = await pull(registry, s.env);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(registry.token.grants.length > 0);
    assert.deepEqual([...new Set(registry.token.grants)], ['refresh_token'], 'never the password grant');
    assert.ok(registry.token.scopes.includes('repository:models/acme/tiny-llm:pull,push'), registry.token.scopes.join(' '));
    assert.ok(registry.token.scopes.includes('repository:models/acme/tiny-llm:pull'));
    assert.doesNotMatch(p.stdout + p.stderr + r.stdout + r.stderr, new RegExp(REFRESH));
  });

  test('identitytoken in config.json works the same; a refused one → exit 4 with a hint to log in again, never shown', async () => {
    const grantsBefore = registry.token.grants.length;
    const s = await setup({ docker: { auths: { [registry.host]: { ...basic('ci', ''), identitytoken: REFRESH } } } });
    const r = await pull(registry, s.env);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(registry.token.grants.slice(grantsBefore).every((g) => g === 'refresh_token'));

    const revoked = await setup({ docker: { auths: { [registry.host]: { ...basic('ci', ''), identitytoken: 'revoked-token-77' } } } });
    const bad = await pull(registry, revoked.env);
    assert.equal(bad.code, 4, bad.stderr);
    assert.match(bad.stderr, /E_AUTH/);
    assert.match(bad.stderr, /hint: the identity token for .* was refused/);
    assert.doesNotMatch(bad.stdout + bad.stderr, /revoked-token-77/);
  });
});
