/** Bounded parallelism for blob uploads and layer downloads. */
/** Runs `work` over `items`, at most `limit` at a time; the first failure stops new work and is rethrown. */
export async function inParallel<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async (): Promise<void> => {
    while (failed === undefined && next < items.length) {
      const item = items[next++]!;
      try {
        await work(item);
      } catch (error) {
        failed ??= error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  // eslint-disable-next-line @typescript-eslint/only-throw-error -- rethrows what a worker threw, unchanged
  if (failed !== undefined) throw failed;
}

/** Blobs below this size are latency-bound (a request or two, an fsync): more of them run at once. */
export const SMALL_BLOB_BYTES = 4 * 1024 * 1024;

/**
 * How many blobs move at once. Without `--concurrency`: large ones 4 at a time (bandwidth-bound; more
 * streams only share the link), small ones 16 (round-trip- and fsync-bound: a 2,000-file dataset would
 * otherwise wait on one round trip after another). `--concurrency N` sets both lanes to N.
 */
export function laneLimits(concurrency: number | undefined): { large: number; small: number } {
  return concurrency === undefined ? { large: 4, small: 16 } : { large: concurrency, small: concurrency };
}

/** `inParallel` with two lanes side by side (see `laneLimits`); a failure stops new work in both and is rethrown. */
export async function inParallelBySize<T>(items: readonly T[], sizeOf: (item: T) => number, limits: { large: number; small: number }, work: (item: T) => Promise<void>): Promise<void> {
  const large = items.filter((item) => sizeOf(item) >= SMALL_BLOB_BYTES);
  const small = items.filter((item) => sizeOf(item) < SMALL_BLOB_BYTES);
  let failed = false;
  const guarded = async (item: T): Promise<void> => {
    if (failed) return;
    try {
      await work(item);
    } catch (error) {
      failed = true;
      throw error;
    }
  };
  const lanes = await Promise.allSettled([inParallel(large, limits.large, guarded), inParallel(small, limits.small, guarded)]);
  for (const lane of lanes) {
    if (lane.status === 'rejected') throw lane.reason;
  }
}
