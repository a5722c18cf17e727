/**
 * A Signer that runs the system `gpg`, so the private key can stay in gpg-agent, behind pinentry, or
 * on a smartcard / YubiKey that openpgp.js cannot reach. It makes a detached, armored, BINARY-mode
 * signature (`--no-textmode` overrides a `textmode` line in gpg.conf), then checks it with our own
 * verifier against the key gpg exports, so a surprise (another key, a text-mode signature, a digest
 * openpgp.js refuses) fails here, on the connected side, not at the offline site.
 */
import { spawn } from 'node:child_process';
import { AirlockError } from '../errors.js';
import type { Signer } from './sign.js';
import { readPublicKeys, verifyDetachedSignature } from './verify.js';

export interface GpgSignerOptions {
  /** Key id, fingerprint, or user id, as `gpg --local-user` takes it (a trailing `!` forces that subkey). */
  keyId: string;
  /** `--homedir` for gpg (default: $GNUPGHOME or ~/.gnupg, as gpg decides). */
  homedir?: string | undefined;
  /** The gpg program (default: $AIRLOCK_GPG, else `gpg` on PATH). */
  program?: string | undefined;
}

interface GpgRun {
  code: number;
  stdout: Buffer;
  stderr: string;
}

function runGpg(program: string, args: readonly string[], input?: Uint8Array): Promise<GpgRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (error: NodeJS.ErrnoException) => {
      reject(
        new AirlockError('E_GPG', error.code === 'ENOENT' ? `${program} not found: GnuPG is needed for --gpg-sign` : `cannot run ${program}: ${error.message}`, {
          subject: program,
          hint: 'install GnuPG (apt-get install gnupg), or set AIRLOCK_GPG to the gpg program, or sign with --sign-key instead',
          cause: error,
        }),
      );
    });
    child.on('close', (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr }));
    child.stdin.on('error', () => undefined);
    child.stdin.end(input === undefined ? undefined : Buffer.from(input));
  });
}

function gpgFailed(what: string, run: GpgRun, keyId: string, hint: string): AirlockError {
  const detail = run.stderr.trim().split('\n').filter((l) => !/^gpg: (WARNING: unsafe|WARNING: running with faked)/.test(l)).slice(-3).join(' / ');
  return new AirlockError('E_GPG', `gpg could not ${what} ${keyId} (exit ${run.code}): ${detail || 'no message'}`, { subject: keyId, hint });
}

export async function gpgSigner(options: GpgSignerOptions): Promise<Signer> {
  const program = options.program ?? process.env['AIRLOCK_GPG'] ?? 'gpg';
  const base = [...(options.homedir === undefined ? [] : ['--homedir', options.homedir]), '--batch', '--no-tty'];
  const keyId = options.keyId.trim();
  if (keyId === '') throw new AirlockError('E_USAGE', '--gpg-sign needs a key id, fingerprint or user id');

  // which key is it? (exactly one secret key must match)
  const list = await runGpg(program, [...base, '--with-colons', '--fixed-list-mode', '--list-secret-keys', '--', keyId.replace(/!$/, '')]);
  if (list.code !== 0) {
    throw gpgFailed('find the secret key', list, keyId, 'check the key id (`gpg --list-secret-keys`) and --gpg-homedir; for a smartcard, run `gpg --card-status` once');
  }
  const lines = list.stdout.toString('utf8').split('\n').map((l) => l.split(':'));
  const primaries: string[] = [];
  const userIds: string[] = [];
  let inSec = false;
  for (const f of lines) {
    if (f[0] === 'sec') inSec = true;
    else if (f[0] === 'ssb') inSec = false;
    else if (f[0] === 'fpr' && inSec) {
      primaries.push(f[9]!.toUpperCase());
      inSec = false;
    } else if (f[0] === 'uid' && primaries.length === 1) userIds.push(f[9]!.replace(/\\x3a/g, ':'));
  }
  if (primaries.length !== 1) {
    throw new AirlockError('E_GPG', `${keyId} matches ${primaries.length} secret keys in gpg`, {
      subject: keyId,
      hint: 'pass the full fingerprint with --gpg-sign',
    });
  }
  const fingerprint = primaries[0]!;
  const exported = await runGpg(program, [...base, '--export', '--', fingerprint]);
  if (exported.code !== 0 || exported.stdout.byteLength === 0) {
    throw gpgFailed('export the public key of', exported, keyId, 'check --gpg-homedir');
  }
  const [own] = await readPublicKeys(exported.stdout, `gpg key ${fingerprint}`);
  if (own === undefined) throw new AirlockError('E_GPG', `gpg exported no public key for ${fingerprint}`, { subject: keyId });

  return {
    fingerprint,
    userIds: own.key.getUserIDs().length > 0 ? own.key.getUserIDs() : userIds,
    publicKey: own.key,
    async sign(data: Uint8Array): Promise<string> {
      const signed = await runGpg(
        program,
        [...base, '--no-textmode', '--detach-sign', '--armor', '--local-user', keyId, '--output', '-'],
        data,
      );
      if (signed.code !== 0) {
        throw gpgFailed('sign with', signed, keyId, 'check that gpg-agent can use the key (pinentry, smartcard inserted and unlocked)');
      }
      const armored = signed.stdout.toString('utf8');
      // our own verifier, against the key gpg says it used: never ship a signature the offline side refuses
      const signers = await verifyDetachedSignature(data, armored, { keys: [own] }, 'gpg signature');
      if (signers[0]?.fingerprint !== fingerprint) {
        throw new AirlockError('E_GPG', `gpg signed with another key than ${fingerprint}`, { subject: keyId });
      }
      return armored;
    },
  };
}
