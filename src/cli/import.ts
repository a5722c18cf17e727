import { resolve } from 'node:path';
import type { Command } from 'commander';
import { AirlockError } from '../errors.js';
import { importBundle, inspectBundle, verifyBundle } from '../import/index.js';
import { resolveHfCacheDir } from '../cache/hf-hub.js';
import { loadTrustedKeys } from '../signing/keyring.js';
import type { VerifiedSigner } from '../signing/verify.js';
import { formatBytes, printJson, type Output } from './render.js';
import { jsonOption, type CommandContext } from './main.js';
import { spacedFingerprint } from './keys.js';

const collect = (value: string, previous: string[]): string[] => [...previous, value];

interface TrustFlags {
  trustedKeys: string[];
  allowUnsigned?: boolean;
  json?: boolean;
}

async function trustedKeysFrom(flags: TrustFlags) {
  if (flags.trustedKeys.length === 0 && !flags.allowUnsigned) {
    throw new AirlockError('E_USAGE', 'no trusted keys given', {
      hint: 'pass --trusted-keys signer.pub.asc (the public key you received from the signer by a separate channel)',
    });
  }
  return loadTrustedKeys(flags.trustedKeys);
}

function renderSigners(out: Output, signers: readonly VerifiedSigner[]): void {
  if (signers.length === 0) {
    out.stdout('  signature: NOT CHECKED (unsigned bundle accepted with --allow-unsigned)\n');
    return;
  }
  for (const s of signers) {
    out.stdout(`  signature: good, by ${spacedFingerprint(s.fingerprint)} ${s.userIds.join(', ')} (signed ${s.signedAt})\n`);
  }
}

export function registerVerify(program: Command, context: CommandContext): void {
  program
    .command('verify')
    .description('check a bundle completely (signature, manifest, every file hash) without writing anything')
    .argument('<bundle>', 'the .airlock.tar file')
    .option('--trusted-keys <file>', 'public key file(s) you trust (repeatable)', collect, [])
    .option('--allow-unsigned', 'accept a bundle without a signature (hashes are still checked)')
    .addOption(jsonOption())
    .action(async (bundle: string, flags: TrustFlags) => {
      const out = context.output(Boolean(flags.json));
      const trustedKeys = await trustedKeysFrom(flags);
      const result = await verifyBundle({ bundlePath: resolve(bundle), trustedKeys, allowUnsigned: Boolean(flags.allowUnsigned) });
      if (out.json) return printJson(out, { ok: true, ...result });
      out.stdout(`Verified ${bundle}\n  bundle sha256 ${result.bundleSha256}\n`);
      renderSigners(out, result.signers);
      for (const repo of result.repos) {
        out.stdout(`  ${repo.type} ${repo.id}@${repo.revision} (commit ${repo.commit}): ${repo.files} files, ${formatBytes(repo.bytes)}\n`);
      }
      out.stdout(`  ${result.files} files, ${formatBytes(result.bytes)}: every hash matches the signed SHA256SUMS\n`);
    });
}

export function registerImport(program: Command, context: CommandContext): void {
  program
    .command('import')
    .description('verify a bundle, then commit it atomically into the Hugging Face hub cache')
    .argument('<bundle>', 'the .airlock.tar file')
    .option('--trusted-keys <file>', 'public key file(s) you trust (repeatable)', collect, [])
    .option('--allow-unsigned', 'accept a bundle without a signature (hashes are still checked)')
    .option('--cache-dir <dir>', 'hub cache (default: $HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub)')
    .addOption(jsonOption())
    .action(async (bundle: string, flags: TrustFlags & { cacheDir?: string }) => {
      const out = context.output(Boolean(flags.json));
      const trustedKeys = await trustedKeysFrom(flags);
      const cacheDir = resolveHfCacheDir(flags.cacheDir, process.env);
      const result = await importBundle({ bundlePath: resolve(bundle), trustedKeys, allowUnsigned: Boolean(flags.allowUnsigned), cacheDir });
      if (out.json) return printJson(out, { ok: true, cacheDir, ...result });
      out.stdout(`Imported ${bundle} into ${cacheDir}\n`);
      renderSigners(out, result.signers);
      for (const repo of result.repos) {
        out.stdout(
          `  ${repo.type} ${repo.id}@${repo.revision} (commit ${repo.commit}): ${repo.files} files, ${formatBytes(repo.bytes)}` +
            ` — ${repo.filesWritten} written, ${repo.filesReused} already present\n`,
        );
      }
    });
}

export function registerInspect(program: Command, context: CommandContext): void {
  program
    .command('inspect')
    .description('show what a bundle holds, without keys (the signature is NOT checked)')
    .argument('<bundle>', 'the .airlock.tar file')
    .addOption(jsonOption())
    .action(async (bundle: string, flags: { json?: boolean }) => {
      const out = context.output(Boolean(flags.json));
      const result = await inspectBundle(resolve(bundle));
      if (out.json) return printJson(out, { ok: true, ...result });
      const m = result.manifest;
      out.stdout(`${bundle}: airlock bundle format ${m.formatVersion}, made by model-airlock ${m.tool.version} at ${m.createdAt}\n`);
      out.stdout(
        result.signed
          ? `  signed by key ${result.signatureKeyIds.join(', ')} — NOT checked here; run \`airlock verify --trusted-keys …\`\n`
          : '  UNSIGNED bundle\n',
      );
      for (const repo of m.repos) {
        const bytes = repo.files.reduce((n, f) => n + f.size, 0);
        out.stdout(`  ${repo.type} ${repo.id}@${repo.revision} → ${repo.commit} from ${repo.source.endpoint}: ${repo.files.length} files, ${formatBytes(bytes)}\n`);
        for (const f of repo.files) out.stdout(`    ${f.path}  ${formatBytes(f.size)}${f.lfs ? '  (lfs)' : ''}\n`);
      }
    });
}
