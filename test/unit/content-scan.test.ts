/**
 * Content analysis (issue 17): real files written by the venv's torch / numpy / transformers / joblib /
 * gguf are judged safe or no-code; hostile files built here, one per known technique, are judged unsafe
 * or unscannable. For raw pickles, Python itself is the oracle: a recording Unpickler (its find_class
 * records and returns a harmless stand-in, so nothing is imported) lists the globals a real load would
 * ask for, and the walker must name every one of them.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { analyseBytes, allowList, verdictOf, pickleImportScan, type ContentVerdict } from '../../src/content/index.ts';
import { runPython } from '../support/python.ts';

const allow = allowList();
const judge = (name: string, bytes: Uint8Array, chunk?: number): ContentVerdict => verdictOf(analyseBytes(name, bytes, chunk), allow);

let dir = "";
const file = (name: string): Promise<Buffer> => readFile(join(dir, name));

// --- pickle building blocks (opcode bytes), for hostile files
const b = (...parts: Array<string | number[] | Uint8Array>): Buffer =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p))));
const short = (s: string): Buffer => b([0x8c, s.length], s); // SHORT_BINUNICODE
const binunicode = (s: string): Buffer => b('X', [s.length, 0, 0, 0], s);
const arg = b(short('id'), [0x85]); // ('id',) TUPLE1
const REDUCE = 'R';
const STOP = '.';

const hostile: Record<string, { bytes: Buffer; expect: string[] }> = {
  'GLOBAL os.system (protocol 2)': { bytes: b([0x80, 2], 'cos\nsystem\n', arg, REDUCE, STOP), expect: ['os.system'] },
  'GLOBAL posix.system (protocol 0)': { bytes: b("cposix\nsystem\n(S'id'\ntR."), expect: ['posix.system'] },
  'STACK_GLOBAL with operands through BINPUT/BINGET': {
    bytes: b([0x80, 4], short('os'), 'q', [5], '0', short('system'), 'q', [7], '0', 'h', [5], 'h', [7], [0x93], arg, REDUCE, STOP),
    expect: ['os.system'],
  },
  'STACK_GLOBAL through MEMOIZE colliding with a sparse BINPUT': {
    // memo {1:"collections"}; MEMOIZE stores "os" at len(memo) = 1 (overwriting it, not at 0); BINPUT 0 "system"
    bytes: b([0x80, 4], short('collections'), 'q', [1], '0', short('os'), [0x94], '0', short('system'), 'q', [0], '0', 'h', [1], 'h', [0], [0x93], arg, REDUCE, STOP),
    expect: ['os.system'],
  },
  'STACK_GLOBAL through LONG_BINPUT/LONG_BINGET and DUP': {
    bytes: b([0x80, 4], binunicode('subprocess'), 'r', [0, 1, 0, 0], '0', short('check_output'), 'q', [3], '0', 'j', [0, 1, 0, 0], '2', '0', 'h', [3], [0x93], arg, REDUCE, STOP),
    expect: ['subprocess.check_output'],
  },
  'INST os.system': { bytes: b("(S'id'\nios\nsystem\n."), expect: ['os.system'] },
  'builtins.eval / exec / getattr / __import__': {
    bytes: b(
      [0x80, 2],
      'c__builtin__\neval\n', arg, REDUCE, '0',
      'cbuiltins\nexec\n', arg, REDUCE, '0',
      'cbuiltins\ngetattr\n', arg, REDUCE, '0',
      'cbuiltins\n__import__\n', arg, REDUCE, STOP,
    ),
    expect: ['builtins.eval', 'builtins.exec', 'builtins.getattr', 'builtins.__import__'],
  },
  'importlib.import_module + inspect.getattr_static': {
    bytes: b([0x80, 4], short('inspect'), short('getattr_static'), [0x93], short('importlib'), short('import_module'), [0x93], short('os'), [0x85], REDUCE, short('system'), [0x86], REDUCE, arg, REDUCE, STOP),
    expect: ['importlib.import_module', 'inspect.getattr_static'],
  },
  'pip.main': { bytes: b([0x80, 2], 'cpip\nmain\n', arg, REDUCE, STOP), expect: ['pip.main'] },
  'runpy / cProfile.run / _operator.attrgetter': {
    bytes: b([0x80, 2], 'crunpy\n_run_code\n', arg, REDUCE, '0', 'ccProfile\nrun\n', arg, REDUCE, '0', 'c_operator\nattrgetter\n', arg, REDUCE, STOP),
    expect: ['runpy._run_code', 'cProfile.run', '_operator.attrgetter'],
  },
  'a second pickle after a benign one': { bytes: b([0x80, 2], 'N.', [0x80, 2], 'cos\nsystem\n', arg, REDUCE, STOP), expect: ['os.system'] },
  'the payload nested in a dict of lists': {
    bytes: b([0x80, 2], '}', short('layers'), ']', '(', 'K', [1], 'K', [2], 'cos\nsystem\n', arg, REDUCE, 'e', 's', STOP),
    expect: ['os.system'],
  },
  'an extension code (copyreg registry)': { bytes: b([0x80, 2], [0x82, 7], arg, REDUCE, STOP), expect: [] },
};

/** The globals Python's own unpickler asks find_class for, nothing imported (a stand-in is returned). */
async function pythonGlobals(blobs: Record<string, Buffer>): Promise<Record<string, string[]>> {
  const input = join(dir, 'oracle.json');
  await writeFile(input, JSON.stringify(Object.fromEntries(Object.entries(blobs).map(([k, v]) => [k, v.toString('hex')]))));
  const run = await runPython(
    `
import io, json, pickle, sys
class Rec(pickle.Unpickler):
    def find_class(self, module, name):
        self.seen.append(module + "." + name)
        return lambda *a, **k: ("stand-in", a)
out = {}
for key, hexed in json.load(open(${JSON.stringify(input)})).items():
    f = io.BytesIO(bytes.fromhex(hexed)); seen = []
    while f.tell() < len(f.getbuffer()):
        u = Rec(f); u.seen = seen
        try: u.load()
        except Exception as e: seen.append("error:" + type(e).__name__); break
    out[key] = seen
print(json.dumps(out))
`,
    {},
  );
  assert.equal(run.code, 0, run.stderr);
  return JSON.parse(run.stdout) as Record<string, string[]>;
}

after(async () => {
  if (dir !== "") await rm(dir, { recursive: true, force: true });
});

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-content-'));
  const made = await runPython(
    `
import collections, os, pickle, numpy as np, torch, joblib, gguf
os.chdir(${JSON.stringify(dir)})
sd = collections.OrderedDict(w=torch.randn(3, 4), b=torch.zeros(4, dtype=torch.bfloat16), i=torch.arange(5))
torch.save(sd, "state.pt")
torch.save(sd, "legacy.pt", _use_new_zipfile_serialization=False)
torch.save({"w": torch.nn.Parameter(torch.ones(2)), "h": torch.ones(2, dtype=torch.float16)}, "params.ckpt")
np.save("plain.npy", np.arange(10))
np.save("objects.npy", np.array([1, "a", None, 2.5], dtype=object), allow_pickle=True)
np.savez("arrays.npz", a=np.arange(3), b=np.ones(2))
np.savez_compressed("mixed.npz", a=np.arange(3), o=np.array([{"k": 1}], dtype=object))
joblib.dump({"w": [1, 2, 3]}, "model.joblib", compress=3)
from transformers import BertConfig, BertModel
cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
model = BertModel(cfg)
model.save_pretrained("bert", safe_serialization=False)
# transformers 5 writes safetensors whatever the flag; write what transformers 4 wrote for safe_serialization=False
if not os.path.exists("bert/pytorch_model.bin"):
    os.remove("bert/model.safetensors")
    torch.save(model.state_dict(), "bert/pytorch_model.bin")
w = gguf.GGUFWriter("tiny.gguf", "llama")
w.add_uint32("llama.block_count", 1)
w.add_string("tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}")
w.add_tensor("tok_embd.weight", np.ones((4, 8), dtype=np.float32))
w.add_tensor("out.weight", np.ones((8,), dtype=np.float16))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
w = gguf.GGUFWriter("evil-template.gguf", "llama")
w.add_string("tokenizer.chat_template", "{{ ''.__class__.__mro__[1].__subclasses__() }}")
w.add_tensor("a", np.ones((32,), dtype=np.float32))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
print(sorted(os.listdir("bert")))
`,
    {},
    { timeoutMs: 300_000 },
  );
  assert.equal(made.code, 0, made.stderr);
});

describe('content: real files from torch, numpy, transformers, joblib, gguf', () => {
  test('torch.save (zip), legacy format and a Parameter checkpoint are safe, naming only allow-listed globals', async () => {
    for (const [name, format] of [['state.pt', 'torch-zip'], ['legacy.pt', 'torch-legacy'], ['params.ckpt', 'torch-zip']] as const) {
      for (const chunk of [1 << 20, 7]) {
        const v = judge(name, await file(name), chunk);
        assert.equal(v.verdict, 'safe', `${name}: ${JSON.stringify(v)}`);
        assert.equal(v.format, format);
        assert.ok(v.globals.includes('torch._utils._rebuild_tensor_v2'), v.globals.join());
      }
    }
  });

  test('transformers save_pretrained(safe_serialization=False) writes a safe pytorch_model.bin', async () => {
    const v = judge('pytorch_model.bin', await file('bert/pytorch_model.bin'));
    assert.equal(v.verdict, 'safe', JSON.stringify(v));
    assert.equal(v.format, 'torch-zip');
    assert.equal(judge('config.json', await file('bert/config.json')).verdict, 'no-code');
  });

  test('numpy: plain arrays carry no code; object arrays (and .npz of them) are safe pickles of numpy reconstruction', async () => {
    assert.equal(judge('plain.npy', await file('plain.npy')).verdict, 'no-code');
    assert.equal(judge('arrays.npz', await file('arrays.npz')).verdict, 'no-code');
    for (const name of ['objects.npy', 'mixed.npz']) {
      const v = judge(name, await file(name));
      assert.equal(v.verdict, 'safe', `${name}: ${JSON.stringify(v)}`);
      assert.ok(v.globals.some((g) => g.endsWith('multiarray._reconstruct')), v.globals.join());
    }
  });

  test('compressed joblib is unscannable', async () => {
    const v = judge('model.joblib', await file('model.joblib'));
    assert.equal(v.verdict, 'unscannable');
    assert.match(v.problems.join(), /compressed/);
  });

  test('a GGUF from the gguf writer passes its structure checks; a template reaching for internals is reported', async () => {
    const ok = judge('tiny.gguf', await file('tiny.gguf'));
    assert.equal(ok.verdict, 'no-code', JSON.stringify(ok));
    assert.deepEqual(ok.notes, []);
    const evil = judge('evil.gguf', await file('evil-template.gguf'));
    assert.equal(evil.verdict, 'no-code');
    assert.match(evil.notes.join(), /__class__.*__subclasses__|__subclasses__/);
  });

  test('the Hub shape: innocuous imports for a safe file, dangerous ones named for an unsafe one', async () => {
    const safe = pickleImportScan(judge('state.pt', await file('state.pt')));
    assert.equal(safe?.highestSafetyLevel, 'innocuous');
    assert.ok(safe?.imports.some((i) => i.module === 'collections' && i.name === 'OrderedDict' && i.safety === 'innocuous'));
    const bad = pickleImportScan(judge('x.pkl', hostile['GLOBAL os.system (protocol 2)']!.bytes));
    assert.deepEqual(bad, { highestSafetyLevel: 'dangerous', imports: [{ module: 'os', name: 'system', safety: 'dangerous' }] });
    assert.equal(pickleImportScan(judge('plain.npy', await file('plain.npy'))), undefined);
  });
});

describe('content: hostile pickles, one per technique', () => {
  test('each is unsafe and names what Python itself would import', async () => {
    const oracle = await pythonGlobals(Object.fromEntries(Object.entries(hostile).map(([k, v]) => [k, v.bytes])));
    for (const [name, { bytes, expect }] of Object.entries(hostile)) {
      for (const [path, chunk] of [['evil.pkl', 1 << 20], ['weights.bin', 1], ['model.data', 3]] as const) {
        const v = judge(path, bytes, chunk);
        assert.equal(v.verdict, 'unsafe', `${name} as ${path}: ${JSON.stringify(v)}`);
        for (const g of expect) assert.ok(v.unsafeGlobals.includes(g), `${name}: ${g} not named in ${v.unsafeGlobals.join()}`);
        // every import Python asked for is named by the walker
        for (const g of oracle[name]!.filter((s) => !s.startsWith('error:'))) {
          const normal = g.replace(/^__builtin__\./, 'builtins.');
          assert.ok(v.globals.includes(normal), `${name}: Python imports ${g}, the walker missed it (${v.globals.join()})`);
        }
      }
    }
    assert.ok(judge('x.pkl', hostile['an extension code (copyreg registry)']!.bytes).unsafeGlobals[0]!.startsWith('<extension code'));
  });

  test('an object .npy carrying os.system is unsafe', async () => {
    const npy = await file('objects.npy');
    const headerEnd = 10 + npy.readUInt16LE(8);
    const evil = Buffer.concat([npy.subarray(0, headerEnd), hostile['GLOBAL os.system (protocol 2)']!.bytes]);
    assert.deepEqual(judge('data.npy', evil).unsafeGlobals, ['os.system']);
  });

  test('truncated and garbage pickles are unscannable (or unsafe once a bad global was read)', async () => {
    const legacy = await file('legacy.pt');
    assert.equal(judge('legacy.pt', legacy.subarray(0, 100)).verdict, 'unscannable');
    const evil = hostile['GLOBAL os.system (protocol 2)']!.bytes;
    assert.equal(judge('evil.pkl', evil.subarray(0, evil.length - 3)).verdict, 'unsafe');
    const garbage = Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 73 + 11) & 0xff));
    for (const name of ['garbage.pkl', 'garbage.pt', 'garbage.ckpt']) assert.equal(judge(name, garbage).verdict, 'unscannable', name);
    assert.equal(judge('evil.pkl', b([0x80, 9], 'N.')).verdict, 'unscannable');
    // a stream that fails where Python would, before any import, is plain data when nothing claims it is a pickle
    assert.equal(judge('openvino_model.bin', garbage).verdict, 'no-code');
  });

  test('random data under generic names is never mistaken for a pickle (no false refusals)', () => {
    let state = 0x9e3779b9;
    const next = (): number => {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return state >>> 0;
    };
    for (let i = 0; i < 2000; i++) {
      const bytes = Buffer.alloc(256);
      for (let j = 0; j < bytes.length; j += 4) bytes.writeUInt32LE(next(), j);
      for (const name of ['weights.bin', 'data', 'shard-00001']) {
        const v = judge(name, bytes);
        assert.equal(v.verdict, 'no-code', `${name} #${i} ${bytes.subarray(0, 16).toString('hex')}: ${JSON.stringify(v)}`);
      }
    }
  });
});

describe('content: zip tricks on a real torch checkpoint', () => {
  const evilPickle = (): Buffer => hostile['GLOBAL os.system (protocol 2)']!.bytes;

  async function zipVariant(script: string, name: string): Promise<Buffer> {
    const run = await runPython(
      `
import shutil, zipfile, os
os.chdir(${JSON.stringify(dir)})
evil = bytes.fromhex(${JSON.stringify(evilPickle().toString('hex'))})
${script}
`,
      {},
    );
    assert.equal(run.code, 0, run.stderr);
    return file(name);
  }

  test('an extra member holding a pickle (any name, any extension) is found', async () => {
    const bytes = await zipVariant(
      `shutil.copy("state.pt", "extra.pt")
with zipfile.ZipFile("extra.pt", "a") as z: z.writestr("state/extra_data", evil)`,
      'extra.pt',
    );
    for (const name of ['extra.pt', 'model.weights', 'checkpoint']) assert.deepEqual(judge(name, bytes).unsafeGlobals, ['os.system'], name);
  });

  test('a central-directory name that differs from the local header: unsafe or unscannable, never safe', async () => {
    const base = await zipVariant(`shutil.copy("state.pt", "renamed.pt")
with zipfile.ZipFile("renamed.pt", "a") as z: z.writestr("state/evil.pkl", evil)`, 'renamed.pt');
    const bytes = Buffer.from(base);
    // local header says evil.txt; the central directory (what torch reads) still says evil.pkl
    const local = bytes.indexOf('state/evil.pkl');
    bytes.write('state/evil.txt', local, 'latin1');
    const v = judge('renamed.pt', bytes);
    assert.equal(v.verdict, 'unsafe', JSON.stringify(v));
    assert.match(v.problems.join(), /central directory names "state\/evil\.pkl" where the local header says "state\/evil\.txt"/);
    // a benign checkpoint with the same mismatch: unscannable
    const benign = Buffer.from(await file('state.pt'));
    benign.write('state/data.pkx', benign.indexOf('state/data.pkl'), 'latin1');
    assert.equal(judge('state.pt', benign).verdict, 'unscannable');
  });

  test('bad CRCs and odd flag bits do not stop the analysis (PyTorch ignores them too)', async () => {
    const bytes = Buffer.from(await zipVariant(`shutil.copy("state.pt", "crc.pt")
with zipfile.ZipFile("crc.pt", "a") as z: z.writestr("state/payload.pkl", evil)`, 'crc.pt'));
    for (let at = bytes.indexOf('PK\x03\x04'); at >= 0; at = bytes.indexOf('PK\x03\x04', at + 4)) {
      bytes.writeUInt32LE(0xdeadbeef, at + 14); // crc
      bytes.writeUInt16LE(bytes.readUInt16LE(at + 6) | 0x0006, at + 6); // flag bits 1, 2
    }
    assert.deepEqual(judge('crc.pt', bytes).unsafeGlobals, ['os.system']);
    const benign = Buffer.from(await file('state.pt'));
    benign.writeUInt32LE(0xdeadbeef, benign.indexOf('PK\x03\x04') + 14);
    assert.equal(judge('state.pt', benign).verdict, 'safe');
  });

  test('deflated members: data is skipped from its inflated start, a deflated pickle is inflated and walked', async () => {
    const bytes = await zipVariant(
      `with zipfile.ZipFile("deflated.zip", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("blob.bin", os.urandom(300000))
    z.writestr("inner/payload", evil)
with zipfile.ZipFile("deflated-benign.zip", "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("blob.bin", os.urandom(300000))`,
      'deflated.zip',
    );
    assert.deepEqual(judge('deflated.zip', bytes, 5000).unsafeGlobals, ['os.system']);
    assert.equal(judge('archive.zip', await file('deflated-benign.zip')).verdict, 'no-code');
  });

  test('storage sizes from data.pkl let tensor data be skipped unread, and a lie about them is caught', async () => {
    const good = await file('state.pt');
    // 'w' is a FloatStorage of 12 elements: say 13 in data.pkl (BININT1 12 before the TUPLE closing the persistent id)
    const lied = Buffer.from(good);
    const at = lied.indexOf(Buffer.from([0x4b, 12, 0x74]));
    assert.ok(at > 0);
    lied[at + 1] = 13;
    const v = judge('state.pt', lied);
    assert.equal(v.verdict, 'unscannable');
    assert.match(v.problems.join(), /does not give the 52 bytes data\.pkl says|no data descriptor where data\.pkl says/);
  });

  test('a member only the central directory knows, truncation and trailing data make it unscannable', async () => {
    const good = await file('state.pt');
    assert.equal(judge('state.pt', good.subarray(0, good.length - 30)).verdict, 'unscannable');
    assert.equal(judge('state.pt', Buffer.concat([good, Buffer.from('PK\x05\x06 trailing')])).verdict, 'unscannable');
    const moved = Buffer.from(good);
    const cd = moved.indexOf('PK\x01\x02');
    moved.writeUInt32LE(moved.readUInt32LE(cd + 42) + 1, cd + 42); // first CD entry points one byte later
    assert.equal(judge('state.pt', moved).verdict, 'unscannable');
  });
});

/** A GGUF written here, with knobs to break it. */
function gguf(options: { version?: number; kv?: Array<[string, number, Buffer]>; tensors?: Array<{ name: string; dims: number[]; type: number; offset: number }>; dataBytes?: number } = {}): Buffer {
  const u32 = (n: number): Buffer => { const x = Buffer.alloc(4); x.writeUInt32LE(n); return x; };
  const u64 = (n: number): Buffer => { const x = Buffer.alloc(8); x.writeBigUInt64LE(BigInt(n)); return x; };
  const str = (s: string): Buffer => Buffer.concat([u64(Buffer.byteLength(s)), Buffer.from(s)]);
  const kv = options.kv ?? [['general.architecture', 8, str('llama')]];
  const tensors = options.tensors ?? [{ name: 'a', dims: [8], type: 0, offset: 0 }, { name: 'b', dims: [4], type: 0, offset: 32 }];
  const head = Buffer.concat([
    Buffer.from('GGUF'), u32(options.version ?? 3), u64(tensors.length), u64(kv.length),
    ...kv.flatMap(([k, t, v]) => [str(k), u32(t), v]),
    ...tensors.flatMap((t) => [str(t.name), u32(t.dims.length), ...t.dims.map(u64), u32(t.type), u64(t.offset)]),
  ]);
  const pad = (32 - (head.length % 32)) % 32;
  return Buffer.concat([head, Buffer.alloc(pad), Buffer.alloc(options.dataBytes ?? 48)]);
}

describe('content: GGUF corpus', () => {
  const problems = (bytes: Buffer): string => {
    const v = judge('m.gguf', bytes, 5);
    return v.verdict === 'unscannable' ? v.problems.join('\n') : `(verdict ${v.verdict})`;
  };
  test('valid', () => assert.equal(judge('m.gguf', gguf()).verdict, 'no-code'));
  test('truncated', () => assert.match(problems(gguf().subarray(0, 60)), /end|past the end/));
  test('data shorter than the tensors need', () => assert.match(problems(gguf({ dataBytes: 40 })), /past the end of the file/));
  test('overlapping offsets', () => assert.match(problems(gguf({ tensors: [{ name: 'a', dims: [8], type: 0, offset: 0 }, { name: 'b', dims: [4], type: 0, offset: 16 }] })), /b: offset 16, expected 32/));
  test('duplicate keys and tensor names', () => {
    const dup = (v: number): [string, number, Buffer] => ['general.x', 4, Buffer.from([v, 0, 0, 0])];
    assert.match(problems(gguf({ kv: [dup(1), dup(2)] })), /duplicate key "general.x"/);
    assert.match(problems(gguf({ tensors: [{ name: 'a', dims: [8], type: 0, offset: 0 }, { name: 'a', dims: [4], type: 0, offset: 32 }] })), /duplicate tensor name "a"/);
  });
  test('bad alignment', () => assert.match(problems(gguf({ kv: [['general.alignment', 4, Buffer.from([3, 0, 0, 0])]] })), /power-of-two/));
  test('byte-swapped and unknown versions, unknown types, too many dims', () => {
    assert.match(problems(gguf({ version: 0x03000000 })), /byte-swapped/);
    assert.match(problems(gguf({ version: 1 })), /version 1/);
    assert.match(problems(gguf({ kv: [['k', 13, Buffer.alloc(0)]] })), /unknown value type 13/);
    assert.match(problems(gguf({ tensors: [{ name: 'a', dims: [1, 1, 1, 1, 8], type: 0, offset: 0 }] })), /5 dimensions/);
    assert.match(problems(gguf({ tensors: [{ name: 'a', dims: [8], type: 4, offset: 0 }] })), /unknown ggml type 4/);
  });
  test('a count larger than the file', () => {
    const bytes = gguf();
    bytes.writeBigUInt64LE(1n << 40n, 8);
    assert.match(problems(bytes), /tensor count is \d+, more than the file's size/);
  });
});
