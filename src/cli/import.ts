import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { AirlockError, isAirlockError } from '../errors.js';
import { splitBundleOf } from '../bundle/parts.js';
import { auditSummary, hashFile, importBundle, inspectBundle, verificationRecord, verifyBundle, type VerificationRecord } from '../import/index.js';
import { resolveHfCacheDir } from '../cache/hf-hub.js';
import { resolveModelScopeCacheDir } from '../cache/modelscope.js';
import type { ImportLayout } from '../import/staging-sink.js';
import { writeFileAtomic } from '../fs/atomic.js';
import { loadTrustPolicy, type LoadedTrust } from '../signing/keyring.js';
import type { VerifiedSigner } from '../signing/verify.js';
import { toolVersion } from '../version.js';
import { formatBytes, printJson, type Output } from './render.js';
import { jsonOption, type CommandContext } from './main.js';
import { spacedFingerprint } from './keys.js';

const collect = (value: string, previous: string[]): string[] => [...previous, value];

/**
 * One bundle per command. Several arguments are accepted only as the parts of one split bundle (what
 * the shell makes of `NAME.tar.*`); they are then read in index order, whatever order they came in.
 */
function oneBundle(args: readonly string[]): string {
  if (args.length === 1) return args[0]!;
  const bases = new Set(args.map((a) => splitBundleOf(resolve(a)) ?? `single:${a}`));
  if (bases.size === 1 && ![...bases][0]!.startsWith('single:')) return args[0]!;
  throw new AirlockError('E_USAGE', `one bundle at a time, got ${args.length}: ${args.slice(0, 4).join(' ')}${args.length > 4 ? ' …' : ''}`, {
    hint: 'name one .airlock.tar, or the parts of one split bundle (NAME.tar.*)',
  });
}

interface TrustFlags {
  trustedKeys: string[];
  trustedFingerprint: string[];
  requireSignatures?: string;
  allowUnsigned?: boolean;
  report?: string;
  sha256?: boolean;
  json?: boolean;
}

function addTrustOptions(command: Command): Command {
  return command
    .option('--trusted-keys <file>', 'public key file(s) or binary keyring (gpg --export) you trust (repeatable)', collect, [])
    .option('--trusted-fingerprint <fpr>', 'pin: only keys with this fingerprint count (repeatable; replaces the trust file, see docs/security-model.md)', collect, [])
    .option('--require-signatures <n>', 'distinct trusted keys that must have signed (two-person rule; default 1)')
    .option('--allow-unsigned', 'accept a bundle without a signature (hashes are still checked)')
    .option('--report <file>', 'write a JSON verification record (evidence) to this file, also when the bundle is refused; implies --sha256')
    .option('--sha256', "also compute the whole bundle's SHA-256 (a second hash pass; every file is verified either way)");
}

/** The bundle's own SHA-256 costs a second hash pass: only for those who asked, and for the evidence record. */
const wantsBundleSha256 = (flags: TrustFlags): boolean => Boolean(flags.sha256) || flags.report !== undefined;

const bundleShaLine = (sha256: string | undefined): string => (sha256 === undefined ? '' : `  bundle sha256 ${sha256}\n`);

async function trustFrom(flags: TrustFlags): Promise<LoadedTrust> {
  if (flags.trustedKeys.length === 0 && !flags.allowUnsigned) {
    throw new AirlockError('E_USAGE', 'no trusted keys given', {
      hint: 'pass --trusted-keys signer.pub.asc (the public key you received from the signer by a separate channel)',
    });
  }
  let requireSignatures: number | undefined;
  if (flags.requireSignatures !== undefined) {
    requireSignatures = /^\d+$/.test(flags.requireSignatures) ? Number(flags.requireSignatures) : Number.NaN;
    if (flags.allowUnsigned) throw new AirlockError('E_USAGE', '--require-signatures and --allow-unsigned contradict each other');
  }
  return loadTrustPolicy({ keyFiles: flags.trustedKeys, fingerprints: flags.trustedFingerprint, ...(requireSignatures === undefined ? {} : { requireSignatures }) });
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

type Outcome = Parameters<typeof verificationRecord>[0]['result'];

/**
 * Runs `work`, and when --report is given writes the evidence record — for a refusal too (then with
 * the refused bundle's own sha256), before the error reaches the user.
 */
async function withReport<T extends NonNullable<Outcome>>(
  command: 'verify' | 'import',
  bundlePath: string,
  flags: TrustFlags,
  trust: LoadedTrust,
  cacheDir: string | undefined,
  work: () => Promise<T>,
): Promise<{ result: T; record: VerificationRecord }> {
  const startedAt = new Date();
  const base = {
    command,
    startedAt,
    toolVersion,
    host: hostname(),
    bundlePath,
    policy: trust.policy,
    allowUnsigned: Boolean(flags.allowUnsigned),
    ...(cacheDir === undefined ? {} : { cacheDir }),
  };
  const write = async (record: VerificationRecord): Promise<void> => {
    if (flags.report !== undefined) await writeFileAtomic(resolve(flags.report), `${JSON.stringify(record, null, 2)}\n`);
  };
  let result: T;
  try {
    result = await work();
  } catch (error) {
    if (flags.report !== undefined) {
      const file = await hashFile(bundlePath);
      const failure = isAirlockError(error)
        ? { code: error.code, message: error.message, subject: error.subject }
        : { code: 'E_INTERNAL', message: (error as Error)?.message ?? String(error) };
      await write(verificationRecord({ ...base, finishedAt: new Date(), failure: { ...failure, bundleSha256: file?.sha256, bundleBytes: file?.bytes } }));
    }
    throw error;
  }
  const record = verificationRecord({ ...base, finishedAt: new Date(), result });
  await write(record);
  return { result, record };
}

export function registerVerify(program: Command, context: CommandContext): void {
  addTrustOptions(
    program
      .command('verify')
      .description('check a bundle completely (signature, manifest, every file hash) without writing anything')
      .argument('<bundle...>', 'the .airlock.tar file; for split volumes the first part, NAME.tar.*, the parts index or their folder'),
  )
    .addOption(new Option('--quiet', 'print only the verdict line, not the auditor summary'))
    .addOption(jsonOption())
    .action(async (bundles: string[], flags: TrustFlags & { quiet?: boolean }) => {
      const bundle = oneBundle(bundles);
      const out = context.output(Boolean(flags.json));
      const trust = await trustFrom(flags);
      const bundlePath = resolve(bundle);
      const { result, record } = await withReport('verify', bundlePath, flags, trust, undefined, () =>
        verifyBundle({ bundlePath, trust: trust.policy, allowUnsigned: Boolean(flags.allowUnsigned), bundleSha256: wantsBundleSha256(flags) }),
      );
      if (out.json) return printJson(out, { ok: true, ...result });
      out.stdout(`Verified ${bundle}\n${bundleShaLine(result.bundleSha256)}`);
      renderSigners(out, result.signers);
      for (const repo of result.repos) {
        out.stdout(`  ${repo.type} ${repo.id}@${repo.revision} (commit ${repo.commit}): ${repo.files} files, ${formatBytes(repo.bytes)}${repo.referenced > 0 ? ` — delta: ${repo.referenced} of them are not in the bundle; import takes them from the cache after re-hashing them` : ''}\n`);
      }
      out.stdout(`  ${result.files} files, ${formatBytes(result.bytes)}: every hash matches the signed SHA256SUMS\n`);
      if (!flags.quiet) out.stdout(`\n${auditSummary(record)}`);
    });
}

export function registerImport(program: Command, context: CommandContext): void {
  addTrustOptions(
    program
      .command('import')
      .description('verify a bundle, then commit it atomically into the Hugging Face hub cache')
      .argument('<bundle...>', 'the .airlock.tar file; for split volumes the first part, NAME.tar.*, the parts index or their folder'),
  )
    .option('--layout <layout>', 'hf (hub cache), modelscope (modelscope cache) or dir (plain files in --local-dir); default: modelscope for a bundle from ModelScope, else hf')
    .option('--cache-dir <dir>', 'target cache (hf default: $HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub; modelscope: $MODELSCOPE_CACHE, else ~/.cache/modelscope/hub)')
    .option('--local-dir <dir>', 'with --layout dir: write plain files (plus huggingface_hub local_dir metadata) here')
    .option('--no-weight-check', 'skip the safetensors header and shard-index checks (also: AIRLOCK_NO_WEIGHT_CHECK=1)')
    .option('--no-space-check', 'skip the free-space check before the payload is read')
    .option('--repo <repo>', 'import only this repo of a multi-repo bundle (repeatable: org/name, datasets/org/name, org/name@rev); the whole bundle is still verified', collect, [])
    .addOption(jsonOption())
    .action(async (bundles: string[], flags: TrustFlags & { cacheDir?: string; layout?: string; localDir?: string; weightCheck: boolean; spaceCheck: boolean; repo: string[] }) => {
      const bundle = oneBundle(bundles);
      const out = context.output(Boolean(flags.json));
      if (flags.layout !== undefined && !['hf', 'modelscope', 'dir'].includes(flags.layout)) {
        throw new AirlockError('E_USAGE', `--layout must be hf, modelscope or dir, not ${JSON.stringify(flags.layout)}`);
      }
      if (flags.layout === 'dir' && flags.localDir === undefined) throw new AirlockError('E_USAGE', '--layout dir needs --local-dir DIR');
      if (flags.localDir !== undefined && flags.layout !== undefined && flags.layout !== 'dir') {
        throw new AirlockError('E_USAGE', `--local-dir goes with --layout dir, not --layout ${flags.layout}`);
      }
      if (flags.localDir !== undefined && flags.cacheDir !== undefined) throw new AirlockError('E_USAGE', '--local-dir and --cache-dir contradict each other', { hint: 'drop one of them' });
      const trust = await trustFrom(flags);
      const bundlePath = resolve(bundle);
      let layout = flags.layout as ImportLayout | undefined;
      if (layout === undefined && flags.localDir !== undefined) layout = 'dir';
      if (layout === undefined) {
        // only picks the default target; everything imported is checked against the signed manifest. A
        // bundle whose head cannot be read falls back to hf: the import itself then names the damage precisely.
        const head = await inspectBundle(bundlePath).catch(() => undefined);
        layout = head !== undefined && head.manifest.repos.every((r) => r.source.kind === 'modelscope') ? 'modelscope' : 'hf';
      }
      const cacheDir =
        layout === 'dir' ? resolve(flags.localDir!) : layout === 'modelscope' ? resolveModelScopeCacheDir(flags.cacheDir, process.env) : resolveHfCacheDir(flags.cacheDir, process.env);
      const { result } = await withReport('import', bundlePath, flags, trust, cacheDir, () =>
        importBundle({
          bundlePath,
          trust: trust.policy,
          allowUnsigned: Boolean(flags.allowUnsigned),
          cacheDir,
          layout,
          weightCheck: flags.weightCheck && !['1', 'on', 'yes', 'true'].includes((process.env['AIRLOCK_NO_WEIGHT_CHECK'] ?? '').trim().toLowerCase()),
          spaceCheck: flags.spaceCheck,
          repos: flags.repo,
          bundleSha256: wantsBundleSha256(flags),
        }),
      );
      if (out.json) return printJson(out, { ok: true, cacheDir, layout, ...result });
      out.stdout(`Imported ${bundle} into ${cacheDir} (layout ${layout})\n${bundleShaLine(result.bundleSha256)}`);
      renderSigners(out, result.signers);
      for (const repo of result.repos) {
        out.stdout(
          `  ${repo.type} ${repo.id}@${repo.revision} (commit ${repo.commit}): ${repo.files} files, ${formatBytes(repo.bytes)}` +
            ` — ${repo.filesWritten} written, ${repo.filesReused} already present\n`,
        );
      }
      for (const warning of result.warnings) out.stderr(`airlock: warning: ${warning}\n`);
    });
}

export function registerInspect(program: Command, context: CommandContext): void {
  program
    .command('inspect')
    .description('show what a bundle holds, without keys (the signature is NOT checked)')
    .argument('<bundle...>', 'the .airlock.tar file; for split volumes the first part, NAME.tar.*, the parts index or their folder')
    .addOption(jsonOption())
    .action(async (bundles: string[], flags: { json?: boolean }) => {
      const bundle = oneBundle(bundles);
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
        out.stdout(`  ${repo.type} ${repo.id}@${repo.revision} → ${repo.commit} from ${repo.source.kind} ${repo.source.endpoint}: ${repo.files.length} files, ${formatBytes(bytes)}\n`);
        for (const f of repo.files) {
          const st = f.safetensors === undefined ? '' : `  ${f.safetensors.tensors} tensors (${Object.entries(f.safetensors.dtypes).map(([d, n]) => `${d} ×${n}`).join(', ')})`;
          out.stdout(`    ${f.path}  ${formatBytes(f.size)}${f.lfs ? '  (lfs)' : ''}${st}\n`);
        }
      }
    });
}
