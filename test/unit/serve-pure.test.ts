/**
 * The pure parts of `airlock serve`: Range parsing (what 200/206/416 a request gets) and the git tree ids
 * rebuilt from blob ids (checked against real git, which the test drives on a real repository).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseRange } from '../../src/serve/verified-body.ts';
import { treeIds } from '../../src/serve/hf-view.ts';
import { run } from '../support/cli.ts';

test('Range: one range, open, suffix; several or malformed → whole file; beyond the end → 416', () => {
  assert.deepEqual(parseRange('bytes=0-0', 10), { start: 0, end: 0 });
  assert.deepEqual(parseRange('bytes=4-', 10), { start: 4, end: 9 });
  assert.deepEqual(parseRange('bytes=-3', 10), { start: 7, end: 9 });
  assert.deepEqual(parseRange('bytes=0-100000', 10), { start: 0, end: 9 });
  assert.deepEqual(parseRange('BYTES = 2 - 5', 10), { start: 2, end: 5 });
  assert.equal(parseRange(undefined, 10), undefined);
  assert.equal(parseRange('bytes=0-1,4-5', 10), undefined);
  assert.equal(parseRange('items=0-1', 10), undefined);
  assert.equal(parseRange('bytes=10-', 10), 'unsatisfiable');
  assert.equal(parseRange('bytes=5-2', 10), 'unsatisfiable');
  assert.equal(parseRange('bytes=-0', 10), 'unsatisfiable');
  assert.equal(parseRange('bytes=0-', 0), 'unsatisfiable');
});

test('tree ids rebuilt from blob ids equal the ones git computes', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-serve-git-'));
  try {
    const files: Record<string, string> = { 'config.json': 'a\n', 'deep/er/vocab.txt': 'hello\n', 'deep/z.txt': 'x', 'deep-a.txt': 'dash sorts before slash\n', 'empty.txt': '' };
    for (const [path, data] of Object.entries(files)) {
      await mkdir(join(dir, path, '..'), { recursive: true });
      await writeFile(join(dir, path), data);
    }
    const git = async (...args: string[]) => {
      const r = await run('git', ['-c', 'user.email=t@example.org', '-c', 'user.name=t', ...args], { cwd: dir });
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.trim();
    };
    await git('init', '-q');
    await git('add', '-A');
    await git('commit', '-qm', 'x');
    const entries = await Promise.all(Object.keys(files).map(async (path) => ({ path, oid: await git('rev-parse', `HEAD:${path}`) })));
    const ids = treeIds(entries);
    assert.equal(ids.get(''), await git('rev-parse', 'HEAD^{tree}'));
    assert.equal(ids.get('deep'), await git('rev-parse', 'HEAD:deep'));
    assert.equal(ids.get('deep/er'), await git('rev-parse', 'HEAD:deep/er'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
