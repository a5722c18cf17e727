/**
 * Turns an external AbortSignal and (optionally) SIGINT/SIGTERM into one internal signal whose reason
 * is always an E_INTERRUPTED AirlockError. While an import runs, Ctrl-C therefore does not kill the
 * process half-way: it aborts the read or rolls back the commit, removes the staging directory, and
 * the import rejects with E_INTERRUPTED (which the CLI maps to exit code 130).
 */
import { AirlockError } from '../errors.js';

export interface Interrupts {
  readonly signal: AbortSignal;
  dispose(): void;
}

/** `hint`: what the user should know after an interruption (default: import's — the cache is unchanged). */
export function watchInterrupts(external: AbortSignal | undefined, processSignals: boolean, hint = 'nothing was changed in the hub cache; run the command again'): Interrupts {
  const controller = new AbortController();
  const abort = (why: string, cause?: unknown): void => {
    if (controller.signal.aborted) return;
    controller.abort(
      new AirlockError('E_INTERRUPTED', `interrupted (${why})`, {
        hint,
        ...(cause === undefined ? {} : { cause }),
      }),
    );
  };
  const onExternal = (): void => abort('aborted by the caller', external?.reason);
  if (external?.aborted) onExternal();
  else external?.addEventListener('abort', onExternal, { once: true });
  const onSignal = (name: NodeJS.Signals): void => abort(name);
  if (processSignals) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  return {
    signal: controller.signal,
    dispose(): void {
      external?.removeEventListener('abort', onExternal);
      if (processSignals) {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    },
  };
}
