/**
 * --include / --exclude must select exactly what huggingface_hub selects. The oracle is the real thing:
 * CPython's `fnmatch.fnmatchcase` (system python3) for the glob dialect, and huggingface_hub's own
 * `filter_repo_objects` (the project venv) for the include/exclude rules around it.
 */
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import { fnmatchCase, fnmatchToRegExp, makeFileFilter, normalizeRepoPattern } from '../../src/hub/filter.js';
import { runPython } from '../support/python.js';

/** Python's answers for (pattern, name) pairs, in one process. */
function pythonFnmatch(cases: ReadonlyArray<readonly [string, string]>): boolean[] {
  const code = 'import sys, json, fnmatch\nprint(json.dumps([fnmatch.fnmatchcase(n, p) for p, n in json.load(sys.stdin)]))';
  const result = spawnSync('python3', ['-c', code], { input: JSON.stringify(cases), maxBuffer: 64 * 1024 * 1024 });
  if (result.error !== undefined) throw new Error(`cannot run python3 (needed as the fnmatch oracle): ${result.error.message}`);
  assert.equal(result.status, 0, result.stderr.toString());
  const out = JSON.parse(result.stdout.toString()) as boolean[];
  assert.equal(out.length, cases.length);
  return out;
}

function mismatches(cases: ReadonlyArray<readonly [string, string]>, expected: boolean[]): string[] {
  const bad: string[] = [];
  cases.forEach(([pattern, name], k) => {
    let actual: boolean | string;
    try {
      actual = fnmatchCase(name, pattern);
    } catch (error) {
      actual = `throws ${(error as Error).message}`;
    }
    if (actual !== expected[k]) bad.push(`fnmatchcase(${JSON.stringify(name)}, ${JSON.stringify(pattern)}): python ${expected[k]}, ours ${actual}`);
  });
  return bad;
}

const TRICKY: Array<[string, string]> = [
  ['*.json', 'config.json'],
  ['*.json', 'sub/dir/config.json'], // `*` crosses `/`
  ['data/*.json', 'data/x/y.json'],
  ['a*b', 'a/b'],
  ['a?b', 'a/b'], // `?` matches `/`
  ['*', '.hidden'], // no dotfile rule
  ['.*', '.git/config'],
  ['*.bin', 'model.BIN'], // case-sensitive
  ['*.BIN', 'model.BIN'],
  ['[!a]', '/'],
  ['[!a]x', '/x'],
  ['[abc]', 'b'],
  ['[abc]', 'd'],
  ['[a-c]', 'b'],
  ['[z-a]', 'm'], // empty range never matches
  ['[!z-a]', 'm'], // negated empty range matches anything
  ['[a', '[a'], // unclosed bracket is literal
  ['a]', 'a]'],
  ['[]]', ']'], // `]` first is a member
  ['[!]]', 'a'],
  ['[!]]', ']'],
  ['[]-a]', '^'],
  ['[-a]', '-'],
  ['[a-]', '-'],
  ['[a-]', 'b'],
  ['[^a]', '^'], // `^` is literal in fnmatch
  ['[^a]', 'b'],
  ['[!^]', '^'],
  ['[[]', '['],
  ['[a&&b]', '&'],
  ['[a--b]', '-'],
  ['[\\]', '\\'],
  ['\\*', '\\x'], // no escape character
  ['\\*', '*'],
  ['!a', '!a'], // no negation
  ['(a)', '(a)'], // no extglob
  ['a+', 'a+'],
  ['a+', 'aa'],
  ['{a,b}', 'a'], // no braces
  ['{a,b}', '{a,b}'],
  ['[[:alpha:]]', 'a'], // no POSIX classes
  ['[[:alpha:]]', ':]'],
  ['**/x', 'x'],
  ['**/x', 'a/x'],
  ['a/**/b', 'a/b'],
  ['./a', 'a'],
  ['?', 'é'],
  ['?', '😀'], // one code point, two UTF-16 units
  ['[😀-😂]', '😁'],
  ['*a*a*b', 'aaaaab'],
  ['*a*a*b', 'aaaaa'],
  ['a$', 'a$'],
  ['a.c', 'abc'],
  ['a|b', 'a'],
  ['model-0000?-of-00002.safetensors', 'model-00001-of-00002.safetensors'],
  ['*', ''],
  ['', ''],
  ['?', ''],
  ['*\n', 'a\n'],
];

/** Small deterministic PRNG (mulberry32), so a failure reproduces. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function fuzzCases(count: number, seed: number): Array<[string, string]> {
  const random = prng(seed);
  const pick = (chars: readonly string[]): string => chars[Math.floor(random() * chars.length)] as string;
  const patternChars = ['a', 'b', 'c', '/', '.', '-', '!', '^', ']', '[', '[', '*', '*', '?', '\\', '&', '|', 'é', '😀', 'z'];
  const nameChars = ['a', 'b', 'c', '/', '.', '-', '!', '^', ']', '[', '\\', '&', 'é', '😀', 'z', 'x'];
  const cases: Array<[string, string]> = [];
  for (let k = 0; k < count; k++) {
    let pattern = '';
    const plen = Math.floor(random() * 9);
    for (let c = 0; c < plen; c++) pattern += pick(patternChars);
    let name = '';
    if (random() < 0.5) {
      // a name shaped like the pattern, so that a good share of the cases match
      for (const ch of pattern) {
        if (ch === '*') for (let r = Math.floor(random() * 3); r > 0; r--) name += pick(nameChars);
        else if (ch === '?' || ch === '[' || ch === ']' || ch === '!' || ch === '-') name += random() < 0.5 ? ch : pick(nameChars);
        else name += ch;
      }
    } else {
      const nlen = Math.floor(random() * 7);
      for (let c = 0; c < nlen; c++) name += pick(nameChars);
    }
    cases.push([pattern, name]);
  }
  return cases;
}

describe('fnmatchCase agrees with CPython fnmatch.fnmatchcase', () => {
  it('on hand-picked tricky cases', () => {
    const expected = pythonFnmatch(TRICKY);
    assert.deepEqual(mismatches(TRICKY, expected), []);
    // the oracle really ran the interesting cases both ways
    assert.ok(expected.filter(Boolean).length > 15 && expected.filter((x) => !x).length > 15);
  });

  it('on 5000 seeded random patterns and names', () => {
    const cases = fuzzCases(5000, 20240611);
    const expected = pythonFnmatch(cases);
    assert.deepEqual(mismatches(cases, expected).slice(0, 20), []);
    assert.ok(expected.filter(Boolean).length > 500, 'the fuzz should produce a fair share of matches');
  });

  it('never needs exponential time on many stars', () => {
    const started = Date.now();
    assert.equal(fnmatchCase('a'.repeat(4000), '*a*a*a*a*a*a*a*a*a*a*b'), false);
    assert.ok(Date.now() - started < 1000);
  });

  it('compiles every pattern to a valid unicode RegExp', () => {
    for (const [pattern] of fuzzCases(2000, 7)) assert.ok(fnmatchToRegExp(pattern) instanceof RegExp);
  });
});

describe('makeFileFilter', () => {
  const paths = [
    '.gitattributes',
    'README.md',
    'config.json',
    'model.safetensors',
    'model-00001-of-00002.safetensors',
    'onnx/model.onnx',
    'onnx/sub/weights.bin',
    'tokenizer/vocab.txt',
    'tokenizer.json',
    'pytorch_model.bin',
    'Data/x.JSON',
    'a\\b.txt',
  ];
  const scenarios: Array<{ include: string[]; exclude: string[] }> = [
    { include: [], exclude: [] },
    { include: ['*.json'], exclude: [] },
    { include: ['*.safetensors', '*.json'], exclude: ['tokenizer*'] },
    { include: [], exclude: ['*.bin', 'onnx/'] },
    { include: ['onnx/'], exclude: [] },
    { include: ['onnx\\*'], exclude: [] },
    { include: ['tokenizer/'], exclude: ['*.txt'] },
    { include: ['[!.]*'], exclude: [] },
    { include: ['*.json'], exclude: ['*.json'] },
    { include: ['model-0000?-of-*'], exclude: [] },
    { include: ['*'], exclude: ['.*'] },
    { include: ['a/*'], exclude: [] },
  ];

  it('selects what huggingface_hub.utils.filter_repo_objects selects', async () => {
    const code = [
      'import sys, json',
      'from huggingface_hub.utils import filter_repo_objects',
      'data = json.load(sys.stdin)',
      'out = [list(filter_repo_objects(data["paths"], allow_patterns=s["include"] or None, ignore_patterns=s["exclude"] or None)) for s in data["scenarios"]]',
      'print(json.dumps(out))',
    ].join('\n');
    const input = JSON.stringify({ paths, scenarios });
    const result = await runPython(`import sys, io; sys.stdin = io.StringIO(${JSON.stringify(input)})\n${code}`, {});
    assert.equal(result.code, 0, result.stderr);
    const expected = JSON.parse(result.stdout) as string[][];
    scenarios.forEach((s, k) => {
      const keep = makeFileFilter(s.include, s.exclude);
      assert.deepEqual(paths.filter(keep), expected[k], `include ${JSON.stringify(s.include)} exclude ${JSON.stringify(s.exclude)}`);
    });
  });

  it('keeps everything without patterns and lets exclude win', () => {
    assert.equal(makeFileFilter([], [])('any/thing'), true);
    const keep = makeFileFilter(['*.json'], ['config.json']);
    assert.equal(keep('tokenizer.json'), true);
    assert.equal(keep('config.json'), false);
    assert.equal(keep('README.md'), false);
  });

  it('treats a trailing slash as a directory and backslash as a separator', () => {
    assert.equal(normalizeRepoPattern('onnx/'), 'onnx/*');
    assert.equal(normalizeRepoPattern('onnx\\'), 'onnx/*');
    assert.equal(makeFileFilter(['onnx/'], [])('onnx/sub/model.onnx'), true);
    assert.equal(makeFileFilter(['onnx/'], [])('onnx'), false);
  });
});
