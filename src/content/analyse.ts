/**
 * What loading one file would execute, decided from its bytes as they stream past (the same pass that
 * hashes them): `ContentScanner` sniffs the first bytes — content, not the name, decides — and hands the
 * stream to the matching walker (pickle, PyTorch zip, legacy torch, .npy/.npz, GGUF). Walkers stop
 * asking for bytes as soon as they know enough; the rest of the file (tensor data) is never looked at.
 *
 * `verdictOf` then applies an allow-list, failing closed:
 *   unsafe       — some global is not on the allow-list (named), whatever else is true;
 *   unscannable  — the file is or claims to be a pickle (or archive of them) but cannot be fully walked;
 *   safe         — it holds pickles and every global they import is allowed;
 *   no-code      — nothing in it is unpickled by any loader (safetensors, GGUF, ONNX, JSON, text, raw data).
 */
import { ByteMachine } from './byte-machine.js';
import { walkGguf, type GgufScan } from './gguf.js';
import { walkNpy, type NpyScan } from './npy.js';
import { walkPickles, type PickleScan } from './pickle.js';
import { walkZip, type ZipScan } from './zip.js';
import type { AllowList } from './allowlist.js';

export type ContentFormat =
  | 'torch-zip'
  | 'torch-legacy'
  | 'pickle'
  | 'zip'
  | 'npy'
  | 'npz'
  | 'compressed'
  | 'gguf'
  | 'safetensors'
  | 'onnx'
  | 'json'
  | 'text'
  | 'tokenizer'
  | 'data';

export interface ContentAnalysis {
  format: ContentFormat;
  /** Every global a load would import, `module.name`, sorted. */
  globals: string[];
  /** Pickle streams walked. */
  pickles: number;
  /** Why the file cannot be fully analysed (or, for GGUF, why its structure is wrong). */
  problems: string[];
  /** Findings for a person (e.g. a chat template that reaches for Python internals). */
  notes: string[];
}

export type Verdict = 'safe' | 'unsafe' | 'unscannable' | 'no-code';

export interface ContentVerdict extends ContentAnalysis {
  verdict: Verdict;
  /** The globals the allow-list does not hold. */
  unsafeGlobals: string[];
}

const SNIFF = 16;
/** The legacy torch format's first pickle: PROTO 2, LONG1 of torch's magic number 0x1950a86a20f9469cfc6c, STOP. */
const LEGACY_MAGIC = Buffer.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]);
/**
 * What joblib (and friends) compress with, by magic: zlib (a valid 2-byte header), joblib's old 'ZF0x',
 * gzip, bzip2, xz, lzma-alone, lz4 frames. Tight enough that random data rarely matches.
 */
function compressedMagic(head: Buffer): boolean {
  const starts = (s: string): boolean => head.subarray(0, s.length).equals(Buffer.from(s, 'latin1'));
  if (head[0] === 0x78 && head.byteLength > 1 && [0x01, 0x5e, 0x9c, 0xda].includes(head[1]!)) return true;
  return ['ZF0x', '\x1f\x8b\x08', '\xfd7zXZ\x00', ']\x00\x00', '\x04"M\x18'].some(starts) || /^BZh[1-9]/.test(head.subarray(0, 4).toString('latin1'));
}
/** Extensions that only pickle-based loaders read: a file so named that fails to parse is unscannable, not data. */
const PICKLE_EXT = /\.(pkl|pickle|joblib|jbl|pt|pth|ckpt|p|pck|pcl)$/i;
const PICKLEISH_NAME = /\.(pkl|pickle|joblib|jbl|pt|pth|ckpt|bin|npy|dat|data)(\.|$)/i;
const TEXT_EXT = /\.(txt|md|markdown|py|yaml|yml|jinja|j2|csv|tsv|cfg|ini|toml|rst|html|xml|gitattributes|gitignore|license|vocab|merges)$|(^|\/)(LICENSE|README|NOTICE|COPYING)[^/]*$|(^|\/)\.gitattributes$/i;
const JSON_EXT = /\.(json|jsonl|ndjson)$/i;
const TOKENIZER_EXT = /\.(model|tiktoken|spm)$/i;

type Walker =
  | { kind: 'pickle'; machine: ByteMachine<PickleScan>; format: 'pickle' | 'torch-legacy'; claimed: boolean }
  | { kind: 'zip'; machine: ByteMachine<ZipScan> }
  | { kind: 'npy'; machine: ByteMachine<NpyScan> }
  | { kind: 'gguf'; machine: ByteMachine<GgufScan> }
  | { kind: 'fixed'; analysis: ContentAnalysis };

function fixed(format: ContentFormat, problems: string[] = []): Walker {
  return { kind: 'fixed', analysis: { format, globals: [], pickles: 0, problems, notes: [] } };
}

/** Streams one file's bytes; `result()` after the last chunk (or as soon as `done`). Never throws on content. */
export class ContentScanner {
  readonly #path: string;
  readonly #size: number;
  #head: Buffer[] = [];
  #headBytes = 0;
  #walker: Walker | undefined;

  constructor(path: string, size: number) {
    this.#path = path;
    this.#size = size;
    if (/\.safetensors$/i.test(path)) this.#walker = fixed('safetensors');
    else if (size === 0) this.#walker = fixed(PICKLE_EXT.test(path) ? 'pickle' : 'data', PICKLE_EXT.test(path) ? ['the file is empty'] : []);
  }

  /** Whether the scanner needs no more bytes. */
  get done(): boolean {
    const w = this.#walker;
    return w !== undefined && (w.kind === 'fixed' || w.machine.done);
  }

  update(chunk: Uint8Array): void {
    if (this.done) return;
    if (this.#walker === undefined) {
      const want = Math.min(SNIFF, this.#size) - this.#headBytes;
      const part = chunk.subarray(0, want);
      this.#head.push(Buffer.from(part));
      this.#headBytes += part.byteLength;
      if (this.#headBytes < Math.min(SNIFF, this.#size)) return;
      const head = Buffer.concat(this.#head);
      this.#head = [];
      this.#walker = this.#choose(head);
      if (this.#walker.kind !== 'fixed') {
        this.#walker.machine.push(head);
        if (part.byteLength < chunk.byteLength && !this.#walker.machine.done) this.#walker.machine.push(chunk.subarray(part.byteLength));
      }
      return;
    }
    if (this.#walker.kind !== 'fixed') this.#walker.machine.push(chunk);
  }

  /** Bytes the scanner would skip unread right now: a caller with random access may seek past them (see analyseAt). */
  get skippable(): number {
    const w = this.#walker;
    return w === undefined || w.kind === 'fixed' ? 0 : w.machine.skipPending;
  }

  skip(n: number): void {
    const w = this.#walker;
    if (w !== undefined && w.kind !== 'fixed') w.machine.skipped(n);
  }

  #choose(head: Buffer): Walker {
    const path = this.#path;
    const starts = (s: string | Buffer): boolean => head.subarray(0, s.length).equals(typeof s === 'string' ? Buffer.from(s, 'latin1') : s);
    if (starts('PK\x03\x04') || starts('PK\x05\x06')) return { kind: 'zip', machine: new ByteMachine(walkZip(this.#size)) };
    if (head[0] === 0x80 && head.byteLength > 1 && head[1]! <= 5) {
      const legacy = starts(LEGACY_MAGIC);
      // legacy torch: magic, protocol version, sys info, the object, storage keys — then raw storages
      // a claim by name or torch's magic: failing to parse is then unscannable, never "just data"
      return { kind: 'pickle', machine: new ByteMachine(walkPickles(legacy ? { pickles: 5 } : {})), format: legacy ? 'torch-legacy' : 'pickle', claimed: legacy || PICKLE_EXT.test(path) };
    }
    if (starts('\x93NUMPY')) return { kind: 'npy', machine: new ByteMachine(walkNpy(this.#size)) };
    if (starts('GGUF')) return { kind: 'gguf', machine: new ByteMachine(walkGguf(this.#size)) };
    if (compressedMagic(head) && PICKLEISH_NAME.test(path)) {
      return fixed('compressed', ['the file is compressed (joblib or similar): its pickle cannot be analysed without decompressing it']);
    }
    if (JSON_EXT.test(path)) return fixed('json');
    if (TEXT_EXT.test(path)) return fixed('text');
    if (TOKENIZER_EXT.test(path)) return fixed('tokenizer');
    if (/\.onnx$/i.test(path)) return fixed('onnx');
    // anything else: walk it as a pickle (protocol 0/1 pickles have no magic); what fails before importing anything is data
    return { kind: 'pickle', machine: new ByteMachine(walkPickles()), format: 'pickle', claimed: PICKLE_EXT.test(path) };
  }

  result(): ContentAnalysis {
    if (this.#walker === undefined) {
      // fewer bytes arrived than the size promised (the hash check reports that); analyse what came
      const head = Buffer.concat(this.#head);
      this.#walker = this.#choose(head);
      if (this.#walker.kind !== 'fixed') this.#walker.machine.push(head);
    }
    const w = this.#walker;
    switch (w.kind) {
      case 'fixed':
        return w.analysis;
      case 'pickle': {
        const scan = w.machine.done ? w.machine.result! : w.machine.end();
        const out = empty(w.format);
        addPickle(out, scan, w.claimed, undefined);
        if (out.pickles === 0 && out.problems.length === 0) out.format = 'data';
        return finish(out);
      }
      case 'npy': {
        const scan = w.machine.done ? w.machine.result! : w.machine.end();
        const out = empty('npy');
        if (scan.problem !== undefined) out.problems.push(scan.problem);
        if (scan.pickle !== undefined) addPickle(out, scan.pickle, true, 'the object array');
        return finish(out);
      }
      case 'zip': {
        const scan = w.machine.done ? w.machine.result! : w.machine.end();
        const torch = scan.members.some((m) => /(^|\/)data\.pkl$/.test(m.name));
        const out = empty(torch ? 'torch-zip' : /\.npz$/i.test(this.#path) ? 'npz' : 'zip');
        out.problems.push(...scan.problems);
        for (const m of scan.members) {
          if (m.pickle === undefined) continue;
          addPickle(out, m.pickle, m.kind === 'npy' || /\.(pkl|pickle)$/i.test(m.name), `member ${m.name}`);
        }
        return finish(out);
      }
      case 'gguf': {
        const scan = w.machine.done ? w.machine.result! : w.machine.end();
        const out = empty('gguf');
        out.problems.push(...scan.problems);
        out.notes.push(...scan.notes);
        return out;
      }
    }
  }
}

function empty(format: ContentFormat): ContentAnalysis {
  return { format, globals: [], pickles: 0, problems: [], notes: [] };
}

/**
 * Folds one walked stream into a file's analysis. A stream that fails where Python's unpickler would
 * also fail, before anything was imported, is not a pickle at all (raw data) — unless the file or
 * member claims to be one by its name. Our own caps never count as "not a pickle".
 */
function addPickle(out: ContentAnalysis, scan: PickleScan, claimed: boolean, where: string | undefined): void {
  const prefix = where === undefined ? '' : `${where}: `;
  if (scan.status !== 'ok' && scan.status !== 'limit' && !claimed && !scan.sawImport) return;
  out.globals.push(...scan.globals);
  if (scan.status === 'ok') {
    out.pickles += scan.pickles;
    return;
  }
  out.pickles += Math.max(1, scan.pickles);
  out.problems.push(`${prefix}${scan.status === 'truncated' ? 'truncated pickle' : scan.status === 'limit' ? 'analysis limit reached' : 'not a valid pickle'}: ${scan.problem ?? ''}`.trim());
}

function finish(out: ContentAnalysis): ContentAnalysis {
  out.globals = [...new Set(out.globals)].sort();
  return out;
}

/** Applies the allow-list: the verdict for one analysed file. */
export function verdictOf(analysis: ContentAnalysis, allowed: AllowList): ContentVerdict {
  const unsafeGlobals = analysis.globals.filter((g) => !allowed.has(g));
  const verdict: Verdict =
    unsafeGlobals.length > 0 ? 'unsafe' : analysis.problems.length > 0 ? 'unscannable' : analysis.pickles > 0 ? 'safe' : 'no-code';
  return { ...analysis, verdict, unsafeGlobals };
}

/** Analyses a whole file held in memory (tests, small files). */
export function analyseBytes(path: string, bytes: Uint8Array, chunk = 64 * 1024): ContentAnalysis {
  const scanner = new ContentScanner(path, bytes.byteLength);
  for (let at = 0; at < bytes.byteLength && !scanner.done; at += chunk) scanner.update(bytes.subarray(at, at + chunk));
  return scanner.result();
}

/** Reads up to `buffer.length` bytes at `position` of one file; 0 at its end. */
export type ReadAt = (buffer: Buffer, position: number) => Promise<number>;

/**
 * Analyses a file through random access (export's read of what it wrote): only the bytes the walkers
 * ask for are read; what they would skip (tensor data of known length) is seeked past.
 */
export async function analyseAt(path: string, size: number, read: ReadAt): Promise<ContentAnalysis> {
  const scanner = new ContentScanner(path, size);
  const buffer = Buffer.allocUnsafe(1024 * 1024);
  let position = 0;
  while (!scanner.done && position < size) {
    const skip = Math.min(scanner.skippable, size - position);
    if (skip > 0) {
      scanner.skip(skip);
      position += skip;
      continue;
    }
    const n = await read(buffer.subarray(0, Math.min(buffer.length, size - position)), position);
    if (n === 0) break;
    scanner.update(buffer.subarray(0, n));
    position += n;
  }
  return scanner.result();
}
