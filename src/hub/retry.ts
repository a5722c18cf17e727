/**
 * Bounded retries with exponential backoff and jitter (spec hf-hub.md §2.7): up to 5 attempts, 1 s
 * doubling to a cap of 8 s, on network errors, timeouts and HTTP 408/429/500/502/503/504. A server's
 * `Retry-After` (seconds or HTTP date) or `RateLimit: …;t=<s>` wins over the computed delay (+1 s, like
 * huggingface_hub), capped so one answer cannot park the export for hours.
 *
 * Which errors are transient is decided where the response is seen (the hub client), recorded here with
 * `markTransient`, and read by `withRetries`: the mapped AirlockError stays the one error type.
 */
import { AirlockError, isAirlockError } from '../errors.js';

export const RETRYABLE_STATUSES: ReadonlySet<number> = new Set([408, 429, 500, 502, 503, 504]);

export interface RetryPolicy {
  /** Total attempts, including the first. */
  attempts: number;
  /** First delay; doubles per attempt. */
  baseMs: number;
  /** Cap of the computed delay. */
  maxMs: number;
  /** Cap of a server-requested delay (Retry-After). */
  maxServerDelayMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { attempts: 5, baseMs: 1000, maxMs: 8000, maxServerDelayMs: 5 * 60_000 };
/** A single attempt: what library calls do unless given a policy (the CLI always gives one). */
export const NO_RETRY: RetryPolicy = { attempts: 1, baseMs: 0, maxMs: 0, maxServerDelayMs: 0 };

/**
 * The default policy, with `AIRLOCK_RETRY_BASE_MS` (tests shorten delays with it; the cap scales with
 * it, 8 × base) and `AIRLOCK_RETRY_ATTEMPTS` applied.
 */
export function retryPolicyFromEnv(env: Readonly<Record<string, string | undefined>>): RetryPolicy {
  const policy = { ...DEFAULT_RETRY_POLICY };
  const base = Number(env['AIRLOCK_RETRY_BASE_MS']);
  if (env['AIRLOCK_RETRY_BASE_MS'] !== undefined && Number.isFinite(base) && base >= 0) {
    policy.baseMs = base;
    policy.maxMs = base * 8;
    policy.maxServerDelayMs = Math.max(base * 8, 1);
  }
  const attempts = Number(env['AIRLOCK_RETRY_ATTEMPTS']);
  if (env['AIRLOCK_RETRY_ATTEMPTS'] !== undefined && Number.isInteger(attempts) && attempts >= 1) policy.attempts = attempts;
  return policy;
}

export interface TransientInfo {
  /** HTTP status, 0 for a network error or timeout. */
  status: number;
  /** What the server asked us to wait, if it said. */
  retryAfterMs?: number | undefined;
}

const transient = new WeakMap<AirlockError, TransientInfo>();
const permanent = new WeakSet<AirlockError>();

/** Marks a network error that retrying cannot fix (an untrusted certificate). */
export function markPermanent<E extends AirlockError>(error: E): E {
  permanent.add(error);
  return error;
}

/** Marks an error as worth retrying. Network errors (E_NETWORK) count as transient without a mark. */
export function markTransient<E extends AirlockError>(error: E, info: TransientInfo): E {
  transient.set(error, info);
  return error;
}

export function transientInfo(error: unknown): TransientInfo | undefined {
  if (!(error instanceof AirlockError) || permanent.has(error)) return undefined;
  const marked = transient.get(error);
  if (marked !== undefined) return marked;
  return error.code === 'E_NETWORK' ? { status: 0 } : undefined;
}

type Headers = Readonly<Record<string, string | string[] | undefined>>;

function header(headers: Headers, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

/** `Retry-After` (delta seconds or HTTP date) or the `RateLimit` reset `t=`, in ms; +1 s like huggingface_hub. */
export function parseRetryAfter(headers: Headers, now = Date.now()): number | undefined {
  const rateLimit = header(headers, 'ratelimit');
  const remaining = rateLimit === undefined ? undefined : /;\s*r=(\d+)/.exec(rateLimit)?.[1];
  const reset = rateLimit === undefined ? undefined : /;\s*t=(\d+)/.exec(rateLimit)?.[1];
  if (remaining === '0' && reset !== undefined) return (Number(reset) + 1) * 1000;
  const value = header(headers, 'retry-after')?.trim();
  if (value === undefined || value === '') return undefined;
  if (/^\d+$/.test(value)) return (Number(value) + 1) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now) + 1000;
}

/** Delay before retry number `retry` (1 = the first retry): base·2^(retry−1) capped, ±25 % jitter; or the server's word. */
export function backoffDelay(policy: RetryPolicy, retry: number, retryAfterMs?: number, random: () => number = Math.random): number {
  if (retryAfterMs !== undefined) {
    // huggingface_hub's "+1 s" is already in; scale it with a shortened base so tests stay fast
    const scaled = policy.baseMs < DEFAULT_RETRY_POLICY.baseMs ? (retryAfterMs * policy.baseMs) / DEFAULT_RETRY_POLICY.baseMs : retryAfterMs;
    return Math.min(scaled, policy.maxServerDelayMs);
  }
  const computed = Math.min(policy.baseMs * 2 ** (retry - 1), policy.maxMs);
  return Math.round(computed * (0.75 + random() * 0.5));
}

export interface RetryEvent {
  /** What is being retried, for a person: "GET …/config.json", "config.json". */
  what: string;
  /** The attempt that just failed (1-based) and the bound. */
  attempt: number;
  attempts: number;
  status: number;
  delayMs: number;
  reason: string;
}

export interface RetryOptions {
  policy: RetryPolicy;
  what: string;
  onRetry?: ((event: RetryEvent) => void) | undefined;
  sleep?: ((ms: number) => Promise<void>) | undefined;
  /** An abort (Ctrl-C) ends the retries with its reason: before an attempt, and during the wait between two. */
  signal?: AbortSignal | undefined;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** `sleep`, ended early by an abort of `signal` (rejecting with its reason). */
function sleepUnlessAborted(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** "HTTP 503" or "network error". */
export function describeStatus(status: number): string {
  return status === 0 ? 'a network error' : `HTTP ${status}`;
}

/**
 * The error after the last attempt: same code, the message says how many attempts were made and how
 * the last one ended, so a user can tell a flaky link (network error) from a mirror that is down (502).
 */
export function gaveUp(error: AirlockError, attempts: number, status: number): AirlockError {
  const message = `${error.message} — gave up after ${attempts} attempt${attempts === 1 ? '' : 's'} (last: ${describeStatus(status)})`;
  const wrapped = new AirlockError(error.code, message, {
    ...(error.hint !== undefined ? { hint: error.hint } : {}),
    ...(error.subject !== undefined ? { subject: error.subject } : {}),
    cause: error,
  });
  return wrapped;
}

/**
 * Runs `attempt` until it succeeds, fails with a non-transient error, or the bound is reached.
 * `attempt` may return `progress: true` through `madeProgress()` to reset the counter (a download that
 * received bytes before failing starts a fresh series, as huggingface_hub's does).
 */
export async function withRetries<T>(options: RetryOptions, attempt: (madeProgress: () => void) => Promise<T>): Promise<T> {
  const { signal } = options;
  const wait = options.sleep ?? (signal === undefined ? sleep : (ms: number) => sleepUnlessAborted(ms, signal));
  let failures = 0;
  let total = 0;
  for (;;) {
    signal?.throwIfAborted();
    let progressed = false;
    try {
      return await attempt(() => {
        progressed = true;
      });
    } catch (error) {
      const info = transientInfo(error);
      if (info === undefined || !isAirlockError(error)) throw error;
      total++;
      failures = progressed ? 1 : failures + 1;
      if (failures >= options.policy.attempts) throw options.policy.attempts <= 1 ? error : gaveUp(error, total, info.status);
      const delayMs = backoffDelay(options.policy, failures, info.retryAfterMs);
      options.onRetry?.({
        what: options.what,
        attempt: failures,
        attempts: options.policy.attempts,
        status: info.status,
        delayMs,
        reason: error.message,
      });
      await wait(delayMs);
    }
  }
}
