import * as assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { checkSafetensors, checkShardIndex, SafetensorsPrefix, SAFETENSORS_DTYPE_BITS } from '../../src/integrity/safetensors.js';

interface Tensor {
  name: string;
  dtype: string;
  shape: number[];
}

const BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, I64: 8, U8: 1, BOOL: 1, F64: 8 };

/** A real safetensors file: tensors laid out in order, header padded with spaces to 8 bytes like the library. */
function build(tensors: Tensor[], options: { metadata?: Record<string, string>; editHeader?: (h: Record<string, unknown>) => void } = {}): Buffer {
  // no prototype: a tensor named "__proto__" must become a key of the JSON, not this object's prototype
  const header: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  if (options.metadata !== undefined) header['__metadata__'] = options.metadata;
  let offset = 0;
  const datas: Buffer[] = [];
  for (const t of tensors) {
    const size = t.shape.reduce((a, d) => a * d, 1) * (BYTES[t.dtype] ?? 1);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    datas.push(Buffer.alloc(size, 0x11));
    offset += size;
  }
  options.editHeader?.(header);
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([len, Buffer.from(json), ...datas]);
}

const SAMPLE: Tensor[] = [
  { name: 'embed.weight', dtype: 'BF16', shape: [16, 8] },
  { name: 'norm.weight', dtype: 'F32', shape: [8] },
  { name: 'lm_head.weight', dtype: 'BF16', shape: [16, 8] },
  { name: 'scalar', dtype: 'I64', shape: [] },
  { name: 'empty', dtype: 'F16', shape: [0, 4] },
];

function problemsOf(bytes: Buffer, size = bytes.length): string[] {
  const r = checkSafetensors(bytes, size);
  assert.equal(r.status, 'invalid', JSON.stringify(r));
  return r.status === 'invalid' ? r.problems : [];
}

describe('checkSafetensors', () => {
  it('summarises a valid file: tensor count, dtypes, parameters, metadata', () => {
    const file = build(SAMPLE, { metadata: { format: 'pt' } });
    const r = checkSafetensors(file, file.length);
    assert.equal(r.status, 'ok');
    if (r.status !== 'ok') return;
    assert.equal(r.summary.tensorCount, 5);
    assert.deepEqual(r.summary.dtypes, { BF16: 2, F32: 1, I64: 1, F16: 1 });
    assert.equal(r.summary.parameterCount, 128 + 8 + 128 + 1 + 0);
    assert.deepEqual(r.summary.metadata, { format: 'pt' });
  });

  it('asks for exactly the prefix it needs', () => {
    const file = build(SAMPLE);
    const n = Number(file.readBigUInt64LE(0));
    assert.deepEqual(checkSafetensors(file.subarray(0, 3), file.length), { status: 'need-more', needBytes: 8 });
    assert.deepEqual(checkSafetensors(file.subarray(0, 8), file.length), { status: 'need-more', needBytes: 8 + n });
    assert.equal(checkSafetensors(file.subarray(0, 8 + n), file.length).status, 'ok');
  });

  it('catches a truncated shard', () => {
    const file = build(SAMPLE);
    assert.match(problemsOf(file, file.length - 1).join(), /truncated shard/);
    const n = Number(file.readBigUInt64LE(0));
    assert.match(problemsOf(file.subarray(0, 20), 20).join(), /truncated/);
    assert.match(problemsOf(file.subarray(0, 8 + n), 8 + n).join(), /truncated shard/);
    assert.match(problemsOf(Buffer.alloc(5), 5).join(), /shorter than/);
  });

  it('catches gaps, overlaps, trailing bytes, wrong sizes and bad dtypes', () => {
    const gap = build(SAMPLE, { editHeader: (h) => ((h['norm.weight'] as { data_offsets: number[] }).data_offsets = [260, 292]) });
    assert.ok(problemsOf(gap).length > 0);
    const overlap = build([{ name: 'a', dtype: 'U8', shape: [4] }, { name: 'b', dtype: 'U8', shape: [4] }], {
      editHeader: (h) => ((h['b'] as { data_offsets: number[] }).data_offsets = [2, 6]),
    });
    assert.match(problemsOf(overlap).join(), /overlaps/);
    const extra = Buffer.concat([build(SAMPLE), Buffer.alloc(3)]);
    assert.match(problemsOf(extra).join(), /3 bytes after the last tensor/);
    const wrongSize = build(SAMPLE, { editHeader: (h) => ((h['norm.weight'] as { shape: number[] }).shape = [9]) });
    assert.match(problemsOf(wrongSize).join(), /needs 36 bytes/);
    const badDtype = build(SAMPLE, { editHeader: (h) => ((h['scalar'] as { dtype: string }).dtype = 'Q4') });
    assert.match(problemsOf(badDtype).join(), /unknown dtype "Q4"/);
    const notJson = Buffer.concat([Buffer.from([4, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{x: ')]);
    assert.match(problemsOf(notJson).join(), /not UTF-8 JSON/);
  });

  it('caps the header length', () => {
    const head = Buffer.alloc(8);
    head.writeBigUInt64LE(2n ** 40n);
    assert.match(problemsOf(head, 2 ** 41).join(), /limit/);
    assert.match(JSON.stringify(checkSafetensors(build(SAMPLE), build(SAMPLE).length, { maxHeaderBytes: 16 })), /limit/);
  });

  it('SafetensorsPrefix keeps only the prefix, whatever the chunking', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 97 }), { minLength: 1, maxLength: 40 }), (cuts) => {
        const file = build(SAMPLE);
        const p = new SafetensorsPrefix(file.length);
        let at = 0;
        for (const c of cuts) {
          p.update(file.subarray(at, at + c));
          at += c;
          if (at >= file.length) break;
        }
        if (at < file.length) p.update(file.subarray(at));
        assert.equal(p.result().status, 'ok');
      }),
    );
    const truncated = new SafetensorsPrefix(1000);
    truncated.update(Buffer.from([1, 0]));
    assert.match(JSON.stringify(truncated.result()), /ended after 2 bytes/);
  });
});

const dtypeArb = fc.constantFrom(...Object.keys(BYTES));
const tensorsArb = fc.uniqueArray(
  fc.record({ name: fc.string({ minLength: 1, maxLength: 12 }).filter((s) => s !== '__metadata__'), dtype: dtypeArb, shape: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 3 }) }),
  { selector: (t) => t.name, maxLength: 12 },
);

describe('checkSafetensors properties', () => {
  it('a tensor named __proto__ is a tensor like any other (seen by the property below, seed 544095575)', () => {
    const file = build([{ name: '__proto__', dtype: 'F32', shape: [] }, { name: 'b', dtype: 'U8', shape: [3] }]);
    const r = checkSafetensors(file, file.length);
    assert.equal(r.status, 'ok', JSON.stringify(r));
    if (r.status === 'ok') assert.equal(r.summary.tensorCount, 2);
  });

  it('every well-formed file passes, with the right count and dtypes', () => {
    fc.assert(
      fc.property(tensorsArb, (tensors) => {
        const file = build(tensors);
        const r = checkSafetensors(file, file.length);
        assert.equal(r.status, 'ok', JSON.stringify(r));
        if (r.status === 'ok') {
          assert.equal(r.summary.tensorCount, tensors.length);
          assert.equal(Object.values(r.summary.dtypes).reduce((a, b) => a + b, 0), tensors.length);
        }
      }),
    );
  });

  it('any truncation or extension of the data region is caught', () => {
    fc.assert(
      fc.property(tensorsArb, fc.integer({ min: -64, max: 64 }).filter((d) => d !== 0), (tensors, delta) => {
        const file = build(tensors);
        const size = file.length + delta;
        const r = checkSafetensors(file.subarray(0, Math.max(0, Math.min(file.length, size))), Math.max(0, size));
        assert.notEqual(r.status, 'ok');
      }),
    );
  });

  it('moving any tensor boundary is caught', () => {
    fc.assert(
      fc.property(
        tensorsArb.filter((ts) => ts.some((t) => t.shape.reduce((a, d) => a * d, 1) > 0)),
        fc.nat(),
        fc.constantFrom(0, 1),
        fc.integer({ min: 1, max: 3 }),
        (tensors, pick, which, shift) => {
          const sized = tensors.filter((t) => t.shape.reduce((a, d) => a * d, 1) > 0);
          const target = sized[pick % sized.length]!;
          const file = build(tensors, {
            editHeader: (h) => {
              const offsets = (h[target.name] as { data_offsets: number[] }).data_offsets;
              offsets[which] = Math.max(0, offsets[which]! + (which === 0 ? shift : -shift));
            },
          });
          assert.notEqual(checkSafetensors(file, file.length).status, 'ok');
        },
      ),
    );
  });

  it('never throws on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat({ max: 1000 }), (bytes, extra) => {
        checkSafetensors(bytes, bytes.length + extra);
      }),
    );
  });

  it('knows every dtype the builder uses', () => {
    for (const d of Object.keys(BYTES)) assert.equal(SAFETENSORS_DTYPE_BITS[d], BYTES[d]! * 8);
  });
});

describe('checkShardIndex', () => {
  const index = {
    metadata: { total_size: 123 },
    weight_map: { 'a.weight': 'model-00001-of-00002.safetensors', 'b.weight': 'model-00002-of-00002.safetensors', 'c.weight': 'model-00001-of-00002.safetensors' },
  };
  it('finds every shard and names the missing ones', () => {
    assert.deepEqual(checkShardIndex(index, ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']), {
      shards: ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'],
      missing: [],
      problems: [],
    });
    assert.deepEqual(checkShardIndex(JSON.stringify(index), ['model-00001-of-00002.safetensors']).missing, ['model-00002-of-00002.safetensors']);
  });
  it('resolves shards relative to the index directory and refuses unsafe names', () => {
    const r = checkShardIndex(Buffer.from(JSON.stringify(index)), ['sub/model-00001-of-00002.safetensors'], 'sub/model.safetensors.index.json');
    assert.deepEqual(r.missing, ['sub/model-00002-of-00002.safetensors']);
    assert.match(checkShardIndex({ weight_map: { x: '../../etc/passwd' } }, []).problems.join(), /not a safe path/);
    assert.match(checkShardIndex('{', []).problems.join(), /not UTF-8 JSON/);
    assert.match(checkShardIndex({ metadata: {} }, []).problems.join(), /no "weight_map"/);
  });
});
