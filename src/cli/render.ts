/** The only place that writes to the terminal. Library code returns values or throws AirlockErrors. */
import { AirlockError } from '../errors.js';

export interface Output {
  json: boolean;
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

export function processOutput(json: boolean): Output {
  return {
    json,
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
  };
}

/** One machine-readable result on stdout (`--json`). */
export function printJson(out: Output, value: unknown): void {
  out.stdout(`${JSON.stringify(value, null, 2)}\n`);
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

export function renderError(out: Output, error: AirlockError): void {
  out.stderr(`airlock: error: ${error.message}\n`);
  if (error.hint) out.stderr(`  hint: ${error.hint}\n`);
  out.stderr(`  (${error.code}, exit ${error.exitCode})\n`);
  if (out.json) printJson(out, { ok: false, error: error.toJSON() });
}
