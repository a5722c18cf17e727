/**
 * A look at every raw tar header BEFORE the tar parser sees it (STYLE habits 7 and 10). tar-stream
 * buffers extended headers (pax 'x'/'g', GNU long names 'L'/'K') whole in memory, up to 4 MiB each, and
 * decodes a pax header into one object key per record: an attacker controls that size. The guard sees the
 * header block first and refuses, before a byte of the extended header is buffered:
 *
 *   - an extended header larger than MAX_EXTENDED_HEADER_BYTES (a name is at most 4096 bytes);
 *   - a pax global header (it would silently rename or resize every later entry; airlock never writes one);
 *   - a pax header with a `size` record, or with a malformed record (airlock only writes `path`/`linkpath`);
 *   - anything but zero bytes after the first all-zero block (the end-of-archive marker): no hidden
 *     second archive, no trailing garbage.
 *
 * Pure and incremental: `push(chunk)` in order, any chunking; it keeps at most one header block and one
 * capped extended header. It tracks entry boundaries exactly as tar-stream does (a directory's data is
 * not skipped there either), so it looks at the very blocks the parser will read as headers.
 */

export const MAX_EXTENDED_HEADER_BYTES = 64 * 1024;
const BLOCK = 512;

export class TarGuardError extends Error {
  override readonly name = 'TarGuardError';
  /** Offset of the offending header block in the tar. */
  readonly offset: number;
  constructor(message: string, offset: number) {
    super(message);
    this.offset = offset;
  }
}

/** tar-stream's decodeOct: base-256 when the high bit is set, else octal with leading spaces/NULs. */
export function decodeTarNumber(field: Uint8Array): number {
  if (field.length > 0 && (field[0]! & 0x80) !== 0) {
    // base-256, big-endian, marked by 0x80 (0xff would be negative: never a valid size)
    if (field[0] !== 0x80) return -1;
    let value = 0;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    return value;
  }
  let start = 0;
  while (start < field.length && field[start] === 32) start++;
  let end = field.indexOf(32, start);
  if (end === -1) end = field.length;
  while (start < end && field[start] === 0) start++;
  if (end === start) return 0;
  return parseInt(Buffer.from(field.subarray(start, end)).toString('latin1'), 8);
}

function checksumOk(block: Uint8Array): boolean {
  let sum = 8 * 32;
  for (let i = 0; i < 148; i++) sum += block[i]!;
  for (let i = 156; i < BLOCK; i++) sum += block[i]!;
  return sum === decodeTarNumber(block.subarray(148, 156));
}

/** Pax records `<len> <key>=<value>\n`, strictly; returns the keys or a reason. */
export function paxKeys(data: Uint8Array): string[] | string {
  const keys: string[] = [];
  let at = 0;
  while (at < data.length) {
    let space = at;
    while (space < data.length && data[space] !== 32) space++;
    const lenText = Buffer.from(data.subarray(at, space)).toString('latin1');
    if (!/^[1-9][0-9]{0,8}$/.test(lenText)) return `bad pax record length ${JSON.stringify(lenText.slice(0, 20))}`;
    const len = Number(lenText);
    if (at + len > data.length || len < lenText.length + 3) return 'pax record runs past its header';
    if (data[at + len - 1] !== 10) return 'pax record does not end in a newline';
    const record = Buffer.from(data.subarray(space + 1, at + len - 1)).toString('utf8');
    const eq = record.indexOf('=');
    if (eq <= 0) return 'pax record without "key="';
    keys.push(record.slice(0, eq));
    at += len;
  }
  return keys;
}

type State =
  | { kind: 'header' }
  /** skipping data (and padding) of an ordinary entry */
  | { kind: 'skip'; left: number }
  /** collecting an extended header's data (capped), then its padding */
  | { kind: 'extended'; type: number; size: number; at: number; chunks: Buffer[]; got: number }
  /** after the end-of-archive block: zeros only */
  | { kind: 'end' };

export class TarGuard {
  #state: State = { kind: 'header' };
  #offset = 0;
  #partial: Buffer[] = [];
  #partialBytes = 0;

  /** Inspects the next bytes of the tar; throws TarGuardError at the first thing it refuses. */
  push(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length) {
      const state = this.#state;
      switch (state.kind) {
        case 'end': {
          for (let i = at; i < chunk.length; i++) {
            if (chunk[i] !== 0) throw new TarGuardError(`non-zero data after the end-of-archive marker, at byte ${this.#offset + i - at}`, this.#offset + i - at);
          }
          this.#offset += chunk.length - at;
          at = chunk.length;
          break;
        }
        case 'skip': {
          const take = Math.min(state.left, chunk.length - at);
          state.left -= take;
          at += take;
          this.#offset += take;
          if (state.left === 0) this.#state = { kind: 'header' };
          break;
        }
        case 'extended': {
          const padded = Math.ceil(state.size / BLOCK) * BLOCK;
          const take = Math.min(padded - state.got, chunk.length - at);
          const dataLeft = Math.max(0, state.size - state.got);
          if (dataLeft > 0) state.chunks.push(Buffer.from(chunk.subarray(at, at + Math.min(take, dataLeft))));
          state.got += take;
          at += take;
          this.#offset += take;
          if (state.got === padded) {
            this.#extendedDone(state);
            this.#state = { kind: 'header' };
          }
          break;
        }
        case 'header': {
          const take = Math.min(BLOCK - this.#partialBytes, chunk.length - at);
          this.#partial.push(Buffer.from(chunk.subarray(at, at + take)));
          this.#partialBytes += take;
          at += take;
          if (this.#partialBytes === BLOCK) {
            const block = Buffer.concat(this.#partial);
            this.#partial = [];
            this.#partialBytes = 0;
            this.#header(block);
            this.#offset += BLOCK;
          }
          break;
        }
      }
    }
  }

  #header(block: Buffer): void {
    const offset = this.#offset;
    if (block.every((b) => b === 0)) {
      this.#state = { kind: 'end' };
      return;
    }
    // a bad checksum: tar-stream refuses this block itself; stop here so we say why
    if (!checksumOk(block)) throw new TarGuardError(`invalid tar header checksum at byte ${offset}`, offset);
    const typeflag = block[156] === 0 ? 0 : block[156]! - 48;
    const size = decodeTarNumber(block.subarray(124, 136));
    if (!Number.isSafeInteger(size) || size < 0) throw new TarGuardError(`invalid entry size in the tar header at byte ${offset}`, offset);
    const flag = String.fromCharCode(block[156]!);
    switch (flag) {
      case 'g':
        throw new TarGuardError(`a pax global header at byte ${offset}: airlock bundles never hold one`, offset);
      case 'x':
      case 'L':
      case 'K':
        if (size > MAX_EXTENDED_HEADER_BYTES) {
          throw new TarGuardError(`an extended tar header of ${size} bytes at byte ${offset}; the limit is ${MAX_EXTENDED_HEADER_BYTES}`, offset);
        }
        this.#state = size === 0 ? { kind: 'header' } : { kind: 'extended', type: block[156]!, size, at: offset, chunks: [], got: 0 };
        return;
      default:
        break;
    }
    // tar-stream treats a directory (flag 5, or flag 0 with a name ending in '/') as having no data
    const nameEnd = block.indexOf(0);
    const name = block.subarray(0, nameEnd === -1 || nameEnd > 100 ? 100 : nameEnd);
    const directory = typeflag === 5 || (typeflag === 0 && name.length > 0 && name[name.length - 1] === 0x2f);
    const data = directory ? 0 : Math.ceil(size / BLOCK) * BLOCK;
    this.#state = data === 0 ? { kind: 'header' } : { kind: 'skip', left: data };
  }

  #extendedDone(state: Extract<State, { kind: 'extended' }>): void {
    if (String.fromCharCode(state.type) !== 'x') return;
    const keys = paxKeys(Buffer.concat(state.chunks));
    if (typeof keys === 'string') throw new TarGuardError(`malformed pax header at byte ${state.at}: ${keys}`, state.at);
    // airlock writes only path/linkpath: a size record would make the parser disagree with the header block
    if (keys.includes('size')) throw new TarGuardError(`a pax header at byte ${state.at} overrides the entry size; airlock bundles never do`, state.at);
  }
}
