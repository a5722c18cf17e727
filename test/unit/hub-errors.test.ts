/**
 * Hub answers → AirlockErrors (hf-hub.md §2.7), and the strict parse of the Hub's JSON (§2.3, §2.4):
 * pure functions, no server.
 */
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import type { AirlockError} from '../../src/errors.js';
import { isAirlockError, type ErrorCode } from '../../src/errors.js';
import { hubErrorFromResponse, requestId, serverMessage, type HubErrorInput } from '../../src/hub/huggingface/errors.js';
import { nextLink, parseRepoInfoCommit, parseTreePage } from '../../src/hub/huggingface/wire.js';
import type { RepoRef } from '../../src/hub/types.js';

const repo: RepoRef = { type: 'model', id: 'acme/tiny', revision: 'main' };
const TOKEN = 'hf_abcdefghijklmnopqrstuvwxyz012345';
const API = new URL('https://hub.example/api/models/acme/tiny/revision/main?blobs=true');
const RESOLVE = new URL('https://hub.example/acme/tiny/resolve/0123456789abcdef0123456789abcdef01234567/config.json');

function mapped(partial: Partial<HubErrorInput> & { status: number }): AirlockError {
  return hubErrorFromResponse({ headers: {}, body: '', url: API, repo, tokenSent: false, token: TOKEN, ...partial });
}

function expectCode(error: AirlockError, code: ErrorCode): void {
  assert.equal(error.code, code, error.message);
  assert.ok(!error.message.includes(TOKEN) && !(error.hint ?? '').includes(TOKEN), 'the token never appears');
  assert.ok(!error.message.includes('blobs=true'), 'no query string in messages');
}

describe('hubErrorFromResponse', () => {
  it('maps X-Error-Code first, whatever the status', () => {
    expectCode(mapped({ status: 404, headers: { 'x-error-code': 'RevisionNotFound' } }), 'E_REVISION_NOT_FOUND');
    expectCode(mapped({ status: 404, headers: { 'x-error-code': 'EntryNotFound' }, url: RESOLVE, path: 'config.json' }), 'E_ENTRY_NOT_FOUND');
    expectCode(mapped({ status: 401, headers: { 'x-error-code': 'GatedRepo' }, url: RESOLVE }), 'E_GATED');
    expectCode(mapped({ status: 403, headers: { 'x-error-code': 'GatedRepo' }, url: RESOLVE, tokenSent: true }), 'E_GATED');
    expectCode(mapped({ status: 404, headers: { 'x-error-code': 'RepoNotFound' } }), 'E_REPO_NOT_FOUND');
    expectCode(mapped({ status: 403, headers: { 'x-error-message': 'Access to this resource is disabled.' } }), 'E_DISABLED');
  });

  it('names the revision, the repo, the status, the URL and the request id', () => {
    const e = mapped({ status: 404, headers: { 'x-error-code': 'RevisionNotFound', 'x-error-message': 'Invalid rev id: main', 'x-request-id': 'req-42' } });
    assert.match(e.message, /"main"/);
    assert.match(e.message, /acme\/tiny/);
    assert.match(e.message, /HTTP 404/);
    assert.match(e.message, /https:\/\/hub\.example\/api\/models\/acme\/tiny\/revision\/main/);
    assert.match(e.message, /Invalid rev id: main/);
    assert.match(e.message, /req-42/);
  });

  it('treats a 401 on a repo URL as "not found or no access", and says whether a token was sent', () => {
    const without = mapped({ status: 401, headers: { 'x-error-message': 'Repository not found' } });
    expectCode(without, 'E_REPO_NOT_FOUND');
    assert.match(without.hint ?? '', /no token was sent/);
    assert.match(without.hint ?? '', /--token or HF_TOKEN/);
    const withToken = mapped({ status: 401, url: RESOLVE, tokenSent: true });
    expectCode(withToken, 'E_REPO_NOT_FOUND');
    assert.match(withToken.hint ?? '', /a token was sent/);
  });

  it('reports a rejected token as E_AUTH', () => {
    const e = mapped({ status: 401, headers: { 'x-error-message': 'Invalid credentials in Authorization header' }, tokenSent: true });
    expectCode(e, 'E_AUTH');
    assert.match(e.message, /token rejected/);
  });

  it('gives the gated hint about accepting the terms', () => {
    const e = mapped({ status: 403, headers: { 'x-error-code': 'GatedRepo' }, url: RESOLVE, tokenSent: true });
    assert.match(e.hint ?? '', /accept the model's terms on its page while logged in with the token's account/);
    const anonymous = mapped({ status: 401, headers: { 'x-error-code': 'GatedRepo' }, url: RESOLVE });
    assert.match(anonymous.hint ?? '', /--token or HF_TOKEN/);
  });

  it('maps 403, 429, 5xx and the rest', () => {
    expectCode(mapped({ status: 403 }), 'E_FORBIDDEN');
    const limited = mapped({ status: 429, headers: { ratelimit: '"api";r=0;t=17' } });
    expectCode(limited, 'E_RATE_LIMITED');
    assert.match(limited.hint ?? '', /17 s/);
    const down = mapped({ status: 503, body: '<html>Bad gateway</html>', headers: { 'content-type': 'text/html' } });
    expectCode(down, 'E_HTTP');
    assert.match(down.hint ?? '', /mirror\/hub/);
    assert.doesNotMatch(down.message, /html/i);
    expectCode(mapped({ status: 400, body: '{"error":"bad"}' }), 'E_HTTP');
    expectCode(mapped({ status: 401, url: new URL('https://hub.example/api/whoami-v2') }), 'E_AUTH');
  });

  it('masks a token a server echoes back', () => {
    const e = mapped({ status: 500, body: `{"error":"boom for Bearer ${TOKEN}"}` });
    expectCode(e, 'E_HTTP');
  });
});

describe('serverMessage and requestId', () => {
  it('reads the error the way huggingface_hub does', () => {
    assert.equal(serverMessage({ 'x-error-message': 'from header' }, '{"error":"from body"}'), 'from header; from body');
    assert.equal(serverMessage({}, '{"error":["one","two"]}'), 'one; two');
    assert.equal(serverMessage({}, '{"error":"invalid_grant","error_description":"expired"}'), 'invalid_grant: expired');
    assert.equal(serverMessage({}, '{"errors":[{"message":"a"},{"message":"b"}]}'), 'a; b');
    assert.equal(serverMessage({ 'content-type': 'text/plain' }, 'plain words'), 'plain words');
    assert.equal(serverMessage({ 'content-type': 'text/html' }, '<h1>x</h1>'), undefined);
    assert.equal(serverMessage({}, ''), undefined);
  });

  it('picks X-Request-Id, then X-Amzn-Trace-Id, then X-Amz-Cf-Id', () => {
    assert.equal(requestId({ 'x-request-id': 'a', 'x-amzn-trace-id': 'b' }), 'a');
    assert.equal(requestId({ 'x-amzn-trace-id': 'b', 'x-amz-cf-id': 'c' }), 'b');
    assert.equal(requestId({ 'x-amz-cf-id': 'c' }), 'c');
    assert.equal(requestId({}), undefined);
  });
});

describe('wire parsing', () => {
  const url = 'https://hub.example/api/models/acme/tiny/tree/x';
  const oid = 'fca794a5f07ff8f963fe8b61e3694b0fb7f955df';
  const sha256 = '097417381d6c7230bd9e3557456d726de6e83245ec8b24f529f60198a67b203a';

  it('parses a recorded Hub tree page into files (LFS size and sha256 from lfs)', () => {
    const page = [
      { oid, path: 'config.json', size: 313, type: 'file' },
      { lfs: { oid: sha256, size: 440473133, pointerSize: 134 }, xetHash: 'x', oid: 'ba5d19791be1dd7992e33bd61f20207b0f7f50a5', path: 'pytorch_model.bin', size: 440473133, type: 'file' },
      { oid, path: 'sub', size: 0, type: 'directory' },
    ];
    assert.deepEqual(parseTreePage(page, url, repo, new Set()), [
      { path: 'config.json', size: 313, blobId: oid },
      { path: 'pytorch_model.bin', size: 440473133, blobId: 'ba5d19791be1dd7992e33bd61f20207b0f7f50a5', lfsSha256: sha256 },
    ]);
  });

  it('reports every malformed entry at once, naming the URL', () => {
    const page = [{ type: 'file', path: 'a', oid: 'nothex', size: 1 }, { type: 'file', path: 'b', oid, size: -1 }, { type: 'submodule', path: 'c' }, 42];
    assert.throws(
      () => parseTreePage(page, url, repo, new Set()),
      (e: unknown) => isAirlockError(e, 'E_HUB_PROTOCOL') && e.message.includes(url) && /"a"/.test(e.message) && /"b"/.test(e.message) && /submodule/.test(e.message) && /entry 3/.test(e.message),
    );
    assert.throws(() => parseTreePage({ files: [] }, url, repo, new Set()), (e: unknown) => isAirlockError(e, 'E_HUB_PROTOCOL'));
    assert.throws(
      () => parseTreePage([{ type: 'file', path: 'a', oid, size: 1, lfs: { oid: 'short', size: 1 } }], url, repo, new Set()),
      (e: unknown) => isAirlockError(e, 'E_HUB_PROTOCOL') && /lfs\.oid/.test(e.message),
    );
  });

  it('rejects a path listed twice, across pages too', () => {
    const seen = new Set<string>();
    parseTreePage([{ type: 'file', path: 'a', oid, size: 1 }], url, repo, seen);
    assert.throws(() => parseTreePage([{ type: 'file', path: 'a', oid, size: 1 }], url, repo, seen), (e: unknown) => isAirlockError(e, 'E_HUB_PROTOCOL') && /twice/.test(e.message));
  });

  it('rejects unsafe paths with E_UNSAFE_PATH naming the path and the repo', () => {
    for (const path of ['../evil', '/etc/passwd', 'a/../../b', 'C:/x', 'a\\b', 'a//b', 'con:x', '.', 'a/']) {
      assert.throws(
        () => parseTreePage([{ type: 'file', path, oid, size: 1 }], url, repo, new Set()),
        (e: unknown) => isAirlockError(e, 'E_UNSAFE_PATH') && e.message.includes(JSON.stringify(path)) && e.message.includes('acme/tiny'),
        path,
      );
    }
  });

  it('takes the commit from repo info only if it is 40 lowercase hex', () => {
    assert.equal(parseRepoInfoCommit({ sha: oid }, url), oid);
    for (const bad of [{}, { sha: oid.toUpperCase() }, { sha: oid.slice(0, 7) }, { sha: 1 }, [], null]) {
      assert.throws(() => parseRepoInfoCommit(bad, url), (e: unknown) => isAirlockError(e, 'E_HUB_PROTOCOL') && e.message.includes(url));
    }
  });

  it('finds rel="next" in a Link header', () => {
    assert.equal(nextLink('<https://hub.example/api/x?cursor=abc&recursive=true>; rel="next"'), 'https://hub.example/api/x?cursor=abc&recursive=true');
    assert.equal(nextLink('<https://a/prev>; rel="prev", <https://a/next>; rel=next'), 'https://a/next');
    assert.equal(nextLink('<https://a/x>; rel="xet-auth"'), undefined);
    assert.equal(nextLink(undefined), undefined);
  });
});
