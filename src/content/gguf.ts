/**
 * GGUF structure checks (ggml `docs/gguf.md`, `src/gguf.cpp`), read from the header as it streams past;
 * the tensor data is never read. Little-endian: `GGUF`, u32 version (2 or 3; 0, 1 and byte-swapped
 * versions are refused), u64 tensor count, u64 metadata count; typed key/values; tensor infos (name,
 * dims, ggml type, offset); a data section aligned to `general.alignment` (default 32). Like the
 * reference loader we refuse duplicate keys and tensor names, counts and strings larger than the file,
 * unknown types, element-count overflow, and tensors whose offsets are not contiguous and aligned or
 * whose data lies past the end of the file. Every problem is reported (up to 20).
 *
 * Chat templates (`tokenizer.chat_template*`) are Jinja that some runtimes rendered unsandboxed
 * (CVE-2024-34359): ones that reach for Python internals are reported as notes.
 */
import type { ByteAnswer, ByteParser, ByteRequest } from './byte-machine.js';

export interface GgufScan {
  version: number;
  tensors: number;
  /** Structural problems: the file is not a GGUF a loader should trust. */
  problems: string[];
  /** Findings worth a person's eye (chat templates reaching for internals). */
  notes: string[];
}

/** ggml types: [block size, bytes per block] (gguf-py GGML_QUANT_SIZES). */
const GGML_TYPES: Record<number, [number, number]> = {
  0: [1, 4], 1: [1, 2], 2: [32, 18], 3: [32, 20], 6: [32, 22], 7: [32, 24], 8: [32, 34], 9: [32, 40],
  10: [256, 84], 11: [256, 110], 12: [256, 144], 13: [256, 176], 14: [256, 210], 15: [256, 292],
  16: [256, 66], 17: [256, 74], 18: [256, 98], 19: [256, 50], 20: [32, 18], 21: [256, 110], 22: [256, 82],
  23: [256, 136], 24: [1, 1], 25: [1, 2], 26: [1, 4], 27: [1, 8], 28: [1, 8], 29: [256, 56], 30: [1, 2],
  34: [256, 54], 35: [256, 66], 39: [32, 17], 40: [64, 36], 41: [128, 18],
};
/** Fixed sizes of the scalar value types 0..12 (8 = string, 9 = array: variable). */
const SCALAR_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const MAX_NAME = 64;
const MAX_DIMS = 4;
const MAX_KEY = 64 * 1024;
const MAX_TEMPLATE = 4 * 1024 * 1024;
const MAX_NESTING = 8;
const MAX_PROBLEMS = 20;
const TEMPLATE_RE = /__(class|globals|subclasses|builtins|import|mro|base|bases|init|dict|getattribute|code|func|self)__|\bcycler\b|\bjoiner\b|\blipsum\b|\bnamespace\b\s*\.|\bos\.(system|popen)|\bsubprocess\b|\beval\s*\(|\bexec\s*\(/g;

class Stop extends Error {}

export function chatTemplateFindings(template: string): string[] {
  return [...new Set([...template.matchAll(TEMPLATE_RE)].map((m) => m[0]))];
}

export function* walkGguf(fileSize: number): ByteParser<GgufScan> {
  const scan: GgufScan = { version: 0, tensors: 0, problems: [], notes: [] };
  let position = 0;
  const problem = (p: string): void => {
    if (scan.problems.length < MAX_PROBLEMS) scan.problems.push(p);
  };
  const fatal = (p: string): never => {
    problem(p);
    throw new Stop();
  };
  function* take(n: number, what: string): Generator<ByteRequest, Uint8Array, ByteAnswer> {
    if (position + n > fileSize) fatal(`${what} needs ${n} bytes at offset ${position}, past the end of the ${fileSize}-byte file`);
    const got = yield { t: 'take', n };
    if (!(got instanceof Uint8Array)) return fatal(`the file ends inside ${what} (truncated?)`);
    position += n;
    return got;
  }
  function* skip(n: number, what: string): Generator<ByteRequest, void, ByteAnswer> {
    if (position + n > fileSize) fatal(`${what} of ${n} bytes at offset ${position} runs past the end of the file`);
    if ((yield { t: 'skip', n }) !== true) fatal(`the file ends inside ${what} (truncated?)`);
    position += n;
  }
  const u32 = (b: Uint8Array): number => new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
  const u64 = (b: Uint8Array): bigint => new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);
  function* count(what: string): Generator<ByteRequest, number, ByteAnswer> {
    const n = u64(yield* take(8, what));
    if (n > BigInt(fileSize)) fatal(`${what} is ${n}, more than the file's size`);
    return Number(n);
  }
  function* string(what: string, keep: number): Generator<ByteRequest, string | undefined, ByteAnswer> {
    const n = yield* count(`the length of ${what}`);
    if (n <= keep) return new TextDecoder('utf-8').decode(yield* take(n, what));
    yield* skip(n, what);
    return undefined;
  }
  /** Reads one value of `type`; returns it when it is a short scalar or a kept string. */
  function* value(type: number, key: string, depth: number): Generator<ByteRequest, number | string | undefined, ByteAnswer> {
    const fixed = SCALAR_BYTES[type];
    if (fixed !== undefined) {
      const b = yield* take(fixed, `the value of ${key}`);
      if (type === 4) return u32(b);
      if (type === 7 && b[0]! > 1) problem(`${key}: a bool of value ${b[0]}`);
      return undefined;
    }
    if (type === 8) return yield* string(`the value of ${key}`, key.startsWith('tokenizer.chat_template') ? MAX_TEMPLATE : 0);
    if (type === 9) {
      if (depth >= MAX_NESTING) fatal(`${key}: arrays nested more than ${MAX_NESTING} deep`);
      const elementType = u32(yield* take(4, `the element type of ${key}`));
      if (elementType > 12) fatal(`${key}: array of unknown type ${elementType}`);
      const n = yield* count(`the element count of ${key}`);
      const each = SCALAR_BYTES[elementType];
      if (each !== undefined) {
        yield* skip(n * each, `the array ${key}`);
        return undefined;
      }
      for (let i = 0; i < n; i++) yield* value(elementType, key, depth + 1);
      return undefined;
    }
    return fatal(`${key}: unknown value type ${type}`);
  }

  try {
    const magic = yield* take(4, 'the magic');
    if (new TextDecoder('latin1').decode(magic) !== 'GGUF') fatal('not a GGUF file (no GGUF magic)');
    const version = u32(yield* take(4, 'the version'));
    scan.version = version;
    if ((version & 0xffff) === 0) fatal(`version ${version} looks byte-swapped (a big-endian file?)`);
    if (version === 1) fatal('GGUF version 1 is not supported by current loaders');
    if (version !== 2 && version !== 3) fatal(`unknown GGUF version ${version}`);
    const tensorCount = yield* count('the tensor count');
    const kvCount = yield* count('the metadata count');
    scan.tensors = tensorCount;
    const keys = new Set<string>();
    let alignment = 32;
    for (let i = 0; i < kvCount; i++) {
      const key = (yield* string(`key ${i}`, MAX_KEY)) ?? fatal(`key ${i} is longer than ${MAX_KEY} bytes`);
      if (keys.has(key)) problem(`duplicate key ${JSON.stringify(key)}`);
      keys.add(key);
      const type = u32(yield* take(4, `the type of ${key}`));
      if (type > 12) fatal(`${key}: unknown value type ${type}`);
      const v = yield* value(type, key, 0);
      if (key === 'general.alignment') {
        if (type !== 4 || typeof v !== 'number' || v === 0 || (v & (v - 1)) !== 0) problem(`general.alignment must be a power-of-two u32, got ${String(v)} (type ${type})`);
        else alignment = v;
      }
      if (key.startsWith('tokenizer.chat_template')) {
        if (v === undefined && type === 8) problem(`${key} is longer than ${MAX_TEMPLATE} bytes`);
        if (typeof v === 'string') {
          const hits = chatTemplateFindings(v);
          if (hits.length > 0) scan.notes.push(`${key} reaches for Python internals (${hits.join(', ')}): render it only in a sandboxed Jinja environment`);
        }
      }
    }
    const names = new Set<string>();
    const infos: Array<{ name: string; bytes: bigint; offset: bigint }> = [];
    for (let i = 0; i < tensorCount; i++) {
      const name = (yield* string(`tensor name ${i}`, MAX_NAME)) ?? fatal(`tensor ${i}: name longer than ${MAX_NAME} bytes`);
      if (names.has(name)) problem(`duplicate tensor name ${JSON.stringify(name)}`);
      names.add(name);
      const dims = u32(yield* take(4, `the dims of ${name}`));
      if (dims > MAX_DIMS) fatal(`${name}: ${dims} dimensions (at most ${MAX_DIMS})`);
      let elements = 1n;
      const shape: bigint[] = [];
      for (let d = 0; d < dims; d++) {
        const n = u64(yield* take(8, `a dim of ${name}`));
        shape.push(n);
        elements *= n;
      }
      const type = u32(yield* take(4, `the type of ${name}`));
      const offset = u64(yield* take(8, `the offset of ${name}`));
      const t = GGML_TYPES[type];
      if (elements > BigInt(Number.MAX_SAFE_INTEGER)) {
        problem(`${name}: ${elements} elements overflow`);
        continue;
      }
      if (t === undefined) {
        problem(`${name}: unknown ggml type ${type}`);
        continue;
      }
      const [block, size] = t;
      if ((shape[0] ?? 1n) % BigInt(block) !== 0n) problem(`${name}: first dimension ${shape[0]} is not a multiple of the block size ${block}`);
      infos.push({ name, bytes: (elements / BigInt(block)) * BigInt(size), offset });
    }
    const a = BigInt(alignment);
    const dataStart = ((BigInt(position) + a - 1n) / a) * a;
    let expected = 0n;
    for (const info of infos) {
      if (info.offset % a !== 0n) problem(`${info.name}: offset ${info.offset} is not a multiple of the alignment ${alignment}`);
      if (info.offset !== expected) problem(`${info.name}: offset ${info.offset}, expected ${expected} (tensors must be contiguous, in order, without overlap)`);
      expected = info.offset + ((info.bytes + a - 1n) / a) * a;
      if (dataStart + info.offset + info.bytes > BigInt(fileSize)) problem(`${info.name}: its ${info.bytes} bytes at offset ${info.offset} lie past the end of the file (truncated?)`);
    }
    if (infos.length > 0 && dataStart > BigInt(fileSize)) problem('the data section starts past the end of the file');
  } catch (error) {
    if (!(error instanceof Stop)) throw error;
  }
  return scan;
}
