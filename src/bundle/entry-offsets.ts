/**
 * Where each entry's bytes sit inside a bundle (single tar or split volumes), found by reading only the
 * tar headers, and positioned reads of the logical bundle. `publish` uses it after the full
 * verification pass: each payload file is then read straight out of the bundle into the upload's
 * reused buffers (the registry checks the digest itself), several at a time, without hashing the
 * bytes a second time.
 */
import { open, readdir, readFile, stat, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { AirlockError, fsError } from '../errors.js';
import { firstPartPaths, indexPathFor, parsePartsIndex, splitBundleOf } from './parts.js';
import { findParts } from './parts-unindexed.js';
import { BLOCK, paddingAfter } from './tar-header.js';
import { decodeTarNumber } from './tar-guard.js';

interface Segment {
  path: string;
  start: number;
  size: number;
}

export interface EntryOffset {
  name: string;
  /** Offset of the entry's first data byte in the logical bundle. */
  offset: number;
  size: number;
}

export interface BundleBytes {
  size: number;
  entries: Map<string, EntryOffset>;
  read(start: number, length: number): Promise<Buffer>;
  /** Bytes [start, start + length) of the logical bundle into `into` (whole, or throws). */
  readInto(start: number, into: Buffer, length: number): Promise<void>;
  close(): Promise<void>;
}

async function segmentsOf(path: string): Promise<Segment[]> {
  let target = path;
  const info = await stat(path).catch(() => undefined);
  if (info?.isDirectory()) {
    const names = await readdir(path);
    const indexes = names.filter((n) => n.endsWith('.parts.json'));
    const tars = names.filter((n) => n.endsWith('.tar'));
    if (indexes.length === 1 && tars.length === 0) target = join(path, indexes[0]!);
    else if (tars.length === 1 && indexes.length === 0) target = join(path, tars[0]!);
    else throw new AirlockError('E_USAGE', `${path} is a folder holding ${indexes.length + tars.length === 0 ? 'no bundle' : 'several bundles'}`, { subject: path });
  }
  let exists = false;
  for (const first of firstPartPaths(target)) if (!exists) exists = await stat(first).then(() => true, () => false);
  const split = splitBundleOf(target) ?? (info === undefined && exists ? target : undefined);
  if (split !== undefined) {
    const indexPath = indexPathFor(split);
    const indexBytes = await readFile(indexPath).catch((e: unknown) => {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw fsError(e, 'read', indexPath);
    });
    // no index (not copied): the parts on disk, in order — the verification pass already read them as one stream
    const parts = indexBytes === undefined ? await findParts(split) : parsePartsIndex(indexBytes, indexPath).parts;
    let start = 0;
    return parts.map((p) => {
      const segment = { path: join(dirname(split), p.name), start, size: p.size };
      start += p.size;
      return segment;
    });
  }
  const single = await stat(target).catch((e: unknown) => Promise.reject(fsError(e, 'read', target)));
  return [{ path: target, start: 0, size: single.size }];
}

function cString(bytes: Buffer): string {
  const end = bytes.indexOf(0);
  return bytes.subarray(0, end === -1 ? bytes.length : end).toString('utf8');
}

export async function openBundleBytes(path: string): Promise<BundleBytes> {
  const segments = await segmentsOf(path);
  const size = segments.reduce((n, s) => n + s.size, 0);
  const handles = new Map<string, FileHandle>();
  const handle = async (p: string): Promise<FileHandle> => {
    const had = handles.get(p);
    if (had !== undefined) return had;
    const h: FileHandle = await open(p, 'r').catch((e: unknown) => Promise.reject(fsError(e, 'open', p)));
    handles.set(p, h);
    return h;
  };
  const readInto = async (start: number, out: Buffer, length: number): Promise<void> => {
    let done = 0;
    for (const s of segments) {
      if (done === length) break;
      const at = start + done;
      if (at >= s.start + s.size || at < s.start) continue;
      const n = Math.min(length - done, s.start + s.size - at);
      const { bytesRead } = await (await handle(s.path)).read(out, done, n, at - s.start);
      if (bytesRead !== n) throw new AirlockError('E_BUNDLE_MALFORMED', `${s.path} is shorter than it was when verified`, { subject: s.path });
      done += n;
    }
    if (done !== length) throw new AirlockError('E_BUNDLE_MALFORMED', `${path}: the tar ends before byte ${start + length}`, { subject: path });
  };
  const read = async (start: number, length: number): Promise<Buffer> => {
    const out = Buffer.alloc(length);
    await readInto(start, out, length);
    return out;
  };
  const entries = new Map<string, EntryOffset>();
  let offset = 0;
  let paxPath: string | undefined;
  while (offset + BLOCK <= size) {
    const header = await read(offset, BLOCK);
    if (header.every((b) => b === 0)) break;
    const entrySize = decodeTarNumber(header.subarray(124, 136));
    const type = String.fromCharCode(header[156]!);
    const dataOffset = offset + BLOCK;
    if (type === 'x') {
      const pax = (await read(dataOffset, entrySize)).toString('utf8');
      paxPath = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(pax)?.[1];
    } else if (type !== 'g') {
      let name = cString(header.subarray(0, 100));
      const prefix = header.subarray(257, 262).toString('latin1') === 'ustar' ? cString(header.subarray(345, 500)) : '';
      if (prefix !== '') name = `${prefix}/${name}`;
      if (paxPath !== undefined) name = paxPath;
      paxPath = undefined;
      entries.set(name, { name, offset: dataOffset, size: entrySize });
    }
    offset = dataOffset + entrySize + paddingAfter(entrySize);
  }
  return {
    size,
    entries,
    read,
    readInto,
    async close(): Promise<void> {
      for (const h of handles.values()) await h.close().catch(() => undefined);
      handles.clear();
    },
  };
}
