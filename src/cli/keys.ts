import type { Command } from 'commander';
import { generateKeys, parseExpiry } from '../signing/keys.js';
import { listKeyFiles, readPassphraseFile } from '../signing/keyring.js';
import { printResult } from './render.js';
import { jsonOption, type CommandContext } from './main.js';

export function spacedFingerprint(fingerprint: string): string {
  return fingerprint.replace(/(.{4})/g, '$1 ').trim();
}

/** One date format everywhere: ISO 8601 UTC to the second (2026-12-07T04:09:56Z). */
export function isoUtc(iso: string | null): string {
  return iso === null ? 'never' : iso.replace(/\.\d{3}Z$/, 'Z');
}

export function registerKeys(program: Command, context: CommandContext): void {
  const keys = program.command('keys').description('manage signing keys');
  keys
    .command('generate')
    .description('create an ed25519 OpenPGP signing key pair (signer.key.asc, mode 0600; signer.pub.asc) and its revocation certificate (signer.rev.asc, mode 0600)')
    .requiredOption('--user-id <uid>', 'who signs, e.g. "ML Platform <mlops@example.org>"')
    .requiredOption('--out-dir <dir>', 'directory for signer.key.asc and signer.pub.asc')
    .option('--passphrase-file <file>', 'protect the private key with the passphrase in this file (an empty file is refused)')
    .option('--expires <when>', 'key lifetime: 90d, 12w, 18m, 2y, a date (2027-12-31, UTC) or never (default never)')
    .addOption(jsonOption())
    .action(async (opts: { userId: string; outDir: string; passphraseFile?: string; expires?: string; json?: boolean }) => {
      const out = context.output(Boolean(opts.json));
      const expiresInSeconds = opts.expires === undefined ? undefined : parseExpiry(opts.expires, new Date());
      const passphrase = await readPassphraseFile(opts.passphraseFile);
      const result = await generateKeys({ userId: opts.userId, outDir: opts.outDir, expiresInSeconds, ...(passphrase === undefined ? {} : { passphrase }) });
      if (out.json) {
        return printResult(out, {
          ...result,
          keys: [{ fingerprint: result.fingerprint, userIds: [result.userId], expires: result.expires, secret: true }],
          keyFiles: { privateKey: result.privateKeyPath, publicKey: result.publicKeyPath, revocationCertificate: result.revocationCertificatePath },
        });
      }
      out.stdout(
        `Generated signing key for ${result.userId}\n` +
          `  fingerprint: ${spacedFingerprint(result.fingerprint)}\n` +
          `  expires:     ${result.expires ?? 'never'}\n` +
          `  private key: ${result.privateKeyPath} (mode 0600; keep it on the connected side)\n` +
          `  public key:  ${result.publicKeyPath} (hand this to the offline side by a separate channel)\n` +
          `  revocation:  ${result.revocationCertificatePath} (mode 0600; keep it apart from the key — it revokes the key, see docs/security-model.md)\n`,
      );
    });
  keys
    .command('list')
    .description('show the keys in key files or keyrings: fingerprints, user ids, expiry, revocation, subkeys')
    .argument('<file...>', 'armored key files or binary keyrings (gpg --export)')
    .addOption(jsonOption())
    .action(async (files: string[], opts: { json?: boolean }) => {
      const out = context.output(Boolean(opts.json));
      const keys = await listKeyFiles(files);
      if (out.json) return printResult(out, { keys });
      const now = Date.now();
      const state = (k: { revoked: boolean; expires: string | null }): string =>
        k.revoked ? ' [REVOKED]' : k.expires !== null && Date.parse(k.expires) <= now ? ' [EXPIRED]' : '';
      for (const k of keys) {
        out.stdout(`${k.secret ? 'sec' : 'pub'}  ${k.algorithm}  created ${isoUtc(k.created)}  expires ${isoUtc(k.expires)}  [${k.usage.join(',')}]${state(k)}  (${k.source})\n`);
        out.stdout(`     ${spacedFingerprint(k.fingerprint)}\n`);
        for (const uid of k.userIds) out.stdout(`uid  ${uid}\n`);
        for (const sub of k.subkeys) {
          out.stdout(`sub  ${sub.algorithm}  created ${isoUtc(sub.created)}  expires ${isoUtc(sub.expires)}  [${sub.usage.join(',')}]${state(sub)}\n`);
          out.stdout(`     ${spacedFingerprint(sub.fingerprint)}\n`);
        }
        out.stdout('\n');
      }
    });
}
