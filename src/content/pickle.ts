/**
 * A static pickle walker: reads every opcode of one or more pickle streams WITHOUT evaluating anything,
 * and returns the globals a load would import (GLOBAL, INST, STACK_GLOBAL, EXT*). It models Python's own
 * `_Unpickler` closely enough to resolve STACK_GLOBAL operands: a stack of marks (Python's metastack),
 * string values, and the memo (PUT/BINPUT/LONG_BINPUT/MEMOIZE store, GET/BINGET/LONG_BINGET fetch).
 *
 * Trust decisions, made here:
 * - An operand we cannot resolve to a string (too long to keep, built by a call, an extension code)
 *   is reported as an `<unresolved …>` global, which no allow-list holds: it counts as dangerous.
 * - The walker is at least as permissive as Python where it matters: wherever Python would go on
 *   reading, so do we. It stops with `invalid` only where Python's unpickler itself would raise
 *   (unknown opcode, stack underflow, missing memo key, end of data). So when it fails *before any
 *   global*, a real load would also fail before importing anything; `limit` (our caps) is never that.
 * - Bounded: opcodes, memo entries, stack items, mark depth, line lengths, pickles per file. Long
 *   string and bytes arguments are skipped by length, never buffered.
 */
import type { ByteAnswer, ByteParser, ByteRequest } from './byte-machine.js';

export interface PickleLimits {
  /** Opcodes per file (all its pickles). */
  maxOpcodes: number;
  maxMemo: number;
  /** Stack items, all marks' levels together. */
  maxStack: number;
  /** MARK nesting. */
  maxMarks: number;
  /** Protocol-0 text arguments (one line). */
  maxLine: number;
  /** Pickles back to back in one stream. */
  maxPickles: number;
}

export const DEFAULT_PICKLE_LIMITS: PickleLimits = {
  maxOpcodes: 64 * 1024 * 1024,
  maxMemo: 1024 * 1024,
  maxStack: 1024 * 1024,
  maxMarks: 64 * 1024,
  maxLine: 1024 * 1024,
  maxPickles: 4096,
};

/** Strings longer than this are not kept (a module or attribute name never is). */
const KEEP_STRING = 1024;

export type PickleStatus =
  /** Every pickle parsed to its STOP and the input ended right after one. */
  | 'ok'
  /** Python's unpickler would raise here too (see `problem`). */
  | 'invalid'
  /** The input ended inside a pickle. */
  | 'truncated'
  /** One of our caps was reached: the rest was not read. */
  | 'limit';

export interface PickleScan {
  status: PickleStatus;
  problem?: string;
  /** `module.name` of every global a load would import, in first-seen order. */
  globals: string[];
  /** Pickles that reached their STOP. */
  pickles: number;
  opcodes: number;
  /** Highest PROTO seen (0 when none). */
  protocol: number;
  /**
   * Torch's persistent ids `('storage', torch.XStorage, key, location, numel)`: bytes per storage key.
   * A hint for skipping the zip members that hold them (checked against the data descriptor there).
   */
  storages: Map<string, number>;
  /**
   * Whether an opcode was read that would make Python import something: GLOBAL / INST / STACK_GLOBAL
   * naming dotted identifiers, or a STACK_GLOBAL whose operands we cannot see. (Names that are not
   * identifiers, literal non-str operands and EXT codes of the empty default registry make Python
   * raise before anything is imported: they are recorded as globals but do not count here.)
   */
  sawImport: boolean;
}

export interface WalkOptions {
  limits?: Partial<PickleLimits>;
  /** Stop after this many pickles even when bytes follow (the legacy torch format: 5, then raw storages). */
  pickles?: number;
}

/** A literal that is not a str (None, numbers, bytes, containers built from literals). */
const OTHER = Symbol('value');
/** What a call or construction returned: at run time it could be anything, a str included. */
const DYNAMIC = Symbol('dynamic');
/** A str too long to keep: a STACK_GLOBAL naming it cannot be resolved. */
const LONG_STR = Symbol('long-str');
/** Small literals kept only to read torch's persistent ids: ints, flat 5-tuples, and globals. */
type Kept = { int: number } | { tuple: Item[] } | { global: string };
type Item = string | typeof OTHER | typeof DYNAMIC | typeof LONG_STR | Kept;

/** Element sizes of torch's typed storage classes (bytes). */
const STORAGE_BYTES: Record<string, number> = {
  'torch.FloatStorage': 4, 'torch.DoubleStorage': 8, 'torch.HalfStorage': 2, 'torch.BFloat16Storage': 2,
  'torch.LongStorage': 8, 'torch.IntStorage': 4, 'torch.ShortStorage': 2, 'torch.CharStorage': 1,
  'torch.ByteStorage': 1, 'torch.BoolStorage': 1, 'torch.ComplexFloatStorage': 8, 'torch.ComplexDoubleStorage': 16,
  'torch.QInt8Storage': 1, 'torch.QUInt8Storage': 1, 'torch.QInt32Storage': 4, 'torch.QUInt4x2Storage': 1,
  'torch.QUInt2x4Storage': 1, 'torch.UntypedStorage': 1,
};

function storageOf(pid: Item): [string, number] | undefined {
  if (typeof pid !== 'object' || !('tuple' in pid) || pid.tuple.length !== 5) return undefined;
  const [kind, cls, key, , numel] = pid.tuple;
  if (kind !== 'storage' || typeof key !== 'string' || typeof cls !== 'object' || !('global' in cls) || typeof numel !== 'object' || !('int' in numel)) return undefined;
  const each = STORAGE_BYTES[cls.global];
  return each === undefined ? undefined : [key, numel.int * each];
}

/** A str for STACK_GLOBAL; anything else Python refuses (`requires str`) unless it could be a str at run time. */
const isLiteral = (item: Item): boolean => item === OTHER || (typeof item === 'object' && !('global' in item));

class PickleFailure extends Error {
  constructor(
    readonly status: Exclude<PickleStatus, 'ok'>,
    message: string,
  ) {
    super(message);
  }
}

const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Python 2 module names a protocol 0–2 load maps to Python 3's (`_compat_pickle`), for the ones that matter. */
const COMPAT_MODULES: Record<string, string> = {
  __builtin__: 'builtins',
  copy_reg: 'copyreg',
  cPickle: 'pickle',
  commands: 'subprocess',
  exceptions: 'builtins',
  UserDict: 'collections',
};

export function globalName(module: string, name: string): string {
  return `${COMPAT_MODULES[module] ?? module}.${name}`;
}

/**
 * The walker as a byte parser: feed it through a ByteMachine. Walks pickles back to back until the
 * input ends (or `options.pickles` of them), then returns what it found. Never throws.
 */
export function* walkPickles(options: WalkOptions = {}): ByteParser<PickleScan> {
  const limits = { ...DEFAULT_PICKLE_LIMITS, ...options.limits };
  const maxPickles = Math.min(options.pickles ?? limits.maxPickles, limits.maxPickles);
  const globals = new Set<string>();
  const scan: PickleScan = { status: 'ok', globals: [], pickles: 0, opcodes: 0, protocol: 0, sawImport: false, storages: new Map() };
  const addGlobal = (g: string, imports: boolean): void => {
    if (imports) scan.sawImport = true;
    if (!globals.has(g) && globals.size < 10_000) globals.add(g);
  };
  try {
    for (;;) {
      yield* walkOne(scan, limits, addGlobal);
      scan.pickles += 1;
      if (scan.pickles >= maxPickles) break;
      if (!((yield { t: 'more' }) as boolean)) break;
    }
  } catch (error) {
    if (!(error instanceof PickleFailure)) throw error;
    scan.status = error.status;
    scan.problem = error.message;
  }
  scan.globals = [...globals];
  return scan;
}

function* walkOne(scan: PickleScan, limits: PickleLimits, addGlobal: (g: string, imports: boolean) => void): Generator<ByteRequest, void, ByteAnswer> {
  let stack: Item[] = [];
  const meta: Item[][] = [];
  let depthItems = 0; // items on the metastack's saved stacks
  const memo = new Map<number, Item>();
  const at = (): string => `opcode ${scan.opcodes}`;
  const invalid = (what: string): never => {
    throw new PickleFailure('invalid', `${what} (${at()})`);
  };

  function* take(n: number): Generator<ByteRequest, Uint8Array, ByteAnswer> {
    const got = yield { t: 'take', n };
    if (!(got instanceof Uint8Array)) throw new PickleFailure('truncated', `the pickle ends inside an argument (${at()})`);
    return got;
  }
  function* line(): Generator<ByteRequest, Uint8Array, ByteAnswer> {
    const got = yield { t: 'line', max: limits.maxLine };
    if (got === 'long') throw new PickleFailure('limit', `a text argument is longer than ${limits.maxLine} bytes (${at()})`);
    if (!(got instanceof Uint8Array)) throw new PickleFailure('truncated', `the pickle ends inside a text argument (${at()})`);
    return got;
  }
  /** A length-prefixed argument: kept as a string when short, skipped by length when long. */
  function* data(n: number, kind: 'str' | 'bytes' | 'latin1'): Generator<ByteRequest, Item, ByteAnswer> {
    if (!Number.isSafeInteger(n) || n < 0) invalid(`a length of ${n} bytes`);
    if (n > KEEP_STRING || kind === 'bytes') {
      const ok = yield { t: 'skip', n };
      if (ok !== true) throw new PickleFailure('truncated', `the pickle ends inside a ${n}-byte argument (${at()})`);
      return kind === 'bytes' ? OTHER : LONG_STR;
    }
    const bytes = yield* take(n);
    if (kind === 'latin1') return latin1.decode(bytes);
    try {
      return utf8.decode(bytes);
    } catch {
      // Python raises on a str that is not UTF-8 (BINUNICODE uses 'surrogatepass', close enough to refuse)
      return invalid('a str argument is not UTF-8');
    }
  }
  const push = (item: Item): void => {
    if (stack.length + depthItems >= limits.maxStack) throw new PickleFailure('limit', `more than ${limits.maxStack} stack items (${at()})`);
    stack.push(item);
  };
  const pop = (): Item => {
    if (stack.length === 0) invalid('stack underflow');
    return stack.pop()!;
  };
  const top = (): Item => {
    if (stack.length === 0) invalid('stack underflow');
    return stack[stack.length - 1]!;
  };
  const popMark = (): Item[] => {
    const items = stack;
    const below = meta.pop();
    if (below === undefined) return invalid('no MARK to pop to');
    depthItems -= below.length;
    stack = below;
    return items;
  };
  const u = (b: Uint8Array, n: number): number => {
    let v = 0;
    for (let i = n - 1; i >= 0; i--) v = v * 256 + b[i]!;
    return v;
  };
  const memoPut = (index: number): void => {
    if (!Number.isSafeInteger(index) || index < 0) invalid('negative memo index');
    const value = top();
    if (!memo.has(index) && memo.size >= limits.maxMemo) throw new PickleFailure('limit', `more than ${limits.maxMemo} memo entries (${at()})`);
    memo.set(index, value);
  };
  const memoGet = (index: number): void => {
    const value = memo.get(index);
    if (value === undefined) invalid(`memo entry ${index} was never stored`);
    push(value!);
  };
  const lineInt = (b: Uint8Array): number => {
    const text = latin1.decode(b).trim();
    if (!/^[+-]?\d+$/.test(text)) return invalid(`${JSON.stringify(text.slice(0, 40))} is not a memo index`);
    return Number(text);
  };
  const asciiLine = (b: Uint8Array): string => latin1.decode(b);
  /** Protocol-0 quoted STRING / raw-unicode-escape UNICODE: kept only when no escape could change it. */
  const textItem = (s: string): Item => (s.length > KEEP_STRING ? LONG_STR : s.includes('\\') ? OTHER : s);

  for (;;) {
    if (++scan.opcodes > limits.maxOpcodes) throw new PickleFailure('limit', `more than ${limits.maxOpcodes} opcodes`);
    const op = (yield* take(1))[0]!;
    switch (op) {
      case 0x80: { // PROTO
        const p = (yield* take(1))[0]!;
        if (p > 5) invalid(`unsupported pickle protocol ${p}`);
        scan.protocol = Math.max(scan.protocol, p);
        break;
      }
      case 0x95: // FRAME: the opcodes inside are read like any others
        yield* take(8);
        break;
      case 0x2e: // STOP
        pop();
        return;
      // --- values
      case 0x49: // INT
      case 0x4c: // LONG
      case 0x46: // FLOAT
        yield* line();
        push(OTHER);
        break;
      case 0x4a: { // BININT
        const b = yield* take(4);
        push({ int: new DataView(b.buffer, b.byteOffset, 4).getInt32(0, true) });
        break;
      }
      case 0x4b: // BININT1
        push({ int: (yield* take(1))[0]! });
        break;
      case 0x4d: // BININT2
        push({ int: u(yield* take(2), 2) });
        break;
      case 0x47: // BINFLOAT
        yield* take(8);
        push(OTHER);
        break;
      case 0x8a: { // LONG1
        const n = (yield* take(1))[0]!;
        const b = yield* take(n);
        // small non-negative longs (storage sizes over 2 GiB) are kept; others are just values
        push(n > 0 && n <= 6 && (b[n - 1]! & 0x80) === 0 ? { int: u(b, n) } : OTHER);
        break;
      }
      case 0x8b: { // LONG4
        const b = yield* take(4);
        const n = new DataView(b.buffer, b.byteOffset, 4).getInt32(0, true);
        if (n < 0) invalid('LONG pickle has negative byte count');
        push(yield* data(n, 'bytes'));
        break;
      }
      case 0x53: { // STRING
        const s = asciiLine(yield* line());
        const q = s[0];
        if (s.length < 2 || (q !== '"' && q !== "'") || s[s.length - 1] !== q) invalid('the STRING opcode argument must be quoted');
        push(textItem(s.slice(1, -1)));
        break;
      }
      case 0x54: { // BINSTRING
        const b = yield* take(4);
        const n = new DataView(b.buffer, b.byteOffset, 4).getInt32(0, true);
        if (n < 0) invalid('BINSTRING pickle has negative byte count');
        push(yield* data(n, 'latin1'));
        break;
      }
      case 0x55: // SHORT_BINSTRING
        push(yield* data((yield* take(1))[0]!, 'latin1'));
        break;
      case 0x42: // BINBYTES
        push(yield* data(u(yield* take(4), 4), 'bytes'));
        break;
      case 0x43: // SHORT_BINBYTES
        push(yield* data((yield* take(1))[0]!, 'bytes'));
        break;
      case 0x8e: // BINBYTES8
      case 0x96: // BYTEARRAY8
        push(yield* data(u(yield* take(8), 8), 'bytes'));
        break;
      case 0x56: { // UNICODE
        const b = yield* line();
        push(textItem(latin1.decode(b)));
        break;
      }
      case 0x8c: // SHORT_BINUNICODE
        push(yield* data((yield* take(1))[0]!, 'str'));
        break;
      case 0x58: // BINUNICODE
        push(yield* data(u(yield* take(4), 4), 'str'));
        break;
      case 0x8d: // BINUNICODE8
        push(yield* data(u(yield* take(8), 8), 'str'));
        break;
      case 0x4e: // NONE
      case 0x88: // NEWTRUE
      case 0x89: // NEWFALSE
      case 0x5d: // EMPTY_LIST
      case 0x29: // EMPTY_TUPLE
      case 0x7d: // EMPTY_DICT
      case 0x8f: // EMPTY_SET
      case 0x97: // NEXT_BUFFER
        push(OTHER);
        break;
      case 0x98: // READONLY_BUFFER
        top();
        break;
      // --- containers
      case 0x61: // APPEND
        pop();
        top();
        break;
      case 0x65: // APPENDS
      case 0x75: // SETITEMS
      case 0x90: // ADDITEMS
        popMark();
        top();
        break;
      case 0x74: { // TUPLE: only flat 5-tuples (torch's persistent ids) are kept, so what is kept stays small
        const items = popMark();
        push(items.length === 5 && items.every((i) => typeof i !== 'object' || !('tuple' in i)) ? { tuple: items } : OTHER);
        break;
      }
      case 0x6c: // LIST
      case 0x64: // DICT
      case 0x91: // FROZENSET
        popMark();
        push(OTHER);
        break;
      case 0x85: // TUPLE1
        pop();
        push(OTHER);
        break;
      case 0x86: // TUPLE2
        pop();
        pop();
        push(OTHER);
        break;
      case 0x87: // TUPLE3
        pop();
        pop();
        pop();
        push(OTHER);
        break;
      case 0x73: // SETITEM
        pop();
        pop();
        top();
        break;
      // --- stack
      case 0x30: // POP
        if (stack.length > 0) stack.pop();
        else popMark();
        break;
      case 0x32: // DUP
        push(top());
        break;
      case 0x28: // MARK
        if (meta.length >= limits.maxMarks) throw new PickleFailure('limit', `MARKs nested more than ${limits.maxMarks} deep (${at()})`);
        meta.push(stack);
        depthItems += stack.length;
        stack = [];
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      // --- memo
      case 0x67: // GET
        memoGet(lineInt(yield* line()));
        break;
      case 0x68: // BINGET
        memoGet((yield* take(1))[0]!);
        break;
      case 0x6a: // LONG_BINGET
        memoGet(u(yield* take(4), 4));
        break;
      case 0x70: // PUT
        memoPut(lineInt(yield* line()));
        break;
      case 0x71: // BINPUT
        memoPut((yield* take(1))[0]!);
        break;
      case 0x72: // LONG_BINPUT
        memoPut(u(yield* take(4), 4));
        break;
      case 0x94: // MEMOIZE: Python stores at len(memo), which a sparse memo makes collide
        memoPut(memo.size);
        break;
      // --- what imports or calls
      case 0x63: { // GLOBAL
        const module = yield* line();
        const name = yield* line();
        const g = globalName(decodeName(module), decodeName(name));
        addGlobal(g, importable(module, name));
        push({ global: g });
        break;
      }
      case 0x69: { // INST: Python imports the class before it looks for the MARK
        const module = yield* line();
        const name = yield* line();
        addGlobal(globalName(decodeName(module), decodeName(name)), importable(module, name));
        popMark();
        push(DYNAMIC);
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof name === 'string' && typeof module === 'string') {
          const g = globalName(module, name);
          addGlobal(g, IDENT.test(module) && IDENT.test(name));
          push({ global: g });
          break;
        }
        if (isLiteral(name) || isLiteral(module)) invalid('STACK_GLOBAL requires str');
        addGlobal(`<unresolved STACK_GLOBAL at opcode ${scan.opcodes}>`, true);
        push(DYNAMIC);
        break;
      }
      case 0x82: // EXT1
      case 0x83: // EXT2
      case 0x84: { // EXT4: copyreg's extension registry names a global we cannot see
        const n = op === 0x82 ? 1 : op === 0x83 ? 2 : 4;
        const code = u(yield* take(n), n);
        addGlobal(`<extension code ${code}>`, false);
        push(DYNAMIC);
        break;
      }
      case 0x52: // REDUCE
        pop();
        top();
        stack[stack.length - 1] = DYNAMIC;
        break;
      case 0x62: // BUILD
        pop();
        top();
        break;
      case 0x6f: { // OBJ
        const items = popMark();
        if (items.length === 0) invalid('OBJ without a class');
        push(DYNAMIC);
        break;
      }
      case 0x81: // NEWOBJ
        pop();
        pop();
        push(DYNAMIC);
        break;
      case 0x92: // NEWOBJ_EX
        pop();
        pop();
        pop();
        push(DYNAMIC);
        break;
      case 0x50: // PERSID
        yield* line();
        push(DYNAMIC);
        break;
      case 0x51: { // BINPERSID
        const storage = storageOf(pop());
        if (storage !== undefined && scan.storages.size < limits.maxMemo) scan.storages.set(storage[0], storage[1]);
        push(DYNAMIC);
        break;
      }
      default:
        invalid(`unknown opcode 0x${op.toString(16).padStart(2, '0')}`);
    }
  }
}

/** A module or attribute path Python could import: dotted identifiers (ASCII; enough to tell names from noise). */
const IDENT = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/;

function importable(module: Uint8Array, name: Uint8Array): boolean {
  // Python 3 decodes GLOBAL operands as UTF-8 and fails on anything else; non-identifiers cannot be imported modules
  return IDENT.test(latin1.decode(module)) && IDENT.test(latin1.decode(name).replace(/\r$/, ''));
}

/** GLOBAL/INST operands: Python decodes them (utf-8 / ascii); we keep them printable for reports. */
function decodeName(bytes: Uint8Array): string {
  const text = latin1.decode(bytes.subarray(0, Math.min(bytes.byteLength, KEEP_STRING)));
  // control characters would let a name hide in a terminal: escape them
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`) + (bytes.byteLength > KEEP_STRING ? '…' : '');
}
