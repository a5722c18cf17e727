/**
 * `.npy`: magic `\x93NUMPY`, version, a header length (u16 for 1.x, u32 for 2.x/3.x) and a Python
 * dict literal (`descr`, `fortran_order`, `shape`). Plain arrays carry no code. An array with an
 * object dtype (`|O`, or a structured dtype with an `O` field) is stored as a pickle after the header —
 * what `np.load(allow_pickle=True)` unpickles — and is walked like any other pickle.
 */
import type { ByteAnswer, ByteParser, ByteRequest } from './byte-machine.js';
import { walkPickles, type PickleScan } from './pickle.js';

const MAX_HEADER = 1024 * 1024;

export interface NpyScan {
  /** The pickle after the header, for object arrays. */
  pickle?: PickleScan;
  /** Why the header cannot be read. */
  problem?: string;
  objectDtype?: boolean;
}

function* take(n: number): Generator<ByteRequest, Uint8Array | null, ByteAnswer> {
  const got = yield { t: 'take', n };
  return got instanceof Uint8Array ? got : null;
}

/** Whether a header's `descr` holds an object type anywhere (fail closed: any quoted `O` type code). */
export function npyHasObjects(header: string): boolean {
  return /['"][|<>=]?O\d*['"]/.test(header);
}

export function* walkNpy(_fileSize: number): ByteParser<NpyScan> {
  const head = yield* take(8);
  if (head === null || !Buffer.from(head.subarray(0, 6)).equals(Buffer.from('\x93NUMPY', 'latin1'))) return { problem: 'not an .npy header' };
  const major = head[6]!;
  let length: number;
  if (major === 1) {
    const b = yield* take(2);
    if (b === null) return { problem: 'truncated .npy header' };
    length = b[0]! | (b[1]! << 8);
  } else if (major === 2 || major === 3) {
    const b = yield* take(4);
    if (b === null) return { problem: 'truncated .npy header' };
    length = (b[0]! | (b[1]! << 8) | (b[2]! << 16)) + b[3]! * 0x1000000;
  } else {
    return { problem: `unknown .npy format version ${major}` };
  }
  if (length > MAX_HEADER) return { problem: `an .npy header of ${length} bytes` };
  const text = yield* take(length);
  if (text === null) return { problem: 'truncated .npy header' };
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(text);
  if (!/['"]descr['"]\s*:/.test(header)) return { problem: '.npy header without descr' };
  if (!npyHasObjects(header)) return { objectDtype: false };
  return { objectDtype: true, pickle: yield* walkPickles() };
}
