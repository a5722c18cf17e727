/**
 * scripts/ensure-tools.sh on a fresh machine where another apt/dpkg process holds the lock: every
 * apt-get call must wait for the lock (DPkg::Lock::Timeout) instead of failing at once (issue 13).
 * The script runs for real under bash; only `apt-get` and `id` are stand-ins on PATH (this test must not
 * install anything), and one tool is left off PATH so the script has something to install.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, repoRoot } from '../support/cli.ts';

test('ensure-tools.sh waits for the apt/dpkg lock on update and install', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'airlock-ensure-tools-'));
  try {
    const bin = join(dir, 'bin');
    const log = join(dir, 'apt-calls.log');
    await run('mkdir', ['-p', bin]);
    // the real tools the script looks for, except tinyproxy
    for (const tool of ['bash', 'gpg', 'gpgv', 'tar', 'sha256sum', 'curl', 'openssl']) {
      const which = await run('sh', ['-c', `command -v ${tool}`]);
      assert.equal(which.code, 0, `${tool} is installed (scripts/ensure-tools.sh installs it)`);
      await symlink(which.stdout.trim(), join(bin, tool));
    }
    await writeFile(join(bin, 'apt-get'), `#!/bin/sh\necho "$*" >> '${log}'\n`);
    await writeFile(join(bin, 'id'), '#!/bin/sh\necho 0\n');
    await chmod(join(bin, 'apt-get'), 0o755);
    await chmod(join(bin, 'id'), 0o755);
    const r = await run(join(bin, 'bash'), [join(repoRoot, 'scripts', 'ensure-tools.sh')], { env: { PATH: bin, AIRLOCK_APT_LOCK_TIMEOUT: '77' } });
    assert.equal(r.code, 0, r.stderr);
    const calls = (await readFile(log, 'utf8')).trim().split('\n');
    assert.equal(calls.length, 2, calls.join('\n'));
    assert.match(calls[0]!, /^-o DPkg::Lock::Timeout=77 update\b/);
    assert.match(calls[1]!, /^-o DPkg::Lock::Timeout=77 install -y -qq .*\btinyproxy\b/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
