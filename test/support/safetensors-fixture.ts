/**
 * Test weights that pass the weight check: `safetensorsOf(bytes)` is a valid safetensors file of exactly
 * `bytes.length` bytes — one U8 tensor over a data region taken from the tail of `bytes` — so a fixture
 * keeps its size (and most of its content) while its header parses and covers the file.
 */
export function safetensorsOf(bytes: Buffer): Buffer {
  const size = bytes.length;
  // the header's length depends on the digits of the data size: search the data size that makes them agree
  const probe = (n: number): string => JSON.stringify({ w: { dtype: 'U8', shape: [n], data_offsets: [0, n] } });
  const guess = size - 8 - probe(0).length;
  for (let d = Math.max(0, guess - 64); d <= guess; d++) {
    let json = probe(d);
    json += ' '.repeat((8 - (json.length % 8)) % 8);
    if (8 + json.length + d === size) {
      const head = Buffer.alloc(8);
      head.writeBigUInt64LE(BigInt(json.length));
      return Buffer.concat([head, Buffer.from(json), bytes.subarray(size - d)]);
    }
  }
  throw new Error(`no safetensors layout of exactly ${size} bytes`);
}
