/**
 * The README's first command (`npm ci && npm run demo`) on this checkout: the demo exports the built-in
 * sample from the bundled test hub, checks it with gpg and sha256sum, verifies, imports, and transformers
 * loads the model offline (the suite's venv is there). It leaves nothing running behind it (gpg's agent
 * for the demo's own home folder used to outlive it).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { run } from '../support/cli.ts';
import { assertVenv } from '../support/python.ts';

test('npm run demo: export, standard-tool check, verify, import, offline load; nothing left running', { timeout: 300_000 }, async () => {
  assertVenv(); // a missing venv fails (with the command that creates it); never skips
  const r = await run(process.execPath, ['--import', 'tsx', 'scripts/demo.ts']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stderr, /gpg: Good signature from "ML Platform <mlops@example\.org>"/, r.stdout + r.stderr);
  assert.match(r.stdout + r.stderr, /: OK\n/, 'sha256sum -c passed');
  assert.match(r.stdout, /^Imported tiny-llm\.airlock\.tar into /m);
  assert.match(r.stdout, /loaded \w+ offline; logits \(1, \d+, \d+\)/);
  const workspace = /Everything above is in (\S+)\n/.exec(r.stdout)?.[1];
  assert.ok(workspace !== undefined, r.stdout);
  const left = await run('pgrep', ['-fa', workspace]);
  assert.equal(left.stdout.trim(), '', `still running: ${left.stdout}`);
  await rm(workspace, { recursive: true, force: true });
});
