import { writeFile, rename, rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { AirlockError, fsError } from '../errors.js';
import { resolveHfCacheDir } from '../cache/hf-hub.js';
import { scanHfCache, verifyHfCache, type CacheProblem, type CacheScan } from '../cache/hf-scan.js';
import { formatInventory, inventoryFromScan } from '../cache/inventory.js';
import { refreshVerifiedEvidence } from '../cache/evidence.js';
import { chooseSigner } from '../signing/keyring.js';
import { formatBytes, printJson, type Output } from './render.js';
import { jsonOption, type CommandContext } from './main.js';
import { spacedFingerprint } from './keys.js';

function renderScan(out: Output, scan: CacheScan): void {
  out.stdout(`${scan.cacheDir}: ${scan.repos.length} repos, ${formatBytes(scan.sizeOnDisk)}\n`);
  for (const repo of scan.repos) {
    out.stdout(`  ${repo.type} ${repo.id}  ${formatBytes(repo.sizeOnDisk)}, ${repo.blobs.length} blobs\n`);
    for (const rev of repo.revisions) {
      out.stdout(`    ${rev.commit}  ${rev.files.length} files, ${formatBytes(rev.size)}${rev.refs.length ? `  (${rev.refs.join(', ')})` : ''}\n`);
    }
    if (repo.incompleteFiles.length > 0) out.stdout(`    ${repo.incompleteFiles.length} incomplete download(s) left by another tool\n`);
  }
}

function renderProblems(out: Output, problems: readonly CacheProblem[]): void {
  for (const p of problems) out.stdout(`  PROBLEM ${p.kind}: ${p.path}: ${p.message}\n`);
}

export function registerCache(program: Command, context: CommandContext): void {
  const cache = program.command('cache').description('look at the local Hugging Face hub cache (read-only)');
  const cacheDirOption = '--cache-dir <dir>';
  const cacheDirHelp = 'hub cache (default: $HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub)';

  cache
    .command('list')
    .description('repos, revisions, refs and sizes in the cache (like `hf cache scan`)')
    .option(cacheDirOption, cacheDirHelp)
    .addOption(jsonOption())
    .action(async (flags: { cacheDir?: string; json?: boolean }) => {
      const out = context.output(Boolean(flags.json));
      const scan = await scanHfCache(resolveHfCacheDir(flags.cacheDir, process.env));
      if (out.json) return printJson(out, { ok: true, ...scan });
      renderScan(out, scan);
      renderProblems(out, scan.problems);
    });

  cache
    .command('verify')
    .description('re-hash every blob offline and report corrupted blobs, dangling links and bad refs')
    .option(cacheDirOption, cacheDirHelp)
    .addOption(jsonOption())
    .action(async (flags: { cacheDir?: string; json?: boolean }) => {
      const out = context.output(Boolean(flags.json));
      const report = await verifyHfCache(resolveHfCacheDir(flags.cacheDir, process.env));
      const summary = `${report.blobsChecked} blobs, ${formatBytes(report.bytesChecked)} re-hashed in ${report.cacheDir}`;
      if (report.problems.length > 0) {
        if (!out.json) renderProblems(out, report.problems);
        throw new AirlockError('E_CACHE_CORRUPT', `${report.problems.length} problem(s) in the cache: ${report.problems.map((p) => p.path).slice(0, 5).join(', ')}`, {
          subject: report.cacheDir,
          hint: `${summary}; re-import the affected repos from a verified bundle (a damaged blob is replaced on import)`,
          details: report,
        });
      }
      // every blob matched its name: the evidence records (for `airlock serve`'s page) say so
      const refreshed = await refreshVerifiedEvidence(
        report.cacheDir,
        report.repos.flatMap((repo) => repo.revisions.map((rev) => ({ folder: repo.folder, commit: rev.commit, allBlobsGood: rev.files.every((f) => f.blob !== undefined) }))),
      ).catch(() => 0);
      if (out.json) return printJson(out, { ok: true, ...report, evidenceRefreshed: refreshed });
      out.stdout(`OK: ${summary}; no problems${refreshed > 0 ? `; ${refreshed} evidence record(s) marked re-verified` : ''}\n`);
    });

  cache
    .command('inventory')
    .description('write what the cache holds (repos, commits, blob etags) to carry back for delta exports')
    .requiredOption('--out <file>', 'where to write the inventory (JSON)')
    .option(cacheDirOption, cacheDirHelp)
    .option('--sign-key <file>', 'also write <out>.asc, a detached OpenPGP signature')
    .option('--passphrase-file <file>', 'file holding the signing key passphrase')
    .option('--gpg-sign <key>', 'sign with the system gpg instead')
    .option('--gpg-homedir <dir>', 'GnuPG home directory for --gpg-sign')
    .addOption(jsonOption())
    .action(async (flags: { out: string; cacheDir?: string; signKey?: string; passphraseFile?: string; gpgSign?: string; gpgHomedir?: string; json?: boolean }) => {
      const out = context.output(Boolean(flags.json));
      const signer = await chooseSigner(flags);
      const scan = await scanHfCache(resolveHfCacheDir(flags.cacheDir, process.env));
      const bytes = formatInventory(inventoryFromScan(scan));
      const path = resolve(flags.out);
      const signature = signer ? await signer.sign(bytes) : undefined;
      for (const [target, data] of [[path, bytes], ...(signature ? [[`${path}.asc`, Buffer.from(signature)]] : [])] as Array<[string, Buffer]>) {
        try {
          await writeFile(`${target}.tmp`, data);
          await rename(`${target}.tmp`, target);
        } catch (error) {
          await rm(`${target}.tmp`, { force: true });
          throw fsError(error, 'write', target);
        }
      }
      const blobs = scan.repos.reduce((n, r) => n + r.blobs.length, 0);
      if (out.json) return printJson(out, { ok: true, path, signature: signature ? `${path}.asc` : null, repos: scan.repos.length, blobs });
      out.stdout(`Wrote ${path}: ${scan.repos.length} repos, ${blobs} blobs\n`);
      if (signer) out.stdout(`  signed: ${path}.asc by ${spacedFingerprint(signer.fingerprint)}\n`);
      if (scan.problems.length > 0) out.stdout(`  note: ${scan.problems.length} problem(s) in the cache; run \`airlock cache verify\`\n`);
    });
}
