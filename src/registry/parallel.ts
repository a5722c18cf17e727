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
