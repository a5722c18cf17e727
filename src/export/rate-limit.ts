/**
 * `--max-rate`: one token bucket shared by every download of an export, so the cap holds for the whole
 * process however many files and connections run at once. Callers `take()` after receiving a chunk and
 * wait as long as the cap requires; while they wait they do not read, and TCP flow control slows the
 * sender — the link is not used beyond the cap.
 */
import { AirlockError } from '../errors.js';
import type { Throttle } from '../hub/download.js';

const UNITS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1000,
  kb: 1000,
  kib: 1024,
  m: 1000 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1000 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
};

/** "500K", "10M", "1.5MiB", "2g" (per second; a trailing "/s" is allowed) → bytes per second. */
export function parseRate(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*(?:\/s)?\s*$/i.exec(text);
  const unit = m === null ? undefined : UNITS[(m[2] ?? '').toLowerCase()];
  const value = m === null || unit === undefined ? NaN : Number(m[1]) * unit;
  if (!Number.isFinite(value) || value < 1) {
    throw new AirlockError('E_USAGE', `--max-rate ${JSON.stringify(text)} is not a rate`, {
      hint: 'bytes per second with an optional unit: 500K, 10M, 1.5MiB, 1G (K/M/G are powers of 1000, KiB/MiB/GiB of 1024)',
    });
  }
  return Math.floor(value);
}

export class TokenBucket implements Throttle {
  readonly #rate: number;
  readonly #burst: number;
  #tokens: number;
  #last: number;
  #queue: Promise<void> = Promise.resolve();

  /** @param bytesPerSecond the cap; bursts up to a quarter second of it (at least 64 KiB). */
  constructor(bytesPerSecond: number, private readonly now: () => number = () => performance.now()) {
    this.#rate = bytesPerSecond;
    this.#burst = Math.max(64 * 1024, bytesPerSecond / 4);
    this.#tokens = this.#burst;
    this.#last = now();
  }

  /** Waits until `bytes` fit under the cap. Callers are served in order. */
  take(bytes: number): Promise<void> {
    const turn = this.#queue.then(async () => {
      const t = this.now();
      this.#tokens = Math.min(this.#burst, this.#tokens + ((t - this.#last) * this.#rate) / 1000);
      this.#last = t;
      this.#tokens -= bytes;
      if (this.#tokens < 0) {
        const waitMs = (-this.#tokens * 1000) / this.#rate;
        await new Promise((resolve) => setTimeout(resolve, waitMs));
      }
    });
    this.#queue = turn;
    return turn;
  }
}
