/** Assertions about AirlockErrors shared by the client tests. */
import * as assert from 'node:assert/strict';
import { isAirlockError, type AirlockError, type ErrorCode } from '../../src/errors.ts';

/** Awaits `promise`, asserts it rejected with an AirlockError of `code`, runs `check` on it, returns it. */
export async function rejectsWith(promise: Promise<unknown>, code: ErrorCode, check?: (e: AirlockError) => void): Promise<AirlockError> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  assert.ok(isAirlockError(caught, code), `expected ${code}, got ${caught instanceof Error ? `${(caught as AirlockError).code ?? ''} ${caught.message}` : String(caught)}`);
  check?.(caught);
  return caught;
}
