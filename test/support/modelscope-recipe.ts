/** Decodes ModelScope's pickled .msc / .mdl files strictly by the spec's byte recipe (for tests). */
import * as assert from 'node:assert/strict';

/** Walks the §3.3 byte recipe by hand: returns the strings in order, failing on any other byte. */
export function walkRecipe(bytes: Buffer, kind: 'msc' | 'mdl'): string[][] {
  let pos = 0;
  const expect = (...want: number[]): void => {
    for (const b of want) {
      assert.equal(bytes[pos], b, `byte ${pos}: expected 0x${b.toString(16)}, got 0x${(bytes[pos] ?? -1).toString(16)}`);
      pos++;
    }
  };
  const str = (): string => {
    expect(0x58);
    const n = bytes.readUInt32LE(pos);
    pos += 4;
    const s = bytes.subarray(pos, pos + n).toString('utf8');
    assert.equal(Buffer.byteLength(s), n, 'BINUNICODE length is the UTF-8 byte length');
    pos += n;
    return s;
  };
  const out: string[][] = [];
  if (kind === 'mdl') {
    expect(0x80, 0x02, 0x7d, 0x28);
    out.push([str(), str()]);
    expect(0x75, 0x2e);
  } else {
    expect(0x80, 0x02, 0x5d, 0x28);
    while (bytes[pos] === 0x7d) {
      expect(0x7d, 0x28);
      out.push([str(), str(), str(), str()]);
      expect(0x75);
    }
    expect(0x65, 0x2e);
  }
  assert.equal(pos, bytes.length, 'no trailing bytes');
  return out;
}
