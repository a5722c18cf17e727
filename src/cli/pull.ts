import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { AirlockError } from '../errors.js';
import { resolveHfCacheDir } from '../cache/hf-hub.js';
import { resolveModelScopeCacheDir } from '../cache/modelscope.js';
import { retryPolicyFromEnv } from '../hub/retry.js';
import type { ImportLayout } from '../import/staging-sink.js';
import { parseOciReference, pullArtifact, readArtifact } from '../registry/index.js';
import { addTrustOptions, renderSigners, trustFrom, type TrustFlags } from './import.js';
import { addContentOptions, contentPolicyFrom, renderContent, type ContentFlags } from './content-options.js';
import { jsonOption, type CommandContext } from './main.js';
import { addRegistryOptions, registryFrom, type RegistryFlags } from './registry-flags.js';
import { formatBytes, printResult, terminalReadProgress, type Output } from './render.js';
import { bundleJson, verifiedSigners } from './result.js';
import { summarizeRepos } from '../import/summary.js';

export function registerPull(program: Command, context: CommandContext): void {
  const command = addRegistryOptions(
    addTrustOptions(
      program
        .command('pull')
        .description('verify an artifact `publish` made against pinned keys, then commit it atomically into the cache')
        .argument('<reference>', 'oci://HOST[:PORT]/PREFIX/ORG/NAME:TAG (tag = revision or commit id) or …@sha256:…'),
    ),
  )
    .option('--layout <layout>', 'hf (hub cache, default), modelscope (modelscope cache) or dir (plain files in --local-dir)')
    .option('--cache-dir <dir>', 'target cache (defaults as for import)')
    .option('--local-dir <dir>', 'with --layout dir: write plain files here')
    .option('--no-weight-check', 'skip the safetensors header and shard-index checks')
    .option('--no-space-check', 'skip the free-space check before the download')
    .option('--concurrency <n>', 'layers downloaded at once (default: 4 large ones and 16 under 4 MiB)')
    .addOption(new Option('--quiet', 'print only the one result line (no details, no progress); errors still go to stderr'))
    .addOption(jsonOption());
  addContentOptions(command).action(async (text: string, flags: TrustFlags & RegistryFlags & ContentFlags & { layout?: string; cacheDir?: string; localDir?: string; weightCheck: boolean; spaceCheck: boolean; concurrency?: string; quiet?: boolean }) => {
      const out = context.output(Boolean(flags.json));
      const reference = parseOciReference(text, { needReference: true });
      if (flags.layout !== undefined && !['hf', 'modelscope', 'dir'].includes(flags.layout)) throw new AirlockError('E_USAGE', `--layout must be hf, modelscope or dir, not ${JSON.stringify(flags.layout)}`);
      const layout = (flags.layout ?? (flags.localDir !== undefined ? 'dir' : 'hf')) as ImportLayout;
      if (layout === 'dir' && flags.localDir === undefined) throw new AirlockError('E_USAGE', '--layout dir needs --local-dir DIR');
      if (flags.localDir !== undefined && layout !== 'dir') throw new AirlockError('E_USAGE', `--local-dir goes with --layout dir, not --layout ${layout}`);
      const concurrency = flags.concurrency === undefined ? undefined : Number(flags.concurrency);
      if (concurrency !== undefined && (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64)) throw new AirlockError('E_USAGE', `--concurrency must be 1…64, not ${flags.concurrency}`);
      const trust = await trustFrom(flags);
      const contentPolicy = await contentPolicyFrom(flags);
      const cacheDir = layout === 'dir' ? resolve(flags.localDir!) : layout === 'modelscope' ? resolveModelScopeCacheDir(flags.cacheDir, process.env) : resolveHfCacheDir(flags.cacheDir, process.env);
      const client = await registryFrom(reference.registry, flags);
      // a live progress block on a terminal; else one line per layer as it lands (none under --quiet/--json)
      const display = terminalReadProgress(out, !flags.quiet);
      try {
        const result = await pullArtifact({
          reference,
          client,
          trust: trust.policy,
          allowUnsigned: Boolean(flags.allowUnsigned),
          cacheDir,
          layout,
          weightCheck: flags.weightCheck,
          spaceCheck: flags.spaceCheck,
          contentPolicy,
          retry: retryPolicyFromEnv(process.env),
          concurrency,
          onLayer: (e) => {
            if (!out.json && !flags.quiet && display === undefined) out.stderr(`  verified ${e.path} (${formatBytes(e.size)})\n`);
          },
          ...(display === undefined ? {} : { progress: display.progress }),
        }).finally(() => display?.stop());
        // the one vocabulary (schemas/cli-result.schema.json): repos is an array, cache names layout and path
        if (out.json) return printResult(out, { ...result, repos: [result.repo], signers: verifiedSigners(result.signers), cache: { layout: result.layout, path: result.cacheDir } });
        if (flags.quiet) return out.stdout(`Pulled ${result.reference} into ${cacheDir}: ${result.repo.files} files, ${formatBytes(result.repo.bytes)}\n`);
        out.stdout(`Pulled ${result.reference} (${result.digest}) into ${cacheDir} (layout ${layout})\n`);
        renderSigners(out, result.signers);
        const r = result.repo;
        out.stdout(`  ${r.type} ${r.id}@${r.revision} (commit ${r.commit}): ${r.files} files, ${formatBytes(r.bytes)} — ${r.filesWritten} written, ${r.filesReused} already present\n`);
        renderContent(out, result.content);
      } finally {
        await client.close();
      }
    });
}

/** `airlock inspect oci://…`: what an artifact holds, by its own trust material — the signature NOT checked. */
export async function inspectOci(out: Output, text: string, flags: RegistryFlags): Promise<void> {
  const reference = parseOciReference(text, { needReference: true });
  const client = await registryFrom(reference.registry, flags);
  try {
    const a = await readArtifact(client, reference, undefined);
    if (out.json) {
      return printResult(out, {
        reference: a.reference,
        digest: a.digest,
        bundle: bundleJson(a.reference, null, null),
        signed: a.signed,
        signatureChecked: false,
        // NOT checked here: who signed is only known once pull checks the signature against pinned keys
        signers: [],
        repos: summarizeRepos({ ...a.manifest, repos: [a.repo] }),
        manifest: a.manifest,
      });
    }
    out.stdout(`${a.reference} (${a.digest}): ModelPack artifact of an airlock bundle made by model-airlock ${a.manifest.tool.version} at ${a.manifest.createdAt}\n`);
    out.stdout(a.signed ? '  signed — NOT checked here; run `airlock pull --trusted-keys …`\n' : '  UNSIGNED\n');
    const repo = a.repo;
    out.stdout(`  ${repo.type} ${repo.id}@${repo.revision} → ${repo.commit} from ${repo.source.kind} ${repo.source.endpoint}: ${repo.files.length} files, ${formatBytes(repo.files.reduce((n, f) => n + f.size, 0))}\n`);
    for (const f of repo.files) out.stdout(`    ${f.path}  ${formatBytes(f.size)}\n`);
  } finally {
    await client.close();
  }
}
