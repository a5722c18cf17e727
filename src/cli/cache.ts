import { resolve } from 'node:path';
import type { Command } from 'commander';
import { AirlockError } from '../errors.js';
import { checkOutputFile, STDOUT_PATH, writeOutputFile } from '../fs/output-file.js';
import { resolveHfCacheDir } from '../cache/hf-hub.js';
import { scanHfCache, verifyHfCache, type CacheProblem, type CacheScan } from '../cache/hf-scan.js';
import { formatInventory, inventoryFromScan } from '../cache/inventory.js';
import { refreshVerifiedEvidence } from '../cache/evidence.js';
import { chooseSigner } from '../signing/keyring.js';
import { formatBytes, printFailure, printResult, type Output } from './render.js';
import { jsonOption, type CommandContext } from './main.js';
import { spacedFingerprint } from './keys.js';

function renderScan(out: Output, scan: CacheScan): void {
  if (!scan.exists) {
    out.stdout(`${scan.cacheDir}: nothing imported yet (no hub cache there)\n`);
    return;
  }
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
      if (out.json) return printResult(out, { ...scan, cache: { layout: 'hf', path: scan.cacheDir } });
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
        const error = new AirlockError('E_CACHE_CORRUPT', `${report.problems.length} problem(s) in the cache: ${report.problems.map((p) => p.path).slice(0, 5).join(', ')}`, {
          subject: report.cacheDir,
          hint: `${summary}; re-import the affected repos from a verified bundle (a damaged blob is replaced on import)`,
          details: report, // deprecated: the same report is also at the top level of the JSON
        });
        if (out.json) printFailure(out, { ...report, cache: { layout: 'hf', path: report.cacheDir } }, error);
        throw error;
      }
      // every blob matched its name: the evidence records (for `airlock serve`'s page) say so
      const refreshed = await refreshVerifiedEvidence(
        report.cacheDir,
        report.repos.flatMap((repo) => repo.revisions.map((rev) => ({ folder: repo.folder, commit: rev.commit, allBlobsGood: rev.files.every((f) => f.blob !== undefined) }))),
      ).catch(() => 0);
      if (out.json) return printResult(out, { ...report, cache: { layout: 'hf', path: report.cacheDir }, evidenceRefreshed: refreshed });
      if (!report.exists) return out.stdout(`OK: ${report.cacheDir}: nothing imported yet (no hub cache there), nothing to check
`);
      out.stdout(`OK: ${summary}; no problems${refreshed > 0 ? `; ${refreshed} evidence record(s) marked re-verified` : ''}
`);
      // what loading the files would run (built-in allow-list), judged in the same read; reported, not refused
      for (const c of report.content) {
        const what = c.verdict === 'unsafe' ? `UNSAFE: would import ${c.unsafeGlobals.join(', ')}` : c.verdict === 'unscannable' ? `UNSCANNABLE: ${c.problems.slice(0, 2).join('; ')}` : c.verdict === 'safe' ? `safe: ${c.globals.length} allow-listed global(s)` : 'no code';
        out.stdout(`  content ${c.repo} ${c.path} (${c.format}): ${what}
`);
        for (const n of c.notes) out.stdout(`    note: ${n}
`);
      }
    });

  cache
    .command('inventory')
    .description('write what the cache holds (repos, commits, blob etags) to carry back for delta exports')
    .requiredOption('--out <file>', 'where to write the inventory (JSON); - for standard output. An existing file is refused unless --force')
    .option('--force', 'replace an existing --out file (and its .asc)')
    .option(cacheDirOption, cacheDirHelp)
    .option('--sign-key <file>', 'also write <out>.asc, a detached OpenPGP signature')
    .option('--passphrase-file <file>', 'file holding the signing key passphrase')
    .option('--gpg-sign <key>', 'sign with the system gpg instead')
    .option('--gpg-homedir <dir>', 'GnuPG home directory for --gpg-sign')
    .addOption(jsonOption())
    .action(async (flags: { out: string; force?: boolean; cacheDir?: string; signKey?: string; passphraseFile?: string; gpgSign?: string; gpgHomedir?: string; json?: boolean }) => {
      const out = context.output(Boolean(flags.json));
      const toStdout = flags.out === STDOUT_PATH;
      const signs = flags.signKey !== undefined || flags.gpgSign !== undefined;
      if (toStdout && out.json) throw new AirlockError('E_USAGE', '--out - and --json both want standard output', { hint: 'drop --json (the inventory is JSON), or write it to a file' });
      if (toStdout && signs) throw new AirlockError('E_USAGE', 'a signed inventory needs a file: the signature is written next to it (FILE.asc)', { hint: 'give --out have.json' });
      const path = toStdout ? STDOUT_PATH : resolve(flags.out);
      const force = Boolean(flags.force);
      // every output checked before the cache is scanned (and before a passphrase is asked for)
      if (!toStdout) for (const target of [path, ...(signs ? [`${path}.asc`] : [])]) await checkOutputFile(target, '--out', force);
      const signer = await chooseSigner(flags);
      const scan = await scanHfCache(resolveHfCacheDir(flags.cacheDir, process.env));
      const bytes = formatInventory(inventoryFromScan(scan));
      const blobs = scan.repos.reduce((n, r) => n + r.blobs.length, 0);
      if (toStdout) {
        out.stdout(bytes.toString('utf8'));
        out.stderr(`${scan.exists ? `${scan.repos.length} repos, ${blobs} blobs` : 'nothing imported yet: an empty inventory'} (${scan.cacheDir})\n`);
        return;
      }
      const signature = signer ? await signer.sign(bytes) : undefined;
      await writeOutputFile(path, bytes, '--out', force);
      if (signature !== undefined) await writeOutputFile(`${path}.asc`, signature, '--out', force);
      if (out.json) {
        return printResult(out, {
          cache: { layout: 'hf', path: scan.cacheDir },
          inventory: { path, signature: signature ? `${path}.asc` : null },
          repos: scan.repos.map((r) => ({ type: r.type, id: r.id, blobs: r.blobs.length })),
          blobs,
          path, // deprecated alias of inventory.path
          signature: signature ? `${path}.asc` : null, // deprecated alias of inventory.signature
        });
      }
      out.stdout(`Wrote ${path}: ${scan.exists ? `${scan.repos.length} repos, ${blobs} blobs` : `nothing imported yet into ${scan.cacheDir}: an empty inventory`}\n`);
      if (signer) out.stdout(`  signed: ${path}.asc by ${spacedFingerprint(signer.fingerprint)}\n`);
      if (scan.problems.length > 0) out.stdout(`  note: ${scan.problems.length} problem(s) in the cache; run \`airlock cache verify\`\n`);
    });
}
