import { describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { isAirlockError } from '../../src/errors.ts';
import { formatSha256Sums, parseSha256Sums } from '../../src/integrity/sha256sums.ts';

const A = 'a'.repeat(64);
const B = 'b'.repeat(64);
const C = '0123456789abcdef'.repeat(4);

function problemsOf(text: string): string {
  try {
    parseSha256Sums(text);
  } catch (error) {
    assert.ok(isAirlockError(error, 'E_SUMS_INVALID'), `expected E_SUMS_INVALID, got ${String(error)}`);
    return error.message;
  }
  assert.fail(`parsed without error: ${JSON.stringify(text)}`);
}

describe('formatSha256Sums', () => {
  test('sorts byte-wise, two spaces, newline after every line; parse gives it back', () => {
    const text = formatSha256Sums([
      { path: 'payload/b', sha256: B },
      { path: 'manifest.json', sha256: A },
      { path: 'payload/Z', sha256: C },
    ]);
    assert.equal(text, `${A}  manifest.json\n${C}  payload/Z\n${B}  payload/b\n`);
    assert.deepEqual(parseSha256Sums(text), [
      { path: 'manifest.json', sha256: A },
      { path: 'payload/Z', sha256: C },
      { path: 'payload/b', sha256: B },
    ]);
  });

  test('byte-wise order puts non-ASCII after ASCII and is not locale order', () => {
    const text = formatSha256Sums([
      { path: 'é.txt', sha256: A },
      { path: 'z.txt', sha256: B },
      { path: 'E.txt', sha256: C },
    ]);
    assert.deepEqual(parseSha256Sums(text).map((e) => e.path), ['E.txt', 'z.txt', 'é.txt']);
  });

  test('refuses duplicates, bad digests and unrepresentable names', () => {
    assert.throws(() => formatSha256Sums([{ path: 'x', sha256: A }, { path: 'x', sha256: B }]), (e) => isAirlockError(e, 'E_INTERNAL'));
    assert.throws(() => formatSha256Sums([{ path: 'x', sha256: A.toUpperCase() }]), (e) => isAirlockError(e, 'E_INTERNAL'));
    assert.throws(() => formatSha256Sums([{ path: 'a\\b', sha256: A }]), (e) => isAirlockError(e, 'E_INTERNAL'));
    assert.throws(() => formatSha256Sums([{ path: 'a\nb', sha256: A }]), (e) => isAirlockError(e, 'E_INTERNAL'));
  });
});

describe('parseSha256Sums', () => {
  test('accepts names with spaces and unicode', () => {
    assert.deepEqual(parseSha256Sums(`${A}  a b.txt\n${B}  模型/权重.bin\n`), [
      { path: 'a b.txt', sha256: A },
      { path: '模型/权重.bin', sha256: B },
    ]);
  });

  test('CRLF line endings', () => {
    assert.match(problemsOf(`${A}  a\r\n${B}  b\r\n`), /carriage return/);
  });

  test('missing final newline', () => {
    assert.match(problemsOf(`${A}  a`), /no newline/);
  });

  test('empty file', () => {
    assert.match(problemsOf(''), /empty/);
  });

  test('bad hex: uppercase, short, non-hex', () => {
    assert.match(problemsOf(`${A.toUpperCase()}  a\n`), /line 1/);
    assert.match(problemsOf(`${'a'.repeat(63)}  a\n`), /line 1/);
    assert.match(problemsOf(`${'g'.repeat(64)}  a\n`), /line 1/);
  });

  test('one space, tab, or no name', () => {
    assert.match(problemsOf(`${A} a\n`), /line 1/);
    assert.match(problemsOf(`${A}\ta\n`), /line 1/);
    assert.match(problemsOf(`${A}  \n`), /line 1/);
  });

  test('binary-mode marker (one space, then "*") is refused; after two spaces "*" is part of the name', () => {
    assert.match(problemsOf(`${A} *a\n`), /line 1/);
    // coreutils writes and checks `<hex>  *a` for a file named "*a" (text mode): so do we
    assert.deepEqual(parseSha256Sums(`${A}  *a\n`), [{ path: '*a', sha256: A }]);
  });

  test('duplicate path', () => {
    assert.match(problemsOf(`${A}  a\n${B}  a\n`), /listed twice/);
  });

  test('unsorted lines', () => {
    assert.match(problemsOf(`${A}  b\n${B}  a\n`), /out of order/);
  });

  test('backslash (coreutils escape form)', () => {
    assert.match(problemsOf(`\\${A}  a\\nb\n`), /line 1/);
    assert.match(problemsOf(`${A}  a\\b\n`), /backslash/);
  });

  test('blank line in the middle', () => {
    assert.match(problemsOf(`${A}  a\n\n${B}  b\n`), /line 2/);
  });

  test('reports every problem at once, with line numbers', () => {
    const message = problemsOf(`${A}  b\n${B}  a\n${A.toUpperCase()}  c\n${C} *d\n${C}  e\n${C}  e\n`);
    assert.match(message, /line 2: a is out of order/);
    assert.match(message, /line 3/);
    assert.match(message, /line 4/);
    assert.match(message, /line 6: e is listed twice/);
  });
});
