/**
 * Weight sanity checks (pure): a safetensors file is `u64 LE header length N` + `N` bytes of UTF-8 JSON
 * + the data region. From a streamed prefix and the file's size we check that the header parses, that
 * every tensor's byte length matches its dtype and shape, and that the tensors' `data_offsets` cover the
 * data region exactly and contiguously (no gap, no overlap, nothing missing at the end — a truncated
 * shard fails here). `checkShardIndex` checks that every shard a `model.safetensors.index.json` names is
 * in the repo.
 *
 * Only the prefix up to `8 + N` bytes is ever needed; `N` is capped (default 100 MiB, the safetensors
 * library's own limit) so a hostile length cannot make us buffer a whole file.
 */
import { unsafeRelativePathReason } from '../fs/safe-path.js';

export const SAFETENSORS_MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** Bits per element of every dtype the safetensors format defines. */
export const SAFETENSORS_DTYPE_BITS: Readonly<Record<string, number>> = {
  BOOL: 8, U8: 8, I8: 8, F8_E5M2: 8, F8_E4M3: 8, F8_E8M0: 8,
  I16: 16, U16: 16, F16: 16, BF16: 16,
  I32: 32, U32: 32, F32: 32,
  I64: 64, U64: 64, F64: 64, C64: 64,
  F4: 4, F6_E2M3: 6, F6_E3M2: 6,
};

export interface SafetensorsSummary {
  /** `N`: the JSON header's length; the data region starts at `8 + N`. */
  headerBytes: number;
  tensorCount: number;
  /** Tensors per dtype, e.g. `{ BF16: 290, F32: 1 }`. */
  dtypes: Record<string, number>;
  /** Sum of the element counts. */
  parameterCount: number;
  /** `__metadata__` (string → string), when present. */
  metadata?: Record<string, string>;
}

export type SafetensorsCheck =
  /** The prefix is too short to decide: give at least `needBytes` bytes (or the whole file if smaller). */
  | { status: 'need-more'; needBytes: number }
  | { status: 'ok'; summary: SafetensorsSummary }
  | { status: 'invalid'; problems: string[] };

export interface SafetensorsOptions {
  maxHeaderBytes?: number;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

const MAX_PROBLEMS = 20;

/**
 * Checks a safetensors file from its first bytes (`prefix`, at least what `need-more` asks for) and its
 * total size. Every problem found is reported (up to 20).
 */
export function checkSafetensors(prefix: Uint8Array, fileSize: number, options: SafetensorsOptions = {}): SafetensorsCheck {
  const cap = options.maxHeaderBytes ?? SAFETENSORS_MAX_HEADER_BYTES;
  if (fileSize < 8) return { status: 'invalid', problems: [`the file is ${fileSize} bytes, shorter than the 8-byte header length`] };
  if (prefix.byteLength < 8) return { status: 'need-more', needBytes: 8 };
  const view = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength);
  const big = view.getBigUint64(0, true);
  if (big > BigInt(cap)) return { status: 'invalid', problems: [`the header claims ${big} bytes, more than the ${cap}-byte limit`] };
  const n = Number(big);
  if (8 + n > fileSize) return { status: 'invalid', problems: [`the header claims ${n} bytes but the file has only ${fileSize - 8} after the length (truncated?)`] };
  if (prefix.byteLength < 8 + n) return { status: 'need-more', needBytes: 8 + n };

  let header: unknown;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(prefix.subarray(8, 8 + n));
    if (!text.startsWith('{')) return { status: 'invalid', problems: ['the header does not start with "{"'] };
    header = JSON.parse(text);
  } catch (error) {
    return { status: 'invalid', problems: [`the header is not UTF-8 JSON: ${(error as Error).message}`] };
  }
  if (!isObject(header)) return { status: 'invalid', problems: ['the header is not a JSON object'] };

  const problems: string[] = [];
  const add = (p: string): void => {
    if (problems.length < MAX_PROBLEMS) problems.push(p);
  };
  const dataSize = fileSize - 8 - n;
  const dtypes: Record<string, number> = {};
  const spans: Array<{ name: string; begin: number; end: number }> = [];
  let parameterCount = 0;
  let metadata: Record<string, string> | undefined;

  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isObject(value) || !Object.values(value).every((v) => typeof v === 'string')) add('__metadata__ is not a map of strings');
      else metadata = value as Record<string, string>;
      continue;
    }
    if (!isObject(value)) {
      add(`${name}: not an object`);
      continue;
    }
    const { dtype, shape, data_offsets: offsets } = value;
    const bits = typeof dtype === 'string' ? SAFETENSORS_DTYPE_BITS[dtype] : undefined;
    if (bits === undefined) add(`${name}: unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      add(`${name}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
      continue;
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)) {
      add(`${name}: data_offsets ${JSON.stringify(offsets)} is not [begin, end]`);
      continue;
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) {
      add(`${name}: data_offsets end ${end} is before begin ${begin}`);
      continue;
    }
    const elements = (shape as number[]).reduce((a, d) => a * d, 1);
    if (bits !== undefined) {
      const totalBits = elements * bits;
      if (!Number.isSafeInteger(totalBits) || totalBits % 8 !== 0) add(`${name}: ${elements} ${String(dtype)} elements are not a whole number of bytes`);
      else if (totalBits / 8 !== end - begin) add(`${name}: ${String(dtype)}${JSON.stringify(shape)} needs ${totalBits / 8} bytes, data_offsets give ${end - begin}`);
      dtypes[dtype as string] = (dtypes[dtype as string] ?? 0) + 1;
    }
    parameterCount += elements;
    spans.push({ name, begin, end });
  }

  // exact, contiguous coverage of [0, dataSize)
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const span of spans) {
    if (span.begin > cursor) add(`gap in the data region: bytes ${cursor}–${span.begin} belong to no tensor (before ${span.name})`);
    else if (span.begin < cursor) add(`${span.name} overlaps the previous tensor (begins at ${span.begin}, previous ends at ${cursor})`);
    cursor = Math.max(cursor, span.end);
  }
  if (cursor > dataSize) add(`the tensors need ${cursor} bytes of data but the file has ${dataSize} (truncated shard?)`);
  else if (cursor < dataSize) add(`${dataSize - cursor} bytes after the last tensor belong to no tensor`);

  if (problems.length > 0) return { status: 'invalid', problems };
  const summary: SafetensorsSummary = { headerBytes: n, tensorCount: spans.length, dtypes, parameterCount };
  if (metadata !== undefined) summary.metadata = metadata;
  return { status: 'ok', summary };
}

/**
 * Feeds a file's chunks as they stream past (e.g. while the bundle is read) and keeps only the prefix
 * the check needs. `result()` after the last chunk (or as soon as `done`).
 */
export class SafetensorsPrefix {
  readonly #fileSize: number;
  readonly #options: SafetensorsOptions;
  #chunks: Uint8Array[] = [];
  #have = 0;
  #want = 8;
  #result: SafetensorsCheck | undefined;

  constructor(fileSize: number, options: SafetensorsOptions = {}) {
    this.#fileSize = fileSize;
    this.#options = options;
  }

  /** Whether the check is decided (no more bytes needed). */
  get done(): boolean {
    return this.#result !== undefined;
  }

  update(chunk: Uint8Array): void {
    let rest = chunk;
    while (this.#result === undefined && rest.byteLength > 0) {
      const take = Math.min(rest.byteLength, this.#want - this.#have);
      // a copy: the chunk's memory may hold other bytes once its write settled (ReadPool)
      this.#chunks.push(Buffer.from(rest.subarray(0, take)));
      this.#have += take;
      rest = rest.subarray(take);
      while (this.#result === undefined && this.#have >= this.#want) {
        const check = checkSafetensors(this.#prefix(), this.#fileSize, this.#options);
        if (check.status === 'need-more') this.#want = check.needBytes;
        else this.#result = check;
      }
    }
  }

  #prefix(): Uint8Array {
    if (this.#chunks.length !== 1) this.#chunks = [Buffer.concat(this.#chunks)];
    return this.#chunks[0] as Uint8Array;
  }

  result(): SafetensorsCheck {
    if (this.#result !== undefined) return this.#result;
    const check = checkSafetensors(this.#prefix(), this.#fileSize, this.#options);
    return check.status === 'need-more' ? { status: 'invalid', problems: [`the file ended after ${this.#have} bytes, before its header (${check.needBytes} bytes)`] } : check;
  }
}

export interface ShardIndexCheck {
  /** Shards the index names, resolved to repo paths, sorted. */
  shards: string[];
  /** Of those, the ones not in the repo. */
  missing: string[];
  /** Structural problems with the index itself. */
  problems: string[];
}

/**
 * `model.safetensors.index.json`: `{"metadata": {...}, "weight_map": {"<tensor>": "<shard file>"}}`.
 * Shard names are relative to the index's directory (`indexPath`). Every shard must be a safe relative
 * path and be among `filesInRepo`.
 */
export function checkShardIndex(indexJson: unknown, filesInRepo: Iterable<string>, indexPath = 'model.safetensors.index.json'): ShardIndexCheck {
  let value = indexJson;
  if (typeof value === 'string' || value instanceof Uint8Array) {
    try {
      value = JSON.parse(typeof value === 'string' ? value : new TextDecoder('utf-8', { fatal: true }).decode(value));
    } catch (error) {
      return { shards: [], missing: [], problems: [`${indexPath} is not UTF-8 JSON: ${(error as Error).message}`] };
    }
  }
  if (!isObject(value) || !isObject(value['weight_map'])) return { shards: [], missing: [], problems: [`${indexPath} has no "weight_map" object`] };
  const dir = indexPath.includes('/') ? indexPath.slice(0, indexPath.lastIndexOf('/') + 1) : '';
  const problems: string[] = [];
  const shards = new Set<string>();
  for (const [tensor, shard] of Object.entries(value['weight_map'])) {
    if (typeof shard !== 'string') {
      problems.push(`${indexPath}: weight_map[${JSON.stringify(tensor)}] is not a file name`);
      continue;
    }
    const path = `${dir}${shard}`;
    const reason = unsafeRelativePathReason(path);
    if (reason !== undefined) {
      problems.push(`${indexPath}: shard ${JSON.stringify(shard)} is not a safe path (${reason})`);
      continue;
    }
    shards.add(path);
  }
  const present = new Set(filesInRepo);
  const sorted = [...shards].sort();
  return { shards: sorted, missing: sorted.filter((s) => !present.has(s)), problems: problems.slice(0, MAX_PROBLEMS) };
}
