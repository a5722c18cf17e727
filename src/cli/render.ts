/** The only place that writes to the terminal. Library code returns values or throws AirlockErrors. */
import type { AirlockError } from '../errors.js';
import { ProgressModel, type ProgressSnapshot } from '../export/progress.js';
import type { ReadProgress } from '../import/progress-sink.js';

export interface Output {
  json: boolean;
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

let guarded = false;

/**
 * `airlock … | head -1`: the reader may go away at any time. A write to a closed pipe fails with EPIPE
 * (node ignores SIGPIPE), reported as an 'error' event that would otherwise crash the process with a
 * stack trace — possibly after an import committed. From then on output to that stream is dropped: the
 * command finishes its work, and its exit status says how the work went, not whether anyone read it.
 */
export function guardStandardStreams(): void {
  if (guarded) return;
  guarded = true;
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', () => {
      // EPIPE, or any other failure of the terminal/pipe itself: nothing left to tell it
      closed.add(stream);
    });
  }
}

const closed = new Set<NodeJS.WriteStream>();

function writeTo(stream: NodeJS.WriteStream, text: string): void {
  if (closed.has(stream) || stream.destroyed) return;
  stream.write(text);
}

export function processOutput(json: boolean): Output {
  return {
    json,
    stdout: (text) => writeTo(process.stdout, text),
    stderr: (text) => writeTo(process.stderr, text),
  };
}

/** One machine-readable result on stdout (`--json`). */
export function printJson(out: Output, value: unknown): void {
  jsonPrinted = true;
  out.stdout(`${JSON.stringify(value, null, 2)}\n`);
}

let jsonPrinted = false;
let currentCommand: string | null = null;

/** The command being run ("verify", "keys generate"), named in every JSON result and error object. */
export function setCommand(command: string | null): void {
  currentCommand = command;
}

/** A command's success under `--json`: `{ ok: true, command, …result }` (schemas/cli-result.schema.json). */
export function printResult(out: Output, result: Record<string, unknown>): void {
  printJson(out, { ok: true, command: currentCommand, ...result });
}

/**
 * A command's refusal that has a result to show (cache verify's problems): `{ ok: false, command,
 * …result, error }`. The error is then thrown as usual; renderError does not print a second object.
 */
export function printFailure(out: Output, result: Record<string, unknown>, error: { toJSON(): unknown }): void {
  printJson(out, { ok: false, command: currentCommand, ...result, error: error.toJSON() });
}

import { formatBytes } from '../format.js';

export { formatBytes };

export function renderError(out: Output, error: AirlockError): void {
  out.stderr(`airlock: error: ${error.message}\n`);
  if (error.hint) out.stderr(`  hint: ${error.hint}\n`);
  out.stderr(`  (${error.code}, exit ${error.exitCode})\n`);
  if (out.json && !jsonPrinted) printJson(out, { ok: false, command: currentCommand, error: error.toJSON() });
}

// ---------------------------------------------------------------------------------------------------------
// Export progress (the numbers come from src/export/progress.ts)

/** What the progress display shows: the export's own snapshot of it. */
export type ProgressView = ProgressSnapshot;

export function formatDuration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function percent(done: number, total: number): string {
  return total === 0 ? '100%' : `${Math.min(100, Math.floor((done * 100) / total))}%`;
}

/** One line: "total 1.2 GiB / 5.0 GiB (24%)  3/9 files  35.0 MiB/s  ETA 1m50s". */
export function progressTotalLine(view: ProgressView): string {
  return `total ${formatBytes(view.doneBytes)} / ${formatBytes(view.totalBytes)} (${percent(view.doneBytes, view.totalBytes)})  ${view.filesDone}/${view.files} files  ${formatBytes(Math.round(view.rate))}/s  ETA ${formatDuration(view.etaSeconds)}`;
}

function bar(done: number, total: number, width: number): string {
  const filled = total === 0 ? width : Math.min(width, Math.floor((done * width) / total));
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
}

function fit(text: string, width: number): string {
  if (text.length <= width) return text;
  return `…${text.slice(text.length - width + 1)}`;
}

/** The TTY block: one line per active file plus the total, each at most `columns` wide. */
export function progressLines(view: ProgressView, columns: number): string[] {
  const lines = view.active.map((f) => {
    const tail = ` ${bar(f.done, f.size, 20)} ${percent(f.done, f.size).padStart(4)} ${formatBytes(f.done)}/${formatBytes(f.size)}`;
    return `${fit(f.path, Math.max(10, columns - tail.length - 3))}${tail}`;
  });
  lines.push(progressTotalLine(view));
  return lines.map((l) => (l.length > columns - 1 ? l.slice(0, columns - 1) : l));
}

/**
 * Redraws a block of lines in place on a terminal (cursor up, clear line). `log` prints ordinary lines
 * above the block without tearing it.
 */
export class LiveBlock {
  #lines = 0;
  constructor(private readonly write: (text: string) => void) {}

  #clear(): string {
    if (this.#lines === 0) return '';
    const up = `\x1b[${this.#lines}A`;
    this.#lines = 0;
    return `\r${up}\x1b[0J`;
  }

  draw(lines: readonly string[]): void {
    const text = this.#clear() + lines.map((l) => `${l}\n`).join('');
    this.#lines = lines.length;
    this.write(text);
  }

  log(text: string, lines: readonly string[]): void {
    const again = lines.map((l) => `${l}\n`).join('');
    const cleared = this.#clear();
    this.#lines = lines.length;
    this.write(cleared + text + again);
  }

  done(): void {
    this.write(this.#clear());
  }
}

// ---------------------------------------------------------------------------------------------------------
// verify / import progress: the same model and view as export's, fed by the bundle read

/** A ReadProgress feeding the model `current()` names (none yet: ignored); `planned` is the caller's. */
function feeding(current: () => ProgressModel | undefined, planned: ReadProgress['planned']): ReadProgress {
  return {
    planned,
    start: (path, size) => current()?.start(path, size),
    bytes: (delta, path) => current()?.bytes(delta, path),
    finish: (path) => current()?.finish(path),
  };
}

/**
 * A live progress block on a terminal (bytes, rate, ETA, the file being read), redrawn 4×/s on stderr.
 * Undefined — no progress at all — when stderr is not a terminal (piped, a log file), under --json and
 * under --quiet: a script gets the result and nothing else.
 */
export function terminalReadProgress(out: Output, enabled: boolean): { progress: ReadProgress; stop: () => void } | undefined {
  if (!enabled || out.json || process.stderr.isTTY !== true) return undefined;
  const model = new ProgressModel();
  const block = new LiveBlock(out.stderr);
  const draw = (): void => block.draw(progressLines(model.snapshot(), process.stderr.columns || 80));
  const timer = setInterval(draw, 250);
  timer.unref();
  return {
    progress: feeding(
      () => model,
      (bytes, files) => {
        model.plan(bytes, files);
        draw();
      },
    ),
    stop: () => {
      clearInterval(timer);
      block.done();
    },
  };
}

/**
 * publish on a terminal: the verification and the upload run side by side, so one live block shows
 * both — a line for the verification (until it is done) above the upload's files and total. Undefined
 * when there is no terminal, under --json and --quiet (as `terminalReadProgress`).
 */
export function terminalPublishProgress(out: Output, enabled: boolean): { verify: ReadProgress; upload: ReadProgress; stop: () => void } | undefined {
  if (!enabled || out.json || process.stderr.isTTY !== true) return undefined;
  const verifying = new ProgressModel();
  let uploading: ProgressModel | undefined;
  const block = new LiveBlock(out.stderr);
  const draw = (): void => {
    const columns = process.stderr.columns || 80;
    const v = verifying.snapshot();
    const lines = v.doneBytes < v.totalBytes || v.totalBytes === 0 ? [`verifying ${formatBytes(v.doneBytes)} / ${formatBytes(v.totalBytes)} (${percent(v.doneBytes, v.totalBytes)})  ${v.filesDone}/${v.files} files  ${formatBytes(Math.round(v.rate))}/s`] : [`verified ${formatBytes(v.totalBytes)}, ${v.files} files`];
    if (uploading !== undefined) lines.push(...progressLines(uploading.snapshot(), columns));
    block.draw(lines.map((l) => (l.length > columns - 1 ? l.slice(0, columns - 1) : l)));
  };
  const timer = setInterval(draw, 250);
  timer.unref();
  return {
    verify: feeding(
      () => verifying,
      (bytes, files) => {
        verifying.plan(bytes, files);
        draw();
      },
    ),
    // planned once per repo of the bundle: each repo its own totals
    upload: feeding(
      () => uploading,
      (bytes, files) => {
        uploading = new ProgressModel();
        uploading.plan(bytes, files);
        draw();
      },
    ),
    stop: () => {
      clearInterval(timer);
      block.done();
    },
  };
}
