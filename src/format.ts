/**
 * Human byte counts (binary units), shared by library messages and the CLI. Pure. `decimals` fixes
 * the precision (space messages use 1, so a user comparing "needed" with "free" sees like with like);
 * by default large values drop the decimal.
 */
export function formatBytes(bytes: number, decimals?: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(decimals ?? (value >= 100 ? 0 : 1))} ${units[unit]}`;
}
