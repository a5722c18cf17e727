import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import type { UnindexedRead } from '../bundle/parts-unindexed.js';
import { AirlockError, isAirlockError } from '../errors.js';
import { splitBundleOf } from '../bundle/parts.js';
import { isRereadable, STDIN_BUNDLE } from '../import/open-bundle.js';
import { watchInterrupts } from '../import/interrupt.js';
import { auditSummary, hashFile, importBundle, inspectBundle, verificationRecord, verifyBundle, type VerificationRecord } from '../import/index.js';
import { resolveHfCacheDir } from '../cache/hf-hub.js';
import { resolveModelScopeCacheDir } from '../cache/modelscope.js';
import type { ImportLayout } from '../import/staging-sink.js';
import type { Manifest } from '../bundle/manifest.js';
import { checkOutputFile, STDOUT_PATH, writeOutputFile } from '../fs/output-file.js';
import { loadTrustPolicy, type LoadedTrust } from '../signing/keyring.js';
import type { VerifiedSigner } from '../signing/verify.js';
import { toolVersion } from '../version.js';
import { formatBytes, printResult, terminalReadProgress, type Output } from './render.js';
import { bundleJson, uncheckedSigner, verifiedSigners } from './result.js';
import { summarizeRepos } from '../import/summary.js';
import { jsonOption, type CommandContext } from './main.js';
import { spacedFingerprint } from './keys.js';
import { addContentOptions, contentPolicyFrom, renderContent, type ContentFlags } from './content-options.js';

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

/** A bundle argument as a path; `-` stays `-` (standard input). */
const bundleArgPath = (arg: string): string => (arg === STDIN_BUNDLE ? STDIN_BUNDLE : resolve(arg));

export interface TrustFlags {
  trustedKeys: string[];
  trustedFingerprint: string[];
  requireSignatures?: string;
  allowUnsigned?: boolean;
  report?: string;
  force?: boolean;
  sha256?: boolean;
  json?: boolean;
}

export function addTrustOptions(command: Command): Command {
  return command
    .option('--trusted-keys <file>', 'public key file(s) or binary keyring (gpg --export) you trust (repeatable)', collect, [])
    .option('--trusted-fingerprint <fpr>', 'pin: only keys with this fingerprint count (repeatable; replaces the trust file, see docs/security-model.md)', collect, [])
    .option('--require-signatures <n>', 'distinct trusted keys that must have signed (two-person rule; default 1)')
    .option('--allow-unsigned', 'accept a bundle without a signature (hashes are still checked)')
    .option('--report <file>', 'write a JSON verification record (evidence) to this file (- for standard output), also when the bundle is refused; implies --sha256. Checked before the bundle is read; an existing file is refused unless --force')
    .option('--force', 'replace an existing --report file')
    .option('--sha256', "also compute the whole bundle's SHA-256 (a second hash pass; every file is verified either way)");
}

/** The bundle's own SHA-256 costs a second hash pass: only for those who asked, and for the evidence record. */
const wantsBundleSha256 = (flags: TrustFlags): boolean => Boolean(flags.sha256) || flags.report !== undefined;

const bundleShaLine = (sha256: string | undefined): string => (sha256 === undefined ? '' : `  bundle sha256 ${sha256}\n`);

/**
 * --report is checked before anything is read: a record that cannot be written must not cost the
 * verdict of a long verify. `-` puts the record on stdout, so the human summary then goes to stderr.
 */
async function checkReport(flags: TrustFlags, out: Output): Promise<Output> {
  if (flags.report === undefined) return out;
  if (flags.report === STDOUT_PATH) {
    if (out.json) throw new AirlockError('E_USAGE', '--report - and --json both want standard output', { hint: 'write the report to a file, or drop --json' });
    return { ...out, stdout: out.stderr };
  }
  await checkOutputFile(resolve(flags.report), '--report', Boolean(flags.force));
  return out;
}

export async function trustFrom(flags: TrustFlags): Promise<LoadedTrust> {
  if (flags.trustedKeys.length === 0 && !flags.allowUnsigned) {
    throw new AirlockError('E_USAGE', 'no trusted keys given', {
      hint: 'pass --trusted-keys signer.pub.asc (the public key you received from the signer by a separate channel)',
    });
  }
  let requireSignatures: number | undefined;
  if (flags.requireSignatures !== undefined) {
    if (!/^\s*\d+\s*$/.test(flags.requireSignatures) || Number(flags.requireSignatures) < 1) {
      throw new AirlockError('E_USAGE', `--require-signatures takes a number of distinct signers (1, 2, …), not ${JSON.stringify(flags.requireSignatures)}`, {
        hint: 'e.g. --require-signatures 2 for the two-person rule',
      });
    }
    requireSignatures = Number(flags.requireSignatures);
    if (flags.allowUnsigned) throw new AirlockError('E_USAGE', '--require-signatures and --allow-unsigned contradict each other');
  }
  return loadTrustPolicy({ keyFiles: flags.trustedKeys, fingerprints: flags.trustedFingerprint, ...(requireSignatures === undefined ? {} : { requireSignatures }) });
}

export function renderSigners(out: Output, signers: readonly VerifiedSigner[]): void {
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
    if (flags.report === undefined) return;
    const text = `${JSON.stringify(record, null, 2)}\n`;
    if (flags.report === STDOUT_PATH) process.stdout.write(text);
    else await writeOutputFile(resolve(flags.report), text, '--report', Boolean(flags.force));
  };
  let result: T;
  try {
    result = await work();
  } catch (error) {
    if (flags.report !== undefined) {
      // a pipe cannot be read a second time: the record then has no sha256 of the refused bytes
      const file = (await isRereadable(bundlePath)) ? await hashFile(bundlePath) : undefined;
      const failure = isAirlockError(error)
        ? { code: error.code, message: error.message, subject: error.subject }
        : { code: 'E_INTERNAL', message: (error as Error)?.message ?? String(error) };
      await write(verificationRecord({ ...base, finishedAt: new Date(), failure: { ...failure, bundleSha256: file?.sha256, bundleBytes: file?.bytes } }));
    }
    throw error;
  }
  const chosen = 'cacheDir' in result && typeof result.cacheDir === 'string' ? { cacheDir: result.cacheDir } : {};
  const record = verificationRecord({ ...base, ...chosen, finishedAt: new Date(), result });
  await write(record);
  return { result, record };
}

export function registerVerify(program: Command, context: CommandContext): void {
  const command = addTrustOptions(
    program
      .command('verify')
      .description('check a bundle completely (signature, manifest, every file hash) without writing anything')
      .argument('<bundle...>', 'ONE bundle: the .airlock.tar file (`-`: standard input, e.g. a pipe), or for split volumes the first part, the parts of one bundle (NAME.tar.*), the parts index or their folder; for several bundles run the command once each'),
  )
    .addOption(new Option('--quiet', 'print only the one verdict line (no summary, no progress); errors still go to stderr'))
    .addOption(jsonOption());
  addContentOptions(command).action(async (bundles: string[], flags: TrustFlags & ContentFlags & { quiet?: boolean }) => {
      const bundle = oneBundle(bundles);
      const out = await checkReport(flags, context.output(Boolean(flags.json)));
      const trust = await trustFrom(flags);
      const contentPolicy = await contentPolicyFrom(flags);
      const bundlePath = bundleArgPath(bundle);
      const display = terminalReadProgress(out, !flags.quiet);
      // Ctrl-C / SIGTERM: E_INTERRUPTED and exit 130 as import does, also while a FIFO's writer is silent
      const interrupts = watchInterrupts(undefined, true);
      const { result, record } = await withReport('verify', bundlePath, flags, trust, undefined, () =>
        verifyBundle({
          bundlePath,
          signal: interrupts.signal,
          trust: trust.policy,
          allowUnsigned: Boolean(flags.allowUnsigned),
          bundleSha256: wantsBundleSha256(flags),
          contentPolicy,
          ...(display === undefined ? {} : { progress: display.progress }),
        }),
      ).finally(() => {
        interrupts.dispose();
        display?.stop();
      });
      if (out.json) return printResult(out, { ...result, bundle: bundleJson(result.bundlePath, result.bundleSha256, result.bundleBytes), signers: verifiedSigners(result.signers) });
      const signedBy = result.signers.length === 0 ? 'UNSIGNED (accepted with --allow-unsigned)' : `signed by ${result.signers.map((s) => s.fingerprint).join(', ')}`;
      if (flags.quiet) return out.stdout(`Verified ${bundle}: ${result.files} files, ${formatBytes(result.bytes)}, ${signedBy}\n`);
      out.stdout(`Verified ${bundle}\n${bundleShaLine(result.bundleSha256)}`);
      renderSigners(out, result.signers);
      if (result.splitWithoutIndex !== undefined) out.stdout(unindexedLine(result.splitWithoutIndex));
      for (const repo of result.repos) {
        out.stdout(`  ${repo.type} ${repo.id}@${repo.revision} (commit ${repo.commit}): ${repo.files} files, ${formatBytes(repo.bytes)}${repo.referenced > 0 ? ` — delta: ${repo.referenced} of them are not in the bundle; import takes them from the cache after re-hashing them` : ''}\n`);
      }
      out.stdout(`  ${result.files} files, ${formatBytes(result.bytes)}: every hash matches the signed SHA256SUMS\n`);
      renderContent(out, result.content);
      out.stdout(`\n${auditSummary(record)}`);
    });
}

export function registerImport(program: Command, context: CommandContext): void {
  const command = addTrustOptions(
    program
      .command('import')
      .description('verify a bundle, then commit it atomically into the Hugging Face hub cache')
      .argument('<bundle...>', 'ONE bundle: the .airlock.tar file (`-`: standard input, e.g. a pipe), or for split volumes the first part, the parts of one bundle (NAME.tar.*), the parts index or their folder; for several bundles run the command once each'),
  )
    .option('--layout <layout>', 'hf (hub cache), modelscope (modelscope cache) or dir (plain files in --local-dir); default: modelscope for a bundle from ModelScope, else hf')
    .option('--cache-dir <dir>', 'target cache (hf default: $HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub; modelscope: $MODELSCOPE_CACHE, else ~/.cache/modelscope/hub)')
    .option('--local-dir <dir>', 'with --layout dir: write plain files (plus huggingface_hub local_dir metadata) here')
    .option('--no-weight-check', 'skip the safetensors header and shard-index checks (also: AIRLOCK_NO_WEIGHT_CHECK=1)')
    .option('--no-space-check', 'skip the free-space check before the payload is read')
    .option('--repo <repo>', 'import only this repo of a multi-repo bundle (repeatable: org/name, datasets/org/name, org/name@rev); the whole bundle is still verified', collect, [])
    .option('--quiet', 'print only the one result line (no details, no progress); errors still go to stderr')
    .addOption(jsonOption());
  addContentOptions(command).action(async (bundles: string[], flags: TrustFlags & ContentFlags & { cacheDir?: string; layout?: string; localDir?: string; weightCheck: boolean; spaceCheck: boolean; repo: string[]; quiet?: boolean }) => {
      const bundle = oneBundle(bundles);
      const out = await checkReport(flags, context.output(Boolean(flags.json)));
      if (flags.layout !== undefined && !['hf', 'modelscope', 'dir'].includes(flags.layout)) {
        throw new AirlockError('E_USAGE', `--layout must be hf, modelscope or dir, not ${JSON.stringify(flags.layout)}`);
      }
      if (flags.layout === 'dir' && flags.localDir === undefined) throw new AirlockError('E_USAGE', '--layout dir needs --local-dir DIR');
      if (flags.localDir !== undefined && flags.layout !== undefined && flags.layout !== 'dir') {
        throw new AirlockError('E_USAGE', `--local-dir goes with --layout dir, not --layout ${flags.layout}`);
      }
      if (flags.localDir !== undefined && flags.cacheDir !== undefined) throw new AirlockError('E_USAGE', '--local-dir and --cache-dir contradict each other', { hint: 'drop one of them' });
      const trust = await trustFrom(flags);
      const contentPolicy = await contentPolicyFrom(flags);
      const bundlePath = bundleArgPath(bundle);
      let given = flags.layout as ImportLayout | undefined;
      if (given === undefined && flags.localDir !== undefined) given = 'dir';
      const targetOf = (layout: ImportLayout): { layout: ImportLayout; cacheDir: string } => ({
        layout,
        cacheDir:
          layout === 'dir' ? resolve(flags.localDir!) : layout === 'modelscope' ? resolveModelScopeCacheDir(flags.cacheDir, process.env) : resolveHfCacheDir(flags.cacheDir, process.env),
      });
      // without --layout the default depends on the bundle (modelscope for a bundle from ModelScope):
      // decided from the verified manifest during the one read, so a pipe works as well as a file
      const chooseTarget = (manifest: Manifest): { layout: ImportLayout; cacheDir: string } =>
        targetOf(given ?? (manifest.repos.every((r) => r.source.kind === 'modelscope') ? 'modelscope' : 'hf'));
      const display = terminalReadProgress(out, !flags.quiet);
      const { result } = await withReport('import', bundlePath, flags, trust, given === undefined ? undefined : targetOf(given).cacheDir, () =>
        importBundle({
          bundlePath,
          trust: trust.policy,
          allowUnsigned: Boolean(flags.allowUnsigned),
          chooseTarget,
          weightCheck: flags.weightCheck && !['1', 'on', 'yes', 'true'].includes((process.env['AIRLOCK_NO_WEIGHT_CHECK'] ?? '').trim().toLowerCase()),
          spaceCheck: flags.spaceCheck,
          repos: flags.repo,
          bundleSha256: wantsBundleSha256(flags),
          contentPolicy,
          ...(display === undefined ? {} : { progress: display.progress }),
        }),
      ).finally(() => display?.stop());
      if (out.json) {
        return printResult(out, {
          ...result,
          bundle: bundleJson(result.bundlePath, result.bundleSha256, result.bundleBytes),
          signers: verifiedSigners(result.signers),
          cache: { layout: result.layout, path: result.cacheDir },
        });
      }
      if (flags.quiet) return out.stdout(`Imported ${bundle} into ${result.cacheDir}: ${result.files} files, ${formatBytes(result.bytes)}\n`);
      out.stdout(`Imported ${bundle} into ${result.cacheDir} (layout ${result.layout})\n${bundleShaLine(result.bundleSha256)}`);
      renderSigners(out, result.signers);
      if (result.splitWithoutIndex !== undefined) out.stdout(unindexedLine(result.splitWithoutIndex));
      for (const repo of result.repos) {
        out.stdout(
          `  ${repo.type} ${repo.id}@${repo.revision} (commit ${repo.commit}): ${repo.files} files, ${formatBytes(repo.bytes)}` +
            ` — ${repo.filesWritten} written, ${repo.filesReused} already present\n`,
        );
      }
      renderContent(out, result.content);
      for (const warning of result.warnings) out.stderr(`airlock: warning: ${warning}\n`);
    });
}

export function registerInspect(program: Command, context: CommandContext): void {
  program
    .command('inspect')
    .description('show what a bundle holds, without keys (the signature is NOT checked)')
    .argument('<bundle...>', 'ONE bundle: the .airlock.tar file (`-`: standard input, e.g. a pipe), or for split volumes the first part, the parts of one bundle (NAME.tar.*), the parts index or their folder; or oci://HOST/REPO:TAG (an artifact in a registry); for several bundles run the command once each')
    .addOption(jsonOption())
    .option('--plain-http', 'oci:// only: talk plain HTTP to the registry')
    .option('--ca-file <pem>', "oci:// only: extra CA certificate(s) for the registry's TLS")
    .action(async (bundles: string[], flags: { json?: boolean; plainHttp?: boolean; caFile?: string }) => {
      const out = context.output(Boolean(flags.json));
      if (bundles.length === 1 && bundles[0]!.startsWith('oci://')) return (await import('./pull.js')).inspectOci(out, bundles[0]!, flags);
      const bundle = oneBundle(bundles);
      const result = await inspectBundle(bundleArgPath(bundle));
      if (out.json) {
        return printResult(out, {
          ...result,
          bundle: bundleJson(result.bundlePath, null, null),
          repos: summarizeRepos(result.manifest),
          signers: result.signatureFingerprints.map((f) => uncheckedSigner(f)),
        });
      }
      const m = result.manifest;
      out.stdout(`${bundle}: airlock bundle format ${m.formatVersion}, made by model-airlock ${m.tool.version} at ${m.createdAt}\n`);
      out.stdout(
        result.signed
          ? `  signed by ${result.signatureFingerprints.map(spacedFingerprint).join(', ')} — NOT checked here; run \`airlock verify --trusted-keys …\`\n`
          : '  UNSIGNED bundle\n',
      );
      for (const repo of m.repos) {
        const bytes = repo.files.reduce((n, f) => n + f.size, 0);
        out.stdout(`  ${repo.type} ${repo.id}@${repo.revision} → ${repo.commit} from ${repo.source.kind} ${repo.source.endpoint}: ${repo.files.length} files, ${formatBytes(bytes)}\n`);
        for (const f of repo.files) {
          const st = f.safetensors === undefined ? '' : `  ${f.safetensors.tensors} tensors (${Object.entries(f.safetensors.dtypes).map(([d, n]) => `${d} ×${n}`).join(', ')})`;
          const ct = f.content === undefined || f.content.verdict === 'no-code' ? '' : `  [${f.content.verdict}${f.content.globals === undefined ? '' : `: ${f.content.globals.join(', ')}`} — as the exporter judged; verify/import judge again]`;
          out.stdout(`    ${f.path}  ${formatBytes(f.size)}${f.lfs ? '  (lfs)' : ''}${st}${ct}\n`);
        }
      }
    });
}

/** The notice for split volumes read without their index (bundle/parts-unindexed.ts). */
function unindexedLine(read: UnindexedRead): string {
  return (
    `  split volumes: ${read.index} ${read.reason === 'missing' ? 'is missing' : 'has no signature and was not used'}; ` +
    `the ${read.parts} parts were verified as one stream by the signed SHA256SUMS inside the tar (a damaged part could not have been named)\n`
  );
}
