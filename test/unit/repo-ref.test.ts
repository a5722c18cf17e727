/**
 * What the export command takes from its arguments and environment: repo arguments, the endpoint and
 * the token (hf-hub.md §1). The environment is always passed in, so nothing of the developer's leaks in.
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { isAirlockError } from '../../src/errors.js';
import { formatRepoRef, parseRepoArg } from '../../src/hub/repo-ref.js';
import { hfHome, resolveEndpoint, resolveToken, resolveTokenWithSource, tokenPath } from '../../src/hub/auth.js';

const defaults = { type: 'model', revision: 'main' } as const;

describe('parseRepoArg', () => {
  it('reads namespaced, bare and prefixed ids', () => {
    assert.deepEqual(parseRepoArg('acme/tiny', defaults), { type: 'model', id: 'acme/tiny', revision: 'main' });
    assert.deepEqual(parseRepoArg('gpt2', defaults), { type: 'model', id: 'gpt2', revision: 'main' });
    assert.deepEqual(parseRepoArg('datasets/acme/ds', defaults), { type: 'dataset', id: 'acme/ds', revision: 'main' });
    assert.deepEqual(parseRepoArg('datasets/squad', defaults), { type: 'dataset', id: 'squad', revision: 'main' });
    assert.deepEqual(parseRepoArg('models/acme/tiny', { type: 'dataset', revision: 'main' }), { type: 'model', id: 'acme/tiny', revision: 'main' });
  });

  it('takes the type from --repo-type unless the id has a prefix', () => {
    assert.equal(parseRepoArg('acme/ds', { type: 'dataset', revision: 'main' }).type, 'dataset');
    assert.equal(parseRepoArg('datasets/acme/ds', { type: 'model', revision: 'main' }).type, 'dataset');
  });

  it('takes the revision after @ over --revision', () => {
    assert.deepEqual(parseRepoArg('acme/tiny@v1.0', defaults), { type: 'model', id: 'acme/tiny', revision: 'v1.0' });
    assert.equal(parseRepoArg('acme/tiny', { type: 'model', revision: 'dev' }).revision, 'dev');
    assert.equal(parseRepoArg('acme/tiny@refs/pr/1', defaults).revision, 'refs/pr/1');
    const commit = '0123456789abcdef0123456789abcdef01234567';
    assert.equal(parseRepoArg(`datasets/acme/ds@${commit}`, defaults).revision, commit);
  });

  it('rejects bad ids with E_REPO_ID_INVALID and a hint', () => {
    for (const arg of ['', 'acme/tiny/extra', 'a--b/c', '../etc', 'acme/..', 'acme/tiny.git', '-acme/x', 'acme tiny', '@main', 'acme/']) {
      assert.throws(() => parseRepoArg(arg, defaults), (e: unknown) => isAirlockError(e, 'E_REPO_ID_INVALID') && e.hint !== undefined, arg);
    }
    assert.throws(() => parseRepoArg('https://huggingface.co/acme/tiny', defaults), (e: unknown) => isAirlockError(e, 'E_REPO_ID_INVALID') && /URL/.test(e.message));
    assert.throws(() => parseRepoArg('spaces/acme/app', defaults), (e: unknown) => isAirlockError(e, 'E_REPO_ID_INVALID') && /spaces/.test(e.message));
  });

  it('rejects bad revisions with E_REVISION_INVALID and a hint', () => {
    for (const arg of ['acme/tiny@', 'acme/tiny@a..b', 'acme/tiny@main~1', 'acme/tiny@x y', 'acme/tiny@/main', 'acme/tiny@.hidden']) {
      assert.throws(() => parseRepoArg(arg, defaults), (e: unknown) => isAirlockError(e, 'E_REVISION_INVALID') && e.hint !== undefined, arg);
    }
    assert.throws(() => parseRepoArg('acme/tiny', { type: 'model', revision: 'a..b' }), (e: unknown) => isAirlockError(e, 'E_REVISION_INVALID'));
  });

  it('formats a ref back the way it is written', () => {
    assert.equal(formatRepoRef({ type: 'dataset', id: 'acme/ds', revision: 'main' }), 'datasets/acme/ds@main');
    assert.equal(formatRepoRef({ type: 'model', id: 'gpt2', revision: 'v1' }, false), 'gpt2');
  });
});

describe('resolveEndpoint', () => {
  it('prefers the flag, then HF_ENDPOINT, then huggingface.co, without a trailing slash', () => {
    assert.equal(resolveEndpoint(undefined, {}), 'https://huggingface.co');
    assert.equal(resolveEndpoint(undefined, { HF_ENDPOINT: '' }), 'https://huggingface.co');
    assert.equal(resolveEndpoint(undefined, { HF_ENDPOINT: 'https://hf-mirror.example/' }), 'https://hf-mirror.example');
    assert.equal(resolveEndpoint('http://127.0.0.1:8080//', { HF_ENDPOINT: 'https://hf-mirror.example' }), 'http://127.0.0.1:8080');
    assert.equal(resolveEndpoint('https://mirror.example/hf/', {}), 'https://mirror.example/hf');
  });

  it('rejects credentials, other schemes and non-URLs with E_USAGE, never echoing a secret', () => {
    assert.throws(
      () => resolveEndpoint('https://user:hf_SecretSecret123@mirror.example', {}),
      (e: unknown) => isAirlockError(e, 'E_USAGE') && !e.message.includes('SecretSecret123'),
    );
    assert.throws(() => resolveEndpoint(undefined, { HF_ENDPOINT: 'https://tok@mirror.example' }), (e: unknown) => isAirlockError(e, 'E_USAGE'));
    assert.throws(() => resolveEndpoint('ftp://mirror.example', {}), (e: unknown) => isAirlockError(e, 'E_USAGE'));
    assert.throws(() => resolveEndpoint('file:///etc', {}), (e: unknown) => isAirlockError(e, 'E_USAGE'));
    assert.throws(() => resolveEndpoint('mirror.example', {}), (e: unknown) => isAirlockError(e, 'E_USAGE'));
    assert.throws(() => resolveEndpoint('https://mirror.example/?token=x', {}), (e: unknown) => isAirlockError(e, 'E_USAGE'));
  });
});

describe('resolveToken', () => {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-token-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const noFile = join(dir, 'missing', 'token');

  it('prefers --token, then HF_TOKEN, then HUGGING_FACE_HUB_TOKEN, then the token file', () => {
    const file = join(dir, 'token-a');
    writeFileSync(file, 'hf_fromfile\n');
    const env = { HF_TOKEN: 'hf_env', HUGGING_FACE_HUB_TOKEN: 'hf_legacy', HF_TOKEN_PATH: file };
    assert.equal(resolveToken('hf_flag', env), 'hf_flag');
    assert.equal(resolveToken(undefined, env), 'hf_env');
    assert.equal(resolveToken(undefined, { ...env, HF_TOKEN: '' }), 'hf_legacy');
    assert.equal(resolveToken(undefined, { HF_TOKEN_PATH: file }), 'hf_fromfile');
    assert.deepEqual(resolveTokenWithSource(undefined, { HF_TOKEN_PATH: file }), { token: 'hf_fromfile', source: 'token file', path: file });
    assert.equal(resolveToken(undefined, { HF_TOKEN_PATH: noFile }), undefined);
  });

  it('strips CR/LF and whitespace; empty means none', () => {
    assert.equal(resolveToken(' hf_a\r\nbc \n', { HF_TOKEN_PATH: noFile }), 'hf_abc');
    assert.equal(resolveToken('  \r\n', { HF_TOKEN_PATH: noFile }), undefined);
    assert.equal(resolveToken(undefined, { HF_TOKEN: '\n', HF_TOKEN_PATH: noFile }), undefined);
    const empty = join(dir, 'token-empty');
    writeFileSync(empty, '\r\n');
    assert.equal(resolveToken(undefined, { HF_TOKEN_PATH: empty }), undefined);
  });

  it('finds the file under HF_HOME, XDG_CACHE_HOME or ~/.cache', () => {
    const home = join(dir, 'home');
    mkdirSync(join(home, '.cache', 'huggingface'), { recursive: true });
    writeFileSync(join(home, '.cache', 'huggingface', 'token'), 'hf_home\n');
    mkdirSync(join(dir, 'xdg', 'huggingface'), { recursive: true });
    writeFileSync(join(dir, 'xdg', 'huggingface', 'token'), 'hf_xdg');
    mkdirSync(join(dir, 'hfhome'), { recursive: true });
    writeFileSync(join(dir, 'hfhome', 'token'), 'hf_hfhome');
    assert.equal(resolveToken(undefined, { HOME: home }), 'hf_home');
    assert.equal(resolveToken(undefined, { HOME: home, XDG_CACHE_HOME: join(dir, 'xdg') }), 'hf_xdg');
    assert.equal(resolveToken(undefined, { HOME: home, XDG_CACHE_HOME: join(dir, 'xdg'), HF_HOME: join(dir, 'hfhome') }), 'hf_hfhome');
    assert.equal(resolveToken(undefined, { HOME: home, HF_HOME: '~/.cache/huggingface' }), 'hf_home');
    assert.equal(hfHome({ HOME: home }), join(home, '.cache', 'huggingface'));
    assert.equal(tokenPath({ HOME: home, HF_HOME: '$HOME/x' }), join(home, 'x', 'token'));
  });

  it('honours HF_HUB_DISABLE_IMPLICIT_TOKEN: only --token counts', () => {
    const env = { HF_TOKEN: 'hf_env', HF_HUB_DISABLE_IMPLICIT_TOKEN: '1', HF_TOKEN_PATH: noFile };
    assert.equal(resolveToken(undefined, env), undefined);
    assert.equal(resolveToken('hf_flag', env), 'hf_flag');
  });

  it('refuses a token that cannot be a header value, without echoing it', () => {
    assert.throws(
      () => resolveToken(undefined, { HF_TOKEN: 'hf_abc def', HF_TOKEN_PATH: noFile }),
      (e: unknown) => isAirlockError(e, 'E_USAGE') && !e.message.includes('hf_abc') && /HF_TOKEN/.test(e.message),
    );
  });
});
