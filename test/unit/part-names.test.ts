/**
 * Part names (issue 14): one zero-padded width per bundle, wide enough for the count, so the shell's
 * sorted `NAME.tar.*` glob is the part order; readers accept any width of 3 or more, but an index must
 * name its parts in exactly the width its count gives.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkPartCount, checkSplitSize, firstPartPaths, formatPartsIndex, parsePartsIndex, partPath, partWidth, splitBundleOf, type PartsIndex } from '../../src/bundle/parts.ts';
import { isAirlockError } from '../../src/errors.ts';

test('width: 3 digits up to 1,000 parts, 4 from 1,001 — and the sorted names are the part order', () => {
  assert.equal(partWidth(1), 3);
  assert.equal(partWidth(1000), 3);
  assert.equal(partWidth(1001), 4);
  assert.equal(partWidth(10_000), 4);
  assert.equal(partPath('/m/x.tar', 7, 12), '/m/x.tar.007');
  assert.equal(partPath('/m/x.tar', 7, 1024), '/m/x.tar.0007');
  const names = Array.from({ length: 1024 }, (_, i) => partPath('x.tar', i, 1024));
  assert.deepEqual([...names].sort(), names, 'byte order is part order');
  assert.deepEqual(firstPartPaths('/m/x.tar'), ['/m/x.tar.000', '/m/x.tar.0000']);
  assert.equal(splitBundleOf('/m/x.tar.0000'), '/m/x.tar');
  assert.equal(splitBundleOf('/m/x.tar.01023'), '/m/x.tar');
});

function indexOf(count: number, name: (i: number) => string): PartsIndex {
  const parts = Array.from({ length: count }, (_, i) => ({ name: name(i), size: 10, sha256: '0'.repeat(64) }));
  return { format: 'model-airlock-parts', formatVersion: 1, bundle: 'x.tar', size: 10 * count, sha256: '0'.repeat(64), partSize: 10, parts };
}

test('an index names its parts in its own width: 4 digits for 1,024 parts, not .999 then .1000', () => {
  const good = indexOf(1024, (i) => partPath('x.tar', i, 1024));
  assert.equal(parsePartsIndex(formatPartsIndex(good), 'x.parts.json').parts[1023]!.name, 'x.tar.1023');
  const old = indexOf(1024, (i) => `x.tar.${String(i).padStart(3, '0')}`);
  assert.throws(() => parsePartsIndex(formatPartsIndex(old), 'x.parts.json'), (e) => isAirlockError(e, 'E_BUNDLE_MALFORMED') && /part 0 is named "x\.tar\.000", expected x\.tar\.0000/.test(e.message));
  const wide = indexOf(3, (i) => partPath('x.tar', i, 5000));
  assert.throws(() => parsePartsIndex(formatPartsIndex(wide), 'x.parts.json'), (e) => isAirlockError(e, 'E_BUNDLE_MALFORMED'));
});

test('split sizes: at least 1 MiB; at most 10,000 parts once the size is known', () => {
  assert.throws(() => checkSplitSize(1, '--split-size'), (e) => isAirlockError(e, 'E_USAGE') && /at least 1 MiB/.test(e.message) && e.exitCode === 2);
  checkSplitSize(1024 * 1024, '--split-size');
  checkPartCount(1024 * 1024, 10_000 * 1024 * 1024, '--split-size');
  assert.throws(() => checkPartCount(1024 * 1024, 10_000 * 1024 * 1024 + 1, '--split-size'), (e) => isAirlockError(e, 'E_USAGE') && /10001 parts/.test(e.message) && /at least 1048577 bytes/.test(e.hint ?? ''));
});
