/**
 * Weight sanity checks wired into export and import (issue 5 §6): every `*.safetensors` file's header
 * parses and its tensors cover the file exactly (integrity/safetensors.ts), and every shard a
 * `*.safetensors.index.json` names is among the repo's files. Failures are E_WEIGHTS_INVALID naming the
 * repo and file; `--no-weight-check` turns the checks off.
 *
 * On import the check runs in the sink path (WeightCheckingSink wraps the staging sink): each
 * safetensors entry's leading bytes are fed to `SafetensorsPrefix` as they stream past, so nothing is
 * read twice and a bad shard fails the import before anything is committed.
 */
import { open } from 'node:fs/promises';
import { AirlockError, fsError } from '../errors.js';
import type { Manifest, ManifestFile } from '../bundle/manifest.js';
import type { PayloadEntry, PayloadSink, PayloadTarget } from '../bundle/reader.js';
import { checkShardIndex, SafetensorsPrefix, type SafetensorsCheck } from './safetensors.js';

/** Index files are JSON of a few MiB at most; more is refused rather than buffered. */
const MAX_INDEX_BYTES = 64 * 1024 * 1024;

export function isSafetensorsPath(path: string): boolean {
  return path.toLowerCase().endsWith('.safetensors');
}

export function isShardIndexPath(path: string): boolean {
  return path.toLowerCase().endsWith('.safetensors.index.json');
}

export interface TensorInfo {
  tensors: number;
  dtypes: Record<string, number>;
}

function weightsError(where: string, path: string, problems: readonly string[]): AirlockError {
  return new AirlockError('E_WEIGHTS_INVALID', `${where}: ${path} failed the weight check:\n  ${problems.join('\n  ')}`, {
    subject: path,
    hint: 'the weights are truncated or incomplete (a broken upload or a partial mirror); get a complete copy, or pass --no-weight-check if you know why',
  });
}

function infoOf(check: SafetensorsCheck, where: string, path: string): TensorInfo {
  if (check.status !== 'ok') throw weightsError(where, path, check.status === 'invalid' ? check.problems : ['the header is incomplete']);
  // dtypes in a stable order, so the manifest is canonical
  const dtypes = Object.fromEntries(Object.entries(check.summary.dtypes).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return { tensors: check.summary.tensorCount, dtypes };
}

/** Reads up to `buffer.length` bytes at `position` of one file; 0 at its end. */
export type ReadAt = (buffer: Buffer, position: number) => Promise<number>;

/** A ReadAt over a file on disk, opened for the duration of `use`; read errors name the file. */
async function withFileReader<T>(localPath: string, use: (read: ReadAt) => Promise<T>): Promise<T> {
  const handle = await open(localPath, 'r').catch((error: unknown) => {
    throw fsError(error, 'read', localPath);
  });
  try {
    return await use(async (buffer, position) => {
      try {
        return (await handle.read(buffer, 0, buffer.length, position)).bytesRead;
      } catch (error) {
        throw fsError(error, 'read', localPath);
      }
    });
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** Checks one safetensors file, reading only its header. */
export async function checkSafetensorsAt(read: ReadAt, size: number, where: string, path: string): Promise<TensorInfo> {
  const prefix = new SafetensorsPrefix(size);
  const buffer = Buffer.allocUnsafe(1024 * 1024);
  let position = 0;
  while (!prefix.done && position < size) {
    const bytesRead = await read(buffer.subarray(0, Math.min(buffer.length, size - position)), position);
    if (bytesRead === 0) break;
    prefix.update(buffer.subarray(0, bytesRead));
    position += bytesRead;
  }
  return infoOf(prefix.result(), where, path);
}

/** Checks one safetensors file on disk, reading only its header. */
export function checkSafetensorsFile(localPath: string, size: number, where: string, path: string): Promise<TensorInfo> {
  return withFileReader(localPath, (read) => checkSafetensorsAt(read, size, where, path));
}

/** Checks a shard index's contents against the repo's (bundled) file paths. */
export function checkIndexContent(content: Uint8Array, indexPath: string, filesInRepo: Iterable<string>, where: string): void {
  const check = checkShardIndex(content, filesInRepo, indexPath);
  const problems = [...check.problems, ...check.missing.map((s) => `shard ${s} is named by the index but is not in the bundle`)];
  if (problems.length > 0) throw weightsError(where, indexPath, problems);
}

/** Reads an index file (capped) and checks it. */
export async function checkIndexAt(read: ReadAt, size: number, indexPath: string, filesInRepo: Iterable<string>, where: string): Promise<void> {
  if (size > MAX_INDEX_BYTES) throw weightsError(where, indexPath, [`the index is ${size} bytes, more than the ${MAX_INDEX_BYTES}-byte limit`]);
  const buffer = Buffer.alloc(size);
  let position = 0;
  while (position < size) {
    const bytesRead = await read(buffer.subarray(position), position);
    if (bytesRead === 0) break;
    position += bytesRead;
  }
  checkIndexContent(buffer.subarray(0, position), indexPath, filesInRepo, where);
}

/** Reads an index file (capped) from disk and checks it. */
export function checkIndexFile(localPath: string, size: number, indexPath: string, filesInRepo: Iterable<string>, where: string): Promise<void> {
  return withFileReader(localPath, (read) => checkIndexAt(read, size, indexPath, filesInRepo, where));
}

function repoLabel(entry: Pick<PayloadEntry, 'repo'>): string {
  return `${entry.repo.type === 'dataset' ? 'datasets/' : ''}${entry.repo.id}@${entry.repo.commit}`;
}

/**
 * Wraps a PayloadSink: safetensors entries are checked from their streamed prefix, index files from their
 * (capped) bytes, both when the entry finishes — after its hashes matched, before the inner target makes
 * it durable. A failure rejects `finish`, which fails the read (the caller then commits nothing).
 */
export class WeightCheckingSink implements PayloadSink {
  readonly #inner: PayloadSink;
  /** Tensor info per payload entry name, as seen on this import. */
  readonly tensors = new Map<string, TensorInfo>();

  constructor(inner: PayloadSink) {
    this.#inner = inner;
  }

  async begin(manifest: Manifest): Promise<void> {
    await this.#inner.begin?.(manifest);
  }

  async open(entry: PayloadEntry): Promise<PayloadTarget> {
    const target = await this.#inner.open(entry);
    const { file } = entry;
    if (isSafetensorsPath(file.path)) return this.#wrapSafetensors(entry, file, target);
    if (isShardIndexPath(file.path)) return this.#wrapIndex(entry, file, target);
    return target;
  }

  #wrapSafetensors(entry: PayloadEntry, file: ManifestFile, target: PayloadTarget): PayloadTarget {
    const prefix = new SafetensorsPrefix(file.size);
    return {
      write: async (chunk) => {
        if (!prefix.done) prefix.update(chunk);
        await target.write(chunk);
      },
      finish: async () => {
        this.tensors.set(entry.name, infoOf(prefix.result(), repoLabel(entry), file.path));
        await target.finish();
      },
      abort: () => target.abort(),
    };
  }

  #wrapIndex(entry: PayloadEntry, file: ManifestFile, target: PayloadTarget): PayloadTarget {
    const chunks: Buffer[] = [];
    let have = 0;
    return {
      write: async (chunk) => {
        if (have <= MAX_INDEX_BYTES) {
          chunks.push(Buffer.from(chunk));
          have += chunk.byteLength;
        }
        await target.write(chunk);
      },
      finish: async () => {
        const where = repoLabel(entry);
        if (have > MAX_INDEX_BYTES) throw weightsError(where, file.path, [`the index is more than ${MAX_INDEX_BYTES} bytes`]);
        checkIndexContent(Buffer.concat(chunks), file.path, entry.repo.files.map((f) => f.path), where);
        await target.finish();
      },
      abort: () => target.abort(),
    };
  }
}
