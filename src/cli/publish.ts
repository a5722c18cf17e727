import { resolve } from 'node:path';
import { addContentOptions, contentPolicyFrom, type ContentFlags } from './content-options.js';
import { Option, type Command } from 'commander';
import { parseSize } from '../bundle/parts.js';
import { AirlockError } from '../errors.js';
import { retryPolicyFromEnv } from '../hub/retry.js';
import { parseOciReference, publishBundle } from '../registry/index.js';
import { addTrustOptions, renderSigners, trustFrom, type TrustFlags } from './import.js';
import { jsonOption, type CommandContext } from './main.js';
import { addRegistryOptions, registryFrom, type RegistryFlags } from './registry-flags.js';
import { formatBytes, printResult, terminalPublishProgress } from './render.js';
import { verifiedSigners } from './result.js';

export function registerPublish(program: Command, context: CommandContext): void {
  const command = addRegistryOptions(
    addTrustOptions(
      program
        .command('publish')
        .description('publish each repo of a verified bundle as a ModelPack artifact to an OCI registry (the upload runs beside the verification; nothing is committed before it passed)')
        .argument('<bundle...>', 'the .airlock.tar file; for split volumes the first part, NAME.tar.*, the parts index or their folder'),
    ),
  )
    .requiredOption('--to <oci://host/prefix>', 'registry and repository prefix: repos land at PREFIX/<org>/<name> (datasets: PREFIX/datasets/<org>/<name>)')
    .option('--concurrency <n>', 'blobs uploaded at once (default: 4 large ones and 16 under 4 MiB)')
    .addOption(new Option('--chunk-size <size>', 'upload blobs larger than this in chunks (PATCH) of this size; default: one streamed PUT per blob'))
    .addOption(new Option('--quiet', 'print only the one result line (no details, no progress); errors still go to stderr'))
    .addOption(jsonOption());
  addContentOptions(command).action(async (bundles: string[], flags: TrustFlags & RegistryFlags & ContentFlags & { to: string; concurrency?: string; chunkSize?: string; quiet?: boolean }) => {
      const out = context.output(Boolean(flags.json));
      if (bundles.length > 1 && !bundles.every((b) => /\.\d{3,}$/.test(b))) throw new AirlockError('E_USAGE', `one bundle at a time, got ${bundles.length}`);
      const target = parseOciReference(flags.to, { needReference: false });
      const concurrency = flags.concurrency === undefined ? undefined : Number(flags.concurrency);
      if (concurrency !== undefined && (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64)) throw new AirlockError('E_USAGE', `--concurrency must be 1…64, not ${flags.concurrency}`);
      const trust = await trustFrom(flags);
      const contentPolicy = await contentPolicyFrom(flags);
      const client = await registryFrom(target.registry, flags);
      // on a terminal: the verification and the upload (side by side) as one live block
      const live = terminalPublishProgress(out, !flags.quiet);
      const showProgress = live !== undefined;
      try {
        const result = await publishBundle({
          bundlePath: resolve(bundles[0]!),
          client,
          prefix: target.repository,
          trust: trust.policy,
          allowUnsigned: Boolean(flags.allowUnsigned),
          contentPolicy,
          retry: retryPolicyFromEnv(process.env),
          concurrency,
          chunkBytes: flags.chunkSize === undefined ? undefined : parseSize(flags.chunkSize),
          onBlob: (e) => {
            if (!out.json && !flags.quiet && !showProgress) out.stderr(`  ${e.action.padEnd(8)} ${e.repository} ${e.name} (${formatBytes(e.size)})\n`);
          },
          ...(live === undefined ? {} : { progress: { verify: live.verify, upload: live.upload } }),
        }).finally(() => live?.stop());
        if (out.json) return printResult(out, { ...result, signers: verifiedSigners(result.signers) });
        if (flags.quiet) {
          return out.stdout(`Published ${bundles[0]} to ${result.repos.flatMap((r) => r.references).join(' ')}: ${result.blobsUploaded} blobs uploaded (${formatBytes(result.bytesUploaded)}), ${result.blobsSkipped + result.blobsMounted} already there\n`);
        }
        out.stdout(`Published ${bundles[0]} to ${target.registry}\n`);
        renderSigners(out, result.signers);
        for (const r of result.repos) {
          out.stdout(`  ${r.type} ${r.id}@${r.revision} → ${r.references.join(' ')} (${r.digest})\n`);
          out.stdout(`    ${r.layers} layers + config = ${r.blobsUploaded + r.blobsMounted + r.blobsSkipped} blobs: ${r.blobsUploaded} uploaded (${formatBytes(r.bytesUploaded)}), ${r.blobsMounted} mounted, ${r.blobsSkipped} already there\n`);
        }
      } finally {
        await client.close();
      }
    });
}
