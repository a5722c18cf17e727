/** The retry policy: which errors are retried, how long between attempts, where it stops and what it says. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AirlockError } from '../../src/errors.js';
import {
  backoffDelay,
  DEFAULT_RETRY_POLICY,
  markTransient,
  parseRetryAfter,
  retryPolicyFromEnv,
  transientInfo,
  withRetries,
  type RetryEvent,
} from '../../src/hub/retry.js';

const noSleep = async (): Promise<void> => undefined;

describe('backoff', () => {
  it('doubles from 1 s to a cap of 8 s, with ±25 % jitter', () => {
    const mid = () => 0.5;
    assert.deepEqual([1, 2, 3, 4, 5, 6].map((n) => backoffDelay(DEFAULT_RETRY_POLICY, n, undefined, mid)), [1000, 2000, 4000, 8000, 8000, 8000]);
    assert.equal(backoffDelay(DEFAULT_RETRY_POLICY, 1, undefined, () => 0), 750);
    assert.equal(backoffDelay(DEFAULT_RETRY_POLICY, 1, undefined, () => 0.999999), 1250);
  });

  it("a server's Retry-After wins, capped", () => {
    assert.equal(backoffDelay(DEFAULT_RETRY_POLICY, 1, 31_000), 31_000);
    assert.equal(backoffDelay(DEFAULT_RETRY_POLICY, 1, 10 * 3600_000), DEFAULT_RETRY_POLICY.maxServerDelayMs);
  });

  it('AIRLOCK_RETRY_BASE_MS shortens every delay (tests), AIRLOCK_RETRY_ATTEMPTS changes the bound', () => {
    const p = retryPolicyFromEnv({ AIRLOCK_RETRY_BASE_MS: '10', AIRLOCK_RETRY_ATTEMPTS: '3' });
    assert.equal(p.attempts, 3);
    assert.equal(backoffDelay(p, 10, undefined, () => 0.5), 80);
    assert.equal(backoffDelay(p, 1, 2000), 20, 'Retry-After scaled by the same factor');
    assert.deepEqual(retryPolicyFromEnv({ AIRLOCK_RETRY_BASE_MS: 'soon' }), DEFAULT_RETRY_POLICY);
  });
});

describe('parseRetryAfter', () => {
  it('reads delta seconds (+1 s like huggingface_hub), an HTTP date, and RateLimit r=0;t=', () => {
    assert.equal(parseRetryAfter({ 'retry-after': '7' }), 8000);
    const now = Date.parse('2026-01-01T00:00:00Z');
    assert.equal(parseRetryAfter({ 'retry-after': 'Thu, 01 Jan 2026 00:00:30 GMT' }, now), 31_000);
    assert.equal(parseRetryAfter({ ratelimit: '"api";r=0;t=42' }), 43_000);
    assert.equal(parseRetryAfter({ ratelimit: '"api";r=5;t=42' }), undefined, 'quota left: no wait from RateLimit');
    assert.equal(parseRetryAfter({ 'retry-after': 'whenever' }), undefined);
    assert.equal(parseRetryAfter({}), undefined);
  });
});

describe('withRetries', () => {
  const policy = { ...DEFAULT_RETRY_POLICY, baseMs: 1, maxMs: 8 };
  const transient = (status: number) => markTransient(new AirlockError('E_HTTP', `HTTP ${status} from http://hub/x`), { status });

  it('network errors and marked statuses are transient; others are not', () => {
    assert.deepEqual(transientInfo(new AirlockError('E_NETWORK', 'x')), { status: 0 });
    assert.equal(transientInfo(new AirlockError('E_REPO_NOT_FOUND', 'x')), undefined);
    assert.equal(transientInfo(new Error('x')), undefined);
    assert.equal(transientInfo(transient(503))?.status, 503);
  });

  it('retries until success and reports each retry', async () => {
    const events: RetryEvent[] = [];
    let calls = 0;
    const value = await withRetries({ policy, what: 'GET x', onRetry: (e) => events.push(e), sleep: noSleep }, async () => {
      calls++;
      if (calls < 3) throw transient(502);
      return 'ok';
    });
    assert.equal(value, 'ok');
    assert.equal(calls, 3);
    assert.deepEqual(events.map((e) => [e.attempt, e.attempts, e.status]), [[1, 5, 502], [2, 5, 502]]);
  });

  it('stops after the bound; the error keeps its code and says the attempts and the last status', async () => {
    let calls = 0;
    await assert.rejects(
      withRetries({ policy, what: 'GET x', sleep: noSleep }, async () => {
        calls++;
        throw transient(503);
      }),
      (e: AirlockError) => {
        assert.equal(e.code, 'E_HTTP');
        assert.match(e.message, /HTTP 503 from http:\/\/hub\/x — gave up after 5 attempts \(last: HTTP 503\)/);
        return true;
      },
    );
    assert.equal(calls, 5);
  });

  it('an abort ends the wait between two attempts at once, with its reason, and no attempt follows', async () => {
    const controller = new AbortController();
    const reason = new AirlockError('E_INTERRUPTED', 'interrupted (SIGINT)');
    let calls = 0;
    const started = Date.now();
    const run = withRetries({ policy: { ...policy, baseMs: 60_000, maxMs: 60_000 }, what: 'GET x', signal: controller.signal }, async () => {
      calls++;
      setImmediate(() => controller.abort(reason));
      throw transient(503);
    });
    await assert.rejects(run, (e) => e === reason);
    assert.equal(calls, 1);
    assert.ok(Date.now() - started < 5_000, 'it did not wait out the 60 s back-off');
    await assert.rejects(withRetries({ policy, what: 'GET x', signal: controller.signal }, async () => 'never'), (e) => e === reason);
  });

  it('does not retry what is not transient (404, 401, integrity)', async () => {
    let calls = 0;
    await assert.rejects(
      withRetries({ policy, what: 'GET x', sleep: noSleep }, async () => {
        calls++;
        throw new AirlockError('E_ENTRY_NOT_FOUND', 'HTTP 404');
      }),
      /HTTP 404$/,
    );
    assert.equal(calls, 1);
  });

  it('progress (bytes received) resets the count, so a long download on a flaky link goes on', async () => {
    let calls = 0;
    const result = await withRetries({ policy, what: 'file', sleep: noSleep }, async (progressed) => {
      calls++;
      if (calls < 12) {
        progressed();
        throw new AirlockError('E_NETWORK', 'cut');
      }
      return calls;
    });
    assert.equal(result, 12);
  });

  it('waits what the server asked for', async () => {
    const waits: number[] = [];
    let calls = 0;
    await withRetries({ policy: DEFAULT_RETRY_POLICY, what: 'x', sleep: async (ms) => void waits.push(ms) }, async () => {
      if (calls++ === 0) throw markTransient(new AirlockError('E_RATE_LIMITED', '429'), { status: 429, retryAfterMs: 3000 });
    });
    assert.deepEqual(waits, [3000]);
  });

  it('one attempt only: the original error, unchanged', async () => {
    const original = new AirlockError('E_NETWORK', 'cut');
    await assert.rejects(withRetries({ policy: { ...policy, attempts: 1 }, what: 'x', sleep: noSleep }, async () => Promise.reject(original)), (e) => e === original);
  });
});
