import { basename, resolve } from 'node:path';
import type { Command } from 'commander';
import { AirlockError } from '../errors.js';
import { resignBundle } from '../bundle/resign.js';
import { chooseSigner, loadTrustPolicy } from '../signing/keyring.js';
import { formatBytes, printResult } from './render.js';
import { bundleJson, verifiedSigners } from './result.js';
import { jsonOption, type CommandContext } from './main.js';
import { spacedFingerprint } from './keys.js';

const collect = (value: string, previous: string[]): string[] => [...previous, value];

interface ResignFlags {
  signKey?: string;
  passphraseFile?: string;
  gpgSign?: string;
  gpgHomedir?: string;
  add?: boolean;
  trustedKeys: string[];
  trustedFingerprint: string[];
  force?: boolean;
  output?: string;
  json?: boolean;
}

export function registerResign(program: Command, context: CommandContext): void {
  program
    .command('resign')
    .description('replace the signature of a bundle, or add a second one, without rewriting its payload')
    .argument('<bundle>', 'the .airlock.tar file, or for split volumes any part or the parts index (rewritten in place unless -o is given)')
    .option('--sign-key <file>', 'armored OpenPGP private key that signs SHA256SUMS')
    .option('--passphrase-file <file>', 'file holding the signing key passphrase')
    .option('--gpg-sign <key>', 'sign with the system gpg (gpg-agent, smartcard): key id, fingerprint or user id')
    .option('--gpg-homedir <dir>', 'GnuPG home directory for --gpg-sign (default: $GNUPGHOME or ~/.gnupg)')
    .option('--add', 'keep the existing signature(s) and add this one (two-person rule)')
    .option('--trusted-keys <file>', 'public key file(s) or keyring the EXISTING signature must verify against (repeatable)', collect, [])
    .option('--trusted-fingerprint <fpr>', 'pin: only this key counts (repeatable; replaces the trust file)', collect, [])
    .option('--force', 'do not check the existing signature (every payload hash is still checked)')
    .option('-o, --output <file>', 'write the re-signed bundle here instead of replacing <bundle>')
    .addOption(jsonOption())
    .action(async (bundle: string, flags: ResignFlags) => {
      const out = context.output(Boolean(flags.json));
      const signer = await chooseSigner(flags);
      if (signer === undefined) {
        throw new AirlockError('E_USAGE', 'resign needs a signing key', { hint: 'pass --sign-key signer.key.asc or --gpg-sign KEYID' });
      }
      if (!flags.force && flags.trustedKeys.length === 0) {
        throw new AirlockError('E_USAGE', 'resign checks the existing signature first: no trusted keys given', {
          hint: 'pass --trusted-keys with the current signer\'s public key, or --force to skip that check',
        });
      }
      const trust = flags.force ? undefined : (await loadTrustPolicy({ keyFiles: flags.trustedKeys, fingerprints: flags.trustedFingerprint })).policy;
      const result = await resignBundle({
        bundlePath: resolve(bundle),
        ...(flags.output === undefined ? {} : { outPath: resolve(flags.output) }),
        signer,
        mode: flags.add ? 'add' : 'replace',
        ...(trust === undefined ? {} : { trust }),
        force: Boolean(flags.force),
      });
      if (out.json) {
        const fresh = { ...result.signer, verified: true };
        return printResult(out, {
          ...result,
          bundle: bundleJson(result.path, result.bundleSha256, result.bundleBytes),
          // who has signed the bundle now, as far as airlock checked: with --add the earlier signers too
          signers: result.mode === 'add' ? [...verifiedSigners(result.previousSigners), fresh] : [fresh],
          previousSigners: verifiedSigners(result.previousSigners),
        });
      }
      out.stdout(`Re-signed ${result.path}\n  ${formatBytes(result.bundleBytes)}, sha256 ${result.bundleSha256}\n`);
      for (const s of result.previousSigners) out.stdout(`  existing signature: good, by ${spacedFingerprint(s.fingerprint)} ${s.userIds.join(', ')}\n`);
      if (flags.force) out.stdout('  existing signature: NOT checked (--force); every payload hash checked against SHA256SUMS\n');
      out.stdout(
        `  ${result.mode === 'add' ? 'added' : 'new'} signature by ${spacedFingerprint(result.signer.fingerprint)} ${result.signer.userIds.join(', ')}` +
          ` (${result.signatures} signature(s) in SHA256SUMS.asc)\n  payload: ${formatBytes(result.payloadBytes)} unchanged${result.payloadInPlace ? ', at the same offsets' : ', moved behind the larger leading entries'}\n`,
      );
      if (result.parts !== undefined) {
        out.stdout(
          `  volumes: ${result.parts.rewritten} of ${result.parts.count} parts rewritten, the others untouched; ${basename(result.parts.index)} written anew and signed by the new key\n`,
        );
      }
    });
}
