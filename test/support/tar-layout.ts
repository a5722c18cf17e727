/**
 * Walks a tar's 512-byte headers (ustar + pax) to find where each entry's header and data sit, so a
 * test can flip a byte exactly inside the signature, the manifest or a payload file.
 */
export interface TarEntryLayout {
  name: string;
  type: string;
  headerOffset: number;
  dataOffset: number;
  size: number;
}

function field(buf: Buffer, start: number, length: number): string {
  const raw = buf.subarray(start, start + length);
  const end = raw.indexOf(0);
  return raw.subarray(0, end === -1 ? raw.length : end).toString('utf8');
}

export function tarLayout(tar: Buffer): TarEntryLayout[] {
  const entries: TarEntryLayout[] = [];
  let offset = 0;
  let paxPath: string | undefined;
  while (offset + 512 <= tar.length) {
    const header = tar.subarray(offset, offset + 512);
    if (header.every((b) => b === 0)) break;
    const size = parseInt(field(header, 124, 12).trim() || '0', 8);
    const type = String.fromCharCode(header[156] || 48);
    const prefix = field(header, 345, 155);
    const base = field(header, 0, 100);
    const dataOffset = offset + 512;
    if (type === 'x') {
      const records = tar.subarray(dataOffset, dataOffset + size).toString('utf8');
      const m = /\d+ path=([^\n]*)\n/.exec(records);
      paxPath = m?.[1];
    } else {
      entries.push({ name: paxPath ?? (prefix ? `${prefix}/${base}` : base), type, headerOffset: offset, dataOffset, size });
      paxPath = undefined;
    }
    offset = dataOffset + Math.ceil(size / 512) * 512;
  }
  return entries;
}
