/**
 * A zip (PyTorch checkpoint, `.npz`, any archive) read in ONE forward pass, as its bytes stream past:
 * every local header is parsed and its member's content sniffed — a member named `*.pkl` or that starts
 * like a pickle (`\x80`) is walked, a `.npy` member is read as one, everything else (tensor storages) is
 * skipped by its length without being read. At the end, the central directory — what PyTorch and every
 * zip library actually go by — is checked against what was walked: each of its entries must point at a
 * local header we parsed, with the same name, method and size. So a member that exists only for the
 * central directory, or a name that differs between the two records (CVE-2025-1944, CVE-2025-10156),
 * cannot slip past: it makes the file unscannable. CRCs and flag bits are not checked (PyTorch does
 * not either): we read as leniently as PyTorch, and scan what it would load.
 *
 * Deflated members are sniffed from their inflated start; only those that could be unpickled are inflated
 * whole (capped) and walked. Encryption, other compression methods, or a compressed member whose size
 * comes only after its data make the file unscannable.
 */
import { constants as zlibConstants, inflateRawSync } from 'node:zlib';
import { ByteMachine, type ByteAnswer, type ByteParser, type ByteRequest } from './byte-machine.js';
import { walkNpy } from './npy.js';
import { walkPickles, type PickleScan } from './pickle.js';

export const ZIP_LIMITS = {
  members: 100_000,
  /** A deflated member we must inflate to sniff: compressed and inflated caps. */
  deflatedBytes: 64 * 1024 * 1024,
  inflatedBytes: 256 * 1024 * 1024,
  nameBytes: 4096,
};

export interface MemberScan {
  name: string;
  kind: 'pickle' | 'npy' | 'data';
  pickle?: PickleScan;
}

export interface ZipScan {
  members: MemberScan[];
  /** Why the archive cannot be fully analysed (empty when it can). */
  problems: string[];
}

interface LocalRecord {
  offset: number;
  name: string;
  method: number;
  compressedSize: number;
}

type Step<T> = Generator<ByteRequest, T, ByteAnswer>;
const DESCRIPTOR_SIG = Buffer.from('PK\x07\x08', 'latin1');
const PIECE = 64 * 1024;

const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8');

/** Zip names: UTF-8 when flag bit 11 says so, else CP437 (latin1 is close enough to compare and print). */
function nameOf(bytes: Uint8Array, flags: number): string {
  return (flags & 0x800) !== 0 ? utf8.decode(bytes) : latin1.decode(bytes);
}

function u16(b: Uint8Array, at: number): number {
  return b[at]! | (b[at + 1]! << 8);
}
function u32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16)) + b[at + 3]! * 0x1000000;
}
function u64(b: Uint8Array, at: number): number {
  return u32(b, at) + u32(b, at + 4) * 0x100000000;
}

/** ZIP64 extended information (extra id 1): the fields whose 32-bit value is 0xFFFFFFFF, in order. */
function zip64(extra: Uint8Array, wanted: Array<'usize' | 'csize' | 'offset'>): Partial<Record<'usize' | 'csize' | 'offset', number>> {
  const out: Partial<Record<'usize' | 'csize' | 'offset', number>> = {};
  for (let at = 0; at + 4 <= extra.byteLength; ) {
    const id = u16(extra, at);
    const size = u16(extra, at + 2);
    if (id === 1) {
      let p = at + 4;
      for (const field of wanted) {
        if (p + 8 > at + 4 + size) break;
        out[field] = u64(extra, p);
        p += 8;
      }
      return out;
    }
    at += 4 + size;
  }
  return out;
}

export function looksLikePickleName(name: string): boolean {
  return /\.(pkl|pickle)$/i.test(name);
}

/** Walks one member's content, given its first bytes and a way to get the rest. */
class MemberSniffer {
  #machine: ByteMachine<PickleScan> | ByteMachine<{ pickle?: PickleScan; problem?: string }> | undefined;
  #kind: MemberScan['kind'] = 'data';
  #head: Uint8Array[] = [];
  #headBytes = 0;
  readonly #name: string;
  readonly #size: number;

  constructor(name: string, size: number) {
    this.#name = name;
    this.#size = size;
    if (looksLikePickleName(name)) this.#start('pickle');
  }

  /** Whether the member's bytes are needed at all. */
  get wantsBytes(): boolean {
    return this.#machine !== undefined ? !this.#machine.done : this.#headBytes < Math.min(8, this.#size);
  }

  #start(kind: 'pickle' | 'npy'): void {
    this.#kind = kind;
    this.#machine = kind === 'pickle' ? new ByteMachine(walkPickles()) : new ByteMachine(walkNpy(this.#size));
  }

  push(chunk: Uint8Array): void {
    if (this.#machine === undefined) {
      const need = Math.min(8, this.#size) - this.#headBytes;
      const part = chunk.subarray(0, need);
      this.#head.push(part.slice());
      this.#headBytes += part.byteLength;
      if (this.#headBytes < Math.min(8, this.#size)) return;
      const head = Buffer.concat(this.#head);
      if (head[0] === 0x80) this.#start('pickle');
      else if (head.subarray(0, 6).equals(Buffer.from('\x93NUMPY', 'latin1'))) this.#start('npy');
      else return;
      this.#machine!.push(head);
      if (part.byteLength < chunk.byteLength && !this.#machine!.done) this.#machine!.push(chunk.subarray(part.byteLength));
      return;
    }
    if (!this.#machine.done) this.#machine.push(chunk);
  }

  finish(): MemberScan {
    if (this.#machine === undefined) return { name: this.#name, kind: 'data' };
    const result = this.#machine.done ? this.#machine.result! : this.#machine.end();
    if (this.#kind === 'pickle') return { name: this.#name, kind: 'pickle', pickle: result as PickleScan };
    const npy = result as { pickle?: PickleScan; problem?: string };
    const scan: MemberScan = { name: this.#name, kind: 'npy' };
    if (npy.pickle !== undefined) scan.pickle = npy.pickle;
    else if (npy.problem !== undefined) scan.pickle = { status: 'invalid', problem: npy.problem, globals: [], pickles: 0, opcodes: 0, protocol: 0, sawImport: false, storages: new Map() };
    return scan;
  }
}

/** The zip parser, for a ByteMachine positioned at the archive's first byte. */
export function* walkZip(fileSize: number): ByteParser<ZipScan> {
  const members: MemberScan[] = [];
  const problems: string[] = [];
  const locals = new Map<number, LocalRecord>();
  const central: Array<{ name: string; offset: number; method: number; compressedSize: number }> = [];
  let position = 0;
  let sawEnd = false;
  /** Storage bytes per member name, from the torch `data.pkl` walked before them (a hint, checked at the descriptor). */
  const expected = new Map<string, number>();
  /** Bytes read ahead (after a data descriptor found by search) that belong to what follows. */
  let pending: Uint8Array = new Uint8Array(0);
  const fail = (p: string): ZipScan => {
    problems.push(p);
    return { members, problems };
  };
  /** Records a walked member; a torch data.pkl's storage sizes become hints for the members after it. */
  const add = (member: MemberScan): void => {
    members.push(member);
    if (!/(^|\/)data\.pkl$/.test(member.name) || member.pickle === undefined) return;
    const prefix = member.name.slice(0, member.name.length - 'data.pkl'.length);
    for (const [key, bytes] of member.pickle.storages) expected.set(`${prefix}data/${key}`, bytes);
  };

  function* take(n: number): Step<Uint8Array | null> {
    let out: Uint8Array;
    if (pending.byteLength >= n) {
      out = pending.subarray(0, n);
      pending = pending.subarray(n);
    } else {
      const got = yield { t: 'take', n: n - pending.byteLength };
      if (!(got instanceof Uint8Array)) return null;
      out = pending.byteLength === 0 ? got : Buffer.concat([pending, got]);
      pending = new Uint8Array(0);
    }
    position += n;
    return out;
  }
  function* skip(n: number): Step<boolean> {
    const fromPending = Math.min(n, pending.byteLength);
    pending = pending.subarray(fromPending);
    position += fromPending;
    if (n === fromPending) return true;
    const ok = (yield { t: 'skip', n: n - fromPending }) === true;
    if (ok) position += n - fromPending;
    return ok;
  }
  /** The next bytes of the archive, at most `max` (null at its end). */
  function* piece(max: number): Step<Uint8Array | null> {
    if (pending.byteLength > 0) return yield* take(Math.min(max, pending.byteLength));
    const n = Math.min(max, fileSize - position);
    return n <= 0 ? null : yield* take(n);
  }

  /**
   * A stored member whose sizes come only after its data (flag bit 3 — what torch.save writes): its
   * data ends at the first data descriptor whose sizes equal the bytes before it. A forged descriptor
   * inside the data can fool this search, but not the central directory check at the end.
   */
  function* descriptorDelimited(sniffer: MemberSniffer): Step<number | undefined> {
    let count = 0;
    let carry: Uint8Array = new Uint8Array(0);
    const deliver = (bytes: Uint8Array): void => {
      count += bytes.byteLength;
      if (sniffer.wantsBytes && bytes.byteLength > 0) sniffer.push(bytes);
    };
    for (;;) {
      const next = yield* piece(PIECE);
      if (next === null) return undefined;
      // a view, not a copy (tensor data passes through here); only a few carried bytes are ever concatenated
      const buf = carry.byteLength === 0 ? Buffer.from(next.buffer, next.byteOffset, next.byteLength) : Buffer.concat([carry, next]);
      carry = new Uint8Array(0);
      let from = 0;
      let found = false;
      for (;;) {
        const at = buf.indexOf(DESCRIPTOR_SIG, from);
        if (at < 0) break;
        if (at + 24 > buf.byteLength && position < fileSize) {
          // too close to the end of this piece to check it: look again with the next piece
          deliver(buf.subarray(0, at));
          carry = Buffer.from(buf.subarray(at));
          found = true;
          break;
        }
        const len = count + at;
        const fits32 = at + 16 <= buf.byteLength && buf.readUInt32LE(at + 8) === len && buf.readUInt32LE(at + 12) === len;
        const fits64 = at + 24 <= buf.byteLength && u64(buf, at + 8) === len && u64(buf, at + 16) === len;
        if (fits32 || fits64) {
          deliver(buf.subarray(0, at));
          const end = at + (fits32 ? 16 : 24);
          pending = Buffer.from(buf.subarray(end));
          position -= buf.byteLength - end;
          return len;
        }
        from = at + 1;
      }
      if (found) continue;
      // keep a tail that could be the start of a descriptor signature
      let keep = 0;
      for (let k = Math.min(3, buf.byteLength); k > 0; k--) {
        if (buf.subarray(buf.byteLength - k).equals(DESCRIPTOR_SIG.subarray(0, k))) {
          keep = k;
          break;
        }
      }
      deliver(buf.subarray(0, buf.byteLength - keep));
      carry = Buffer.from(buf.subarray(buf.byteLength - keep));
    }
  }

  for (;;) {
    const at = position;
    const sig = yield* take(4);
    if (sig === null) {
      if (!sawEnd) return fail('the archive ends before its end-of-central-directory record (truncated?)');
      break;
    }
    const signature = u32(sig, 0);
    if (sawEnd) return fail(`bytes after the end-of-central-directory record (at offset ${at})`);
    if (signature === 0x04034b50) {
      // local file header
      const h = yield* take(26);
      if (h === null) return fail(`truncated local header at offset ${at}`);
      const flags = u16(h, 2);
      const method = u16(h, 4);
      let csize = u32(h, 14);
      const nameLen = u16(h, 22);
      const extraLen = u16(h, 24);
      if (nameLen > ZIP_LIMITS.nameBytes) return fail(`a member name of ${nameLen} bytes at offset ${at}`);
      const nameBytes = yield* take(nameLen);
      const extra = yield* take(extraLen);
      if (nameBytes === null || extra === null) return fail(`truncated local header at offset ${at}`);
      const name = nameOf(nameBytes, flags);
      if (csize === 0xffffffff) csize = zip64(extra, ['usize', 'csize']).csize ?? -1;
      if (members.length >= ZIP_LIMITS.members) return fail(`more than ${ZIP_LIMITS.members} members`);
      if ((flags & 1) !== 0) return fail(`member ${name} is encrypted`);
      const trailing = (flags & 8) !== 0;
      if (csize < 0 || position + csize > fileSize) return fail(`member ${name} claims ${csize} bytes, past the end of the file`);
      if (method === 0 && trailing && csize === 0) {
        const hint = expected.get(name);
        if (hint !== undefined && hint >= 8 && position + hint <= fileSize) {
          // torch's data.pkl said how long this storage is: sniff its head, skip the rest unread, and
          // require the data descriptor right there (a lie cannot hide bytes: the central directory is checked)
          const sniffer = new MemberSniffer(name, hint);
          const head = yield* take(8);
          if (head === null) return fail(`member ${name} is truncated`);
          sniffer.push(head);
          if (!(yield* skip(hint - 8))) return fail(`member ${name} is truncated`);
          const desc = yield* take(16);
          if (desc === null || u32(desc, 0) !== 0x08074b50) return fail(`member ${name}: no data descriptor where data.pkl says its storage ends`);
          const fits32 = u32(desc, 8) === hint && u32(desc, 12) === hint;
          if (!fits32) {
            const more = yield* take(8);
            if (more === null || u64(desc, 8) !== hint || u64(Buffer.concat([desc.subarray(16), more]), 0) !== hint) {
              return fail(`member ${name}: its data descriptor does not give the ${hint} bytes data.pkl says`);
            }
          }
          locals.set(at, { offset: at, name, method, compressedSize: hint });
          add(sniffer.finish());
          continue;
        }
        const sniffer = new MemberSniffer(name, Number.MAX_SAFE_INTEGER);
        const size = yield* descriptorDelimited(sniffer);
        if (size === undefined) return fail(`member ${name}: no data descriptor matching its length was found`);
        locals.set(at, { offset: at, name, method, compressedSize: size });
        add(sniffer.finish());
        continue;
      }
      if (trailing && csize === 0) return fail(`member ${name} is compressed and gives its size only after its data: it cannot be analysed while streaming`);
      locals.set(at, { offset: at, name, method, compressedSize: csize });
      if (method === 0) {
        // stored: stream the member through the sniffer; once it needs nothing more, skip the rest unread
        const sniffer = new MemberSniffer(name, csize);
        let left = csize;
        while (left > 0 && sniffer.wantsBytes) {
          const next = yield* piece(Math.min(left, PIECE));
          if (next === null) return fail(`member ${name} is truncated`);
          sniffer.push(next);
          left -= next.byteLength;
        }
        if (left > 0 && !(yield* skip(left))) return fail(`member ${name} is truncated`);
        add(sniffer.finish());
      } else if (method === 8) {
        // inflate the start only to sniff it: what could be unpickled (a .pkl/.npy name, or content that
        // starts like a pickle or an .npy) is inflated whole (capped) and walked; anything else is data,
        // skipped unread
        const first = yield* take(Math.min(PIECE, csize));
        if (first === null) return fail(`member ${name} is truncated`);
        let head: Buffer;
        try {
          head = inflateRawSync(first, { finishFlush: zlibConstants.Z_SYNC_FLUSH, maxOutputLength: PIECE });
        } catch (error) {
          return fail(`member ${name} does not inflate: ${(error as Error).message}`);
        }
        const npy = /\.npy$/i.test(name) || head.subarray(0, 6).equals(Buffer.from('\x93NUMPY', 'latin1'));
        if (!looksLikePickleName(name) && !npy && head[0] !== 0x80) {
          if (!(yield* skip(csize - first.byteLength))) return fail(`member ${name} is truncated`);
          add({ name, kind: 'data' });
        } else {
          if (csize > ZIP_LIMITS.deflatedBytes) return fail(`member ${name} is deflated and ${csize} bytes: too large to inflate for analysis`);
          const rest = yield* take(csize - first.byteLength);
          if (rest === null) return fail(`member ${name} is truncated`);
          let inflated: Buffer;
          try {
            inflated = inflateRawSync(Buffer.concat([first, rest]), { maxOutputLength: ZIP_LIMITS.inflatedBytes });
          } catch (error) {
            return fail(`member ${name} does not inflate within ${ZIP_LIMITS.inflatedBytes} bytes: ${(error as Error).message}`);
          }
          const sniffer = new MemberSniffer(name, inflated.byteLength);
          for (let p = 0; p < inflated.byteLength && sniffer.wantsBytes; p += PIECE) sniffer.push(inflated.subarray(p, p + PIECE));
          add(sniffer.finish());
        }
      } else {
        return fail(`member ${name} uses compression method ${method}, which cannot be analysed`);
      }
      if (trailing) {
        // its data descriptor: optional signature, crc, then 32- or 64-bit sizes
        const first = yield* take(4);
        if (first === null) return fail(`member ${name}: truncated data descriptor`);
        const rest = yield* take(u32(first, 0) === 0x08074b50 ? 12 : 8);
        if (rest === null) return fail(`member ${name}: truncated data descriptor`);
        const c32 = u32(rest, rest.byteLength - 8);
        if (c32 !== csize && !(yield* skip(8))) return fail(`member ${name}: truncated data descriptor`);
      }
    } else if (signature === 0x02014b50) {
      // central directory header
      const h = yield* take(42);
      if (h === null) return fail(`truncated central directory at offset ${at}`);
      const flags = u16(h, 4);
      const method = u16(h, 6);
      let csize = u32(h, 16);
      const usize = u32(h, 20);
      const nameLen = u16(h, 24);
      const extraLen = u16(h, 26);
      const commentLen = u16(h, 28);
      let offset = u32(h, 38);
      if (nameLen > ZIP_LIMITS.nameBytes) return fail(`a central-directory name of ${nameLen} bytes`);
      const nameBytes = yield* take(nameLen);
      const extra = yield* take(extraLen);
      if (nameBytes === null || extra === null || !(yield* skip(commentLen))) return fail('truncated central directory');
      const wanted: Array<'usize' | 'csize' | 'offset'> = [];
      if (usize === 0xffffffff) wanted.push('usize');
      if (csize === 0xffffffff) wanted.push('csize');
      if (offset === 0xffffffff) wanted.push('offset');
      const big = zip64(extra, wanted);
      csize = big.csize ?? csize;
      offset = big.offset ?? offset;
      if (central.length >= ZIP_LIMITS.members) return fail(`more than ${ZIP_LIMITS.members} central-directory entries`);
      central.push({ name: nameOf(nameBytes, flags), offset, method, compressedSize: csize });
    } else if (signature === 0x06064b50) {
      // zip64 end of central directory record
      const sizeBytes = yield* take(8);
      if (sizeBytes === null || !(yield* skip(u64(sizeBytes, 0)))) return fail('truncated zip64 end record');
    } else if (signature === 0x07064b50) {
      if ((yield* take(16)) === null) return fail('truncated zip64 locator');
    } else if (signature === 0x06054b50) {
      const h = yield* take(18);
      if (h === null || !(yield* skip(u16(h, 16)))) return fail('truncated end-of-central-directory record');
      sawEnd = true;
    } else {
      return fail(`unexpected bytes at offset ${at} (not a zip record)`);
    }
  }

  // the central directory is what loaders go by: it must describe exactly the members we walked
  if (central.length === 0 && locals.size > 0) problems.push('the archive has members but no central directory');
  const names = new Set<string>();
  for (const entry of central) {
    if (names.has(entry.name)) problems.push(`the central directory names ${entry.name} twice`);
    names.add(entry.name);
    const local = locals.get(entry.offset);
    if (local === undefined) {
      problems.push(`the central directory points ${entry.name} at offset ${entry.offset}, where no member was found`);
      continue;
    }
    if (local.name !== entry.name) problems.push(`the central directory names ${JSON.stringify(entry.name)} where the local header says ${JSON.stringify(local.name)}`);
    if (local.method !== entry.method) problems.push(`${entry.name}: compression method ${entry.method} in the central directory, ${local.method} in the local header`);
    if (local.compressedSize !== entry.compressedSize) problems.push(`${entry.name}: ${entry.compressedSize} bytes in the central directory, ${local.compressedSize} found`);
  }
  return { members, problems };
}
