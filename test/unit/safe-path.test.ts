import { describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { isSafeRelativePath, unsafeRelativePathReason, unsafeRepoIdReason, unsafeRevisionReason } from '../../src/fs/safe-path.ts';

describe('unsafeRelativePathReason', () => {
  const good = [
    'config.json',
    'sub/dir/vocab.txt',
    'a b/c d.txt',
    '.gitattributes',
    'dir/.hidden',
    'file..name',
    '模型/权重.safetensors',
    'café.txt', // NFC
    'emoji 🚀.md',
    'x'.repeat(255),
    'model-00001-of-00002.safetensors',
  ];
  for (const path of good) {
    test(`accepts ${JSON.stringify(path.length > 40 ? `${path.slice(0, 20)}…` : path)}`, () => {
      assert.equal(unsafeRelativePathReason(path), undefined);
      assert.equal(isSafeRelativePath(path), true);
    });
  }

  const bad: Array<[string, RegExp]> = [
    ['', /empty/],
    ['..', /".."/],
    ['../etc/passwd', /".."/],
    ['a/../../b', /".."/],
    ['a/..', /".."/],
    ['./a', /"\."/],
    ['a/./b', /"\."/],
    ['/etc/passwd', /absolute/],
    ['/', /absolute/],
    ['a\\b', /backslash/],
    ['..\\..\\windows', /backslash/],
    ['\\\\server\\share', /backslash/],
    ['C:/Windows', /drive-letter/],
    ['c:evil', /drive-letter/],
    ['a/b:stream', /colon/],
    ['a//b', /empty path segment/],
    ['a/', /trailing slash/],
    ['cafe\u0301.txt', /NFC/], // NFD form of café
    ['a\u0000b', /control/],
    ['a\nb', /control/],
    ['a\rb', /control/],
    ['tab\there', /control/],
    ['del\u007f', /control/],
    ['...', /dots and spaces/],
    ['a/ /b', /dots and spaces/],
    ['x'.repeat(256), /segment longer/],
    [`${'a/'.repeat(2100)}b`, /longer than/],
  ];
  for (const [path, reason] of bad) {
    test(`rejects ${JSON.stringify(path.length > 40 ? `${path.slice(0, 20)}…` : path)}`, () => {
      const got = unsafeRelativePathReason(path);
      assert.ok(got !== undefined, 'expected a reason');
      assert.match(got, reason);
      assert.equal(isSafeRelativePath(path), false);
    });
  }
});

describe('unsafeRepoIdReason', () => {
  for (const id of ['gpt2', 'google-bert/bert-base-uncased', 'acme/tiny_model.v2', 'a/b']) {
    test(`accepts ${id}`, () => assert.equal(unsafeRepoIdReason(id), undefined));
  }
  for (const id of ['', 'a/b/c', '../x', 'a--b', 'a/b..c', 'x.git', '-a/b', 'a/b-', 'a b', '/a', 'a/', 'a\\b']) {
    test(`rejects ${JSON.stringify(id)}`, () => assert.ok(unsafeRepoIdReason(id) !== undefined));
  }
});

describe('unsafeRevisionReason', () => {
  for (const rev of ['main', 'v1.0', 'refs/pr/1', 'feature/x', '0123456789abcdef0123456789abcdef01234567']) {
    test(`accepts ${rev}`, () => assert.equal(unsafeRevisionReason(rev), undefined));
  }
  for (const rev of ['', '..', 'a..b', '/main', 'main/', 'a//b', 'a.lock', 'a.', '.hidden', 'a/.b', 'a b', 'a:b', 'a@{1}', '@', 'a\\b', 'x'.repeat(256)]) {
    test(`rejects ${JSON.stringify(rev.length > 20 ? `${rev.slice(0, 10)}…` : rev)}`, () => assert.ok(unsafeRevisionReason(rev) !== undefined));
  }
});
