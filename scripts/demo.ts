/**
 * `npm run demo`: the whole job, end to end, with no internet. A sample hub on loopback serves a
 * tiny Llama; the real CLI generates a key, exports a signed bundle, checks it with standard tools,
 * verifies it, imports it into a fresh Hugging Face cache, and the model is loaded offline from it.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { airlockBin, cleanEnv, repoRoot } from '../test/support/cli.ts';
import { startHubServer } from '../test/support/hub-server.ts';
import { sampleModelFiles } from '../test/support/sample-model.ts';
import { venvPython } from '../test/support/python.ts';

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);

function step(title: string): void {
  process.stdout.write(`\n${bold(`== ${title}`)}\n`);
}

function sh(command: string, args: string[], env: Record<string, string | undefined>, display?: string): Promise<void> {
  process.stdout.write(`${bold('$')} ${display ?? [command, ...args].join(' ')}\n`);
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: 'inherit', env: cleanEnv(env), cwd: workspace });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${display ?? command} exited with ${code}`))));
  });
}

const quote = (arg: string) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`);
const airlock = (args: string[], env: Record<string, string | undefined> = {}, envShown = '') =>
  sh(process.execPath, [airlockBin, ...args], env, `${envShown}airlock ${args.map(quote).join(' ')}`);

const workspace = await mkdtemp(join(tmpdir(), 'airlock-demo-'));
const hub = await startHubServer();
try {
  step('A sample hub on loopback (no internet needed)');
  const added = await hub.addRepo({ id: 'acme/tiny-llm', files: sampleModelFiles(), tags: ['v1.0'] });
  process.stdout.write(
    `Serving acme/tiny-llm at ${hub.endpoint} (LFS files from ${hub.cdnOrigin}), commit ${added.commit}\n` +
      `Workspace: ${workspace}\n`,
  );

  step('Connected side: make a signing key, export a signed bundle');
  await airlock(['keys', 'generate', '--user-id', 'ML Platform <mlops@example.org>', '--out-dir', 'keys']);
  await airlock(
    ['export', 'acme/tiny-llm', '--revision', 'main', '--sign-key', 'keys/signer.key.asc', '-o', 'tiny-llm.airlock.tar'],
    { HF_ENDPOINT: hub.endpoint },
    `HF_ENDPOINT=${hub.endpoint} `,
  );

  step('Anyone can check the bundle with standard tools alone');
  await sh('mkdir', ['-p', 'by-hand'], {});
  await sh('tar', ['-xf', 'tiny-llm.airlock.tar', '-C', 'by-hand'], {});
  const gnupg = join(workspace, 'gnupg');
  await sh('mkdir', ['-m', '700', '-p', gnupg], {});
  await sh('gpg', ['--homedir', gnupg, '--batch', '--quiet', '--import', 'keys/signer.pub.asc'], {});
  await sh('gpg', ['--homedir', gnupg, '--batch', '--verify', 'by-hand/SHA256SUMS.asc', 'by-hand/SHA256SUMS'], {});
  await sh('sh', ['-c', 'cd by-hand && sha256sum --strict -c SHA256SUMS'], {}, '(cd by-hand && sha256sum --strict -c SHA256SUMS)');
  // gpg started an agent for that home folder: stop it, or it outlives the demo
  await new Promise<void>((resolve) => {
    spawn('gpgconf', ['--homedir', gnupg, '--kill', 'gpg-agent'], { stdio: 'ignore' }).on('close', () => resolve()).on('error', () => resolve());
  });

  step('Offline side: verify, then import into a fresh Hugging Face cache');
  const cache = join(workspace, 'offline-hf-cache');
  await airlock(['verify', 'tiny-llm.airlock.tar', '--trusted-keys', 'keys/signer.pub.asc']);
  await airlock(['import', 'tiny-llm.airlock.tar', '--trusted-keys', 'keys/signer.pub.asc'], { HF_HUB_CACHE: cache }, `HF_HUB_CACHE=${cache} `);

  step('Load it offline');
  const repoDir = join(cache, 'models--acme--tiny-llm');
  const commit = await readFile(join(repoDir, 'refs', 'main'), 'utf8');
  process.stdout.write(
    `refs/main → ${commit}\nsnapshots/${commit}/model.safetensors → ${await readlink(join(repoDir, 'snapshots', commit, 'model.safetensors'))}\n`,
  );
  if (existsSync(venvPython)) {
    const code =
      'from transformers import AutoTokenizer, AutoModelForCausalLM\n' +
      'tok = AutoTokenizer.from_pretrained("acme/tiny-llm"); model = AutoModelForCausalLM.from_pretrained("acme/tiny-llm")\n' +
      'ids = tok("hello world the model", return_tensors="pt")\n' +
      'print("loaded", type(model).__name__, "offline; logits", tuple(model(**ids).logits.shape))';
    await sh(venvPython, ['-c', code], { HF_HUB_OFFLINE: '1', HF_HUB_CACHE: cache, HF_HUB_DISABLE_TELEMETRY: '1' },
      `HF_HUB_OFFLINE=1 HF_HUB_CACHE=${cache} python -c 'AutoModelForCausalLM.from_pretrained("acme/tiny-llm") …'`);
  } else {
    process.stdout.write(
      'No Python venv here, so the transformers load is skipped in this demo.\n' +
        `To see it: bash scripts/ensure-python.sh && npm run demo   (in ${repoRoot})\n`,
    );
  }
  step('Done');
  process.stdout.write(`Everything above is in ${workspace}\n`);
} finally {
  await hub.close();
}
