/**
 * Bounded fuzzing (fast-check) of the content analysers, which read hostile bytes by design: for ANY
 * input, cut into ANY chunks, the scanner never throws, always ends with one of the four verdicts,
 * does work proportional to the input (no hang), and keeps memory bounded however large the lengths
 * inside claim to be. An os.system payload stays unsafe whatever junk follows it.
 */
import { describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import fc from 'fast-check';
import { ByteMachine, ContentScanner, allowList, analyseBytes, verdictOf, walkPickles } from '../../src/content/index.ts';

const RUNS = Number(process.env['AIRLOCK_FUZZ_RUNS'] ?? 3000);
const LIMIT_MS = Number(process.env['AIRLOCK_FUZZ_MS'] ?? 2500);
const params = { numRuns: RUNS, interruptAfterTimeLimit: LIMIT_MS, markInterruptAsFailure: false };
const allow = allowList();

/** Bytes heavy on pickle opcodes, zip and GGUF magics, so the walkers get deep. */
const opcodeish = fc
  .array(
    fc.oneof(
      { weight: 5, arbitrary: fc.constantFrom(...'(}])ltdNKJMXUq0h2.Rbe\x80\x8c\x93\x94\x95cigpSVIa'.split('').map((c) => [c.charCodeAt(0)])) },
      { weight: 3, arbitrary: fc.uint8Array({ maxLength: 6 }).map((a) => [...a]) },
      { weight: 1, arbitrary: fc.constantFrom([...Buffer.from('os\nsystem\n')], [...Buffer.from('PK\x03\x04')], [...Buffer.from('PK\x01\x02')], [...Buffer.from('PK\x05\x06')], [...Buffer.from('GGUF\x03\x00\x00\x00')], [...Buffer.from('\x93NUMPY\x01\x00')], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]) },
    ),
    { maxLength: 200 },
  )
  .map((parts) => Uint8Array.from(parts.flat()));

const names = fc.constantFrom('x.pkl', 'pytorch_model.bin', 'm.pt', 'a.npy', 'b.npz', 'c.gguf', 'data', 'w.joblib');

function scanInChunks(name: string, bytes: Uint8Array, cuts: number[]): ReturnType<typeof verdictOf> {
  const scanner = new ContentScanner(name, bytes.byteLength);
  let at = 0;
  for (const cut of cuts) {
    if (at >= bytes.byteLength || scanner.done) break;
    const n = Math.max(1, cut);
    scanner.update(bytes.subarray(at, at + n));
    at += n;
  }
  if (at < bytes.byteLength && !scanner.done) scanner.update(bytes.subarray(at));
  return verdictOf(scanner.result(), allow);
}

describe('fuzz: content scanner', () => {
  test('any bytes in any chunks: no throw, one of four verdicts, chunking does not change it', () => {
    fc.assert(
      fc.property(names, fc.oneof(opcodeish, fc.uint8Array({ maxLength: 300 })), fc.array(fc.integer({ min: 1, max: 17 }), { maxLength: 40 }), (name, bytes, cuts) => {
        const whole = verdictOf(analyseBytes(name, bytes, 1 << 20), allow);
        const chunked = scanInChunks(name, bytes, cuts);
        assert.ok(['safe', 'unsafe', 'unscannable', 'no-code'].includes(whole.verdict));
        assert.deepEqual(chunked, whole);
      }),
      params,
    );
  });

  test('the walker does at most one opcode per input byte (no hang) and never throws', () => {
    fc.assert(
      fc.property(opcodeish, (bytes) => {
        const machine = new ByteMachine(walkPickles());
        machine.push(bytes);
        const scan = machine.done ? machine.result! : machine.end();
        assert.ok(scan.opcodes <= bytes.byteLength + 1, `${scan.opcodes} opcodes for ${bytes.byteLength} bytes`);
      }),
      params,
    );
  });

  test('an os.system payload stays unsafe whatever follows it', () => {
    const evil = Buffer.from('\x80\x02cos\nsystem\n\x8c\x02id\x85R.', 'latin1');
    fc.assert(
      fc.property(opcodeish, names, (junk, name) => {
        const v = verdictOf(analyseBytes(name.replace(/\.(npy|npz|gguf)$/, '.pkl'), Buffer.concat([evil, junk])), allow);
        assert.equal(v.verdict, 'unsafe');
        assert.ok(v.unsafeGlobals.includes('os.system'));
      }),
      params,
    );
  });

  test('lengths that claim exabytes cost nothing: skipped or refused, never allocated', () => {
    const before = process.memoryUsage().arrayBuffers;
    const huge = [
      Buffer.from('\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x0f', 'latin1'), // BINBYTES8 of 2^60
      Buffer.from('\x80\x04\x8d\xff\xff\xff\xff\xff\xff\x00\x00', 'latin1'), // BINUNICODE8
      Buffer.from('\x80\x02X\xff\xff\xff\x7f', 'latin1'), // BINUNICODE of 2 GiB
    ];
    for (const bytes of huge) {
      const v = verdictOf(analyseBytes('x.pkl', bytes), allow);
      assert.equal(v.verdict, 'unscannable', JSON.stringify(v));
    }
    // one text argument without its newline, fed in 1 MiB pieces: refused at the line cap, not buffered
    const scanner = new ContentScanner('x.pkl', 64 * 1024 * 1024);
    const piece = Buffer.alloc(1024 * 1024, 0x41);
    scanner.update(Buffer.from('cos\n'));
    for (let i = 0; i < 64 && !scanner.done; i++) scanner.update(piece);
    assert.equal(verdictOf(scanner.result(), allow).verdict, 'unscannable');
    assert.ok(process.memoryUsage().arrayBuffers - before < 16 * 1024 * 1024);
  });
});
