import { readFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { AirlockError, inputFileError } from '../errors.js';
import { exportBundle } from '../export/exporter.js';
import { describeFetchEvent, type FetchEvent, type SnapshotPlan } from '../export/fetch.js';
import { ProgressModel } from '../export/progress.js';
import { parseRate, TokenBucket } from '../export/rate-limit.js';
import { createDispatcher, type RequestRecord } from '../hub/http.js';
import { describeStatus, retryPolicyFromEnv } from '../hub/retry.js';
import { resolveEndpoint, resolveToken } from '../hub/auth.js';
import { createHuggingFaceClient } from '../hub/huggingface/client.js';
import { parseRepoArg } from '../hub/repo-ref.js';
import { createModelScopeClient, MODELSCOPE_DEFAULT_REVISION, resolveModelScopeEndpoint, resolveModelScopeToken } from '../hub/modelscope/client.js';
import { createHfCacheClient } from '../hub/hf-cache/client.js';
import { resolveHfCacheDir } from '../cache/hf-hub.js';
import { parseBundleSpec, resolveSpecPaths, type BundleSpec, type SpecSource } from '../spec/bundle-spec.js';
import type { HubClient } from '../hub/types.js';
import type { ExportRepo } from '../export/exporter.js';
import { chooseSigner, loadTrustedKeys } from '../signing/keyring.js';
import { verifyDetachedSignature } from '../signing/verify.js';
import { parseInventory, type Inventory } from '../cache/inventory.js';
import { checkSplitSize, indexPathFor, parseSize } from '../bundle/parts.js';
import { resolveOutputPath } from '../export/output-path.js';
import { formatBytes, LiveBlock, printResult, progressLines, progressTotalLine, type Output } from './render.js';
import { bundleJson } from './result.js';
import { jsonOption, type CommandContext } from './main.js';
import { spacedFingerprint } from './keys.js';

interface ExportFlags {
  trustedKeys: string[];
  allowUnsignedHave?: boolean;
  repoType: string;
  revision?: string;
  source: string;
  spec?: string;
  fromCache: string[];
  cacheDir?: string;
  weightCheck: boolean;
  endpoint?: string;
  token?: string;
  include: string[];
  exclude: string[];
  output?: string;
  workDir?: string;
  signKey?: string;
  passphraseFile?: string;
  gpgSign?: string;
  gpgHomedir?: string;
  splitSize?: string;
  sha256?: boolean;
  have?: string;
  unsigned?: boolean;
  force?: boolean;
  keepWorkDir?: boolean;
  json?: boolean;
  concurrency: string;
  connectionsPerFile: string;
  proxy?: string;
  maxRate?: string;
  verbose?: boolean;
  spaceCheck: boolean;
}

function positiveInt(flag: string, value: string, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max) {
    throw new AirlockError('E_USAGE', `${flag} must be a whole number from 1 to ${max}, not ${JSON.stringify(value)}`);
  }
  return n;
}

/** How progress reaches the user: bars on a terminal, periodic plain lines otherwise, nothing with --json. */
function progressReporter(out: Output, tty: boolean, columns: () => number): {
  event: (event: FetchEvent) => void;
  bytes: (delta: number, path: string) => void;
  planned: (plans: readonly SnapshotPlan[]) => void;
  log: (text: string) => void;
  stop: () => void;
} {
  const model = new ProgressModel();
  const block = tty ? new LiveBlock(out.stderr) : undefined;
  let started = false;
  let timer: NodeJS.Timeout | undefined;
  const lines = (): string[] => progressLines(model.snapshot(), columns());
  const log = (text: string): void => {
    if (block !== undefined && started) block.log(text, lines());
    else out.stderr(text);
  };
  return {
    planned: (plans) => {
      model.planned(plans);
      started = true;
      // a terminal redraws 4×/s; a log file gets one line every 10 s (AIRLOCK_PROGRESS_INTERVAL_MS)
      const every = block !== undefined ? 250 : Number(process.env['AIRLOCK_PROGRESS_INTERVAL_MS'] ?? 10_000);
      timer = setInterval(() => {
        if (block !== undefined) block.draw(lines());
        else out.stderr(`  ${progressTotalLine(model.snapshot())}\n`);
      }, every);
      timer.unref();
    },
    event: (event) => {
      model.event(event);
      // per-file start lines would drown a log; the bars show them on a terminal
      if (event.kind !== 'downloading') log(`  ${describeFetchEvent(event)}\n`);
    },
    bytes: (delta, path) => model.bytes(delta, path),
    log,
    stop: () => {
      if (timer !== undefined) clearInterval(timer);
      block?.done();
      if (started && block === undefined) out.stderr(`  ${progressTotalLine(model.snapshot())}\n`);
    },
  };
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

function isTruthyEnv(value: string | undefined): boolean {
  return value !== undefined && ['1', 'on', 'yes', 'true'].includes(value.trim().toLowerCase());
}

/**
 * The inventory decides which files a delta bundle leaves out, so it is checked like any input from the
 * other side: its detached signature (`cache inventory --sign-key` writes FILE.asc) must verify against
 * --trusted-keys. An unsigned inventory is refused unless --allow-unsigned-have says it is expected.
 */
async function readInventory(path: string, trustedKeys: readonly string[], allowUnsigned: boolean): Promise<Inventory> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    throw inputFileError(error, 'inventory', path, '--have');
  }
  const signature = await readFile(`${path}.asc`, 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw inputFileError(error, 'inventory signature', `${path}.asc`, '--have');
  });
  if (signature === undefined) {
    if (!allowUnsigned) {
      throw new AirlockError('E_UNSIGNED', `the inventory ${path} is not signed (${basename(path)}.asc is missing)`, {
        subject: path,
        hint: 'sign it on the offline side (`airlock cache inventory --out have.json --sign-key …`) and pass --trusted-keys with that key, or pass --allow-unsigned-have',
      });
    }
  } else {
    if (trustedKeys.length === 0) {
      throw new AirlockError('E_USAGE', `the inventory ${path} is signed, but no --trusted-keys were given to check it`, {
        subject: path,
        hint: 'pass --trusted-keys with the public key of the offline side that signed the inventory',
      });
    }
    await verifyDetachedSignature(bytes, signature, { keys: await loadTrustedKeys(trustedKeys) }, `${basename(path)}.asc`);
  }
  return parseInventory(bytes, path);
}

export function registerExport(program: Command, context: CommandContext): void {
  program
    .command('export')
    .description('download repo snapshots from a Hugging Face Hub (or mirror), verify every file, write one signed bundle')
    .argument('[repo-id...]', 'repos to export: org/name, datasets/org/name, or org/name@revision (or use --spec / --from-cache)')
    .option('--source <hub>', 'huggingface or modelscope', 'huggingface')
    .option('--spec <file>', 'a bundle spec (airlock.yaml, see docs/bundle-spec.md): many repos, each with its own source, type, revision and patterns')
    .option('--from-cache <repo>', 'bundle a snapshot already in the local Hugging Face cache: org/name[@revision] (repeatable; every blob is re-hashed)', collect, [])
    .option('--cache-dir <dir>', 'hub cache for --from-cache (default: $HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub)')
    .option('--repo-type <type>', 'model or dataset (for ids without a datasets/ prefix)', 'model')
    .option('--revision <rev>', 'branch, tag or commit (resolved once to a commit and pinned; default main, master for modelscope)')
    .option('--endpoint <url>', 'hub endpoint (default: $HF_ENDPOINT, else https://huggingface.co; modelscope: $MODELSCOPE_ENDPOINT, $MODELSCOPE_DOMAIN, else https://www.modelscope.cn)')
    .option('--token <token>', 'access token (default: $HF_TOKEN, $HUGGING_FACE_HUB_TOKEN, or the token file under $HF_HOME; modelscope: $MODELSCOPE_API_TOKEN)')
    .option('--no-weight-check', 'skip the safetensors header and shard-index checks (also: AIRLOCK_NO_WEIGHT_CHECK=1)')
    .option('--include <glob>', 'only files matching this pattern (repeatable; fnmatch rules like allow_patterns)', collect, [])
    .option('--exclude <glob>', 'skip files matching this pattern (repeatable; like ignore_patterns)', collect, [])
    .option('-o, --output <file>', 'bundle to write (default: <name>.airlock.tar); an existing folder or DIR/ means DIR/<name>.airlock.tar (a missing folder is created)')
    .option('--work-dir <dir>', 'where the pinned commit (and downloads from sources without Range support) are kept until the bundle is written (default: <output>.work)')
    .option('--sign-key <file>', 'armored OpenPGP private key that signs SHA256SUMS')
    .option('--passphrase-file <file>', 'file holding the signing key passphrase')
    .option('--gpg-sign <key>', 'sign with the system gpg (gpg-agent, smartcard): key id, fingerprint or user id')
    .option('--gpg-homedir <dir>', 'GnuPG home directory for --gpg-sign (default: $GNUPGHOME or ~/.gnupg)')
    .option('--have <inventory>', 'delta export: leave out LFS files the offline cache already holds (from `airlock cache inventory --out have.json --sign-key …`); its signature (have.json.asc) must verify against --trusted-keys')
    .option('--trusted-keys <file>', 'with --have: public key(s) of the offline side that signed the inventory (repeatable)', collect, [])
    .option('--allow-unsigned-have', 'with --have: accept an inventory without a signature')
    .option('--split-size <size>', 'write volumes NAME.tar.000, .001, … of at most this size (at least 1MiB, at most 10,000 parts; e.g. 3.9GiB for FAT32) plus a signed NAME.parts.json')
    .option('--unsigned', 'write a bundle without a signature (importers refuse it unless told otherwise)')
    .option('--sha256', "also print the whole bundle's SHA-256 (one more read of the bundle; always done with --split-size)")
    .option('--force', 'replace the output file if it exists')
    .option('--keep-work-dir', 'keep downloaded files after the bundle is written')
    .option('--concurrency <n>', 'files downloaded at once', '4')
    .option('--connections-per-file <n>', 'parallel Range requests per large file (≥ 8 MiB per part); hashed in order as parts complete', '1')
    .option('--proxy <url>', 'proxy for every request (default: $HTTPS_PROXY / $HTTP_PROXY, honouring $NO_PROXY)')
    .option('--max-rate <rate>', 'bandwidth cap for the whole export, bytes per second: 500K, 10M, 1.5MiB, 1G')
    .option('--verbose', 'log every request (method, URL without query, status, bytes, time) to stderr')
    .option('--no-space-check', 'skip the free-space check before downloading')
    .addOption(jsonOption())
    .action(async (repoArgs: string[], flags: ExportFlags) => {
      const out = context.output(Boolean(flags.json));
      if (flags.repoType !== 'model' && flags.repoType !== 'dataset') {
        throw new AirlockError('E_USAGE', `--repo-type must be model or dataset, not ${JSON.stringify(flags.repoType)}`);
      }
      if (flags.source !== 'huggingface' && flags.source !== 'modelscope') {
        throw new AirlockError('E_USAGE', `--source must be huggingface or modelscope, not ${JSON.stringify(flags.source)}`, {
          hint: 'to bundle from the local Hugging Face cache use --from-cache org/name[@revision]',
        });
      }
      const modes = [repoArgs.length > 0 ? 'repo ids' : undefined, flags.spec !== undefined ? '--spec' : undefined, flags.fromCache.length > 0 ? '--from-cache' : undefined].filter(
        (m): m is string => m !== undefined,
      );
      if (modes.length === 0) {
        throw new AirlockError('E_USAGE', 'nothing to export', { hint: 'name repos (airlock export acme/tiny-llm …), or pass --spec airlock.yaml or --from-cache acme/tiny-llm' });
      }
      if (modes.length > 1) throw new AirlockError('E_USAGE', `${modes.join(' and ')} cannot be combined`, { hint: 'list every repo in the spec instead' });
      let spec: BundleSpec | undefined;
      if (flags.spec !== undefined) {
        const specPath = resolve(flags.spec);
        const text = await readFile(specPath, 'utf8').catch((error: unknown) => {
          throw inputFileError(error, 'bundle spec', specPath, '--spec');
        });
        spec = resolveSpecPaths(parseBundleSpec(text, flags.spec), specPath);
      }
      type Wanted = { source: SpecSource; ref: ExportRepo; endpoint?: string | undefined };
      const wanted: Wanted[] = [];
      if (spec !== undefined) {
        for (const r of spec.repos) {
          wanted.push({ source: r.source, endpoint: r.endpoint, ref: { type: r.type, id: r.id, revision: r.revision, include: r.include, exclude: r.exclude } });
        }
      } else if (flags.fromCache.length > 0) {
        for (const arg of flags.fromCache) wanted.push({ source: 'hf-cache', ref: parseRepoArg(arg, { type: flags.repoType, revision: flags.revision ?? 'main' }) });
      } else {
        const revision = flags.revision ?? (flags.source === 'modelscope' ? MODELSCOPE_DEFAULT_REVISION : 'main');
        for (const arg of repoArgs) wanted.push({ source: flags.source, ref: parseRepoArg(arg, { type: flags.repoType, revision }) });
      }
      const needsNetwork = wanted.some((w) => w.source !== 'hf-cache');
      if (needsNetwork && isTruthyEnv(process.env['HF_HUB_OFFLINE']) && wanted.some((w) => w.source === 'huggingface')) {
        throw new AirlockError('E_USAGE', 'HF_HUB_OFFLINE is set, but export needs to reach the hub', {
          hint: 'unset HF_HUB_OFFLINE for this command (it is meant for the offline side), or bundle from the local cache with --from-cache',
        });
      }
      if (flags.signKey === undefined && flags.gpgSign === undefined && !flags.unsigned && spec?.signingKey !== undefined) flags.signKey = spec.signingKey;
      const signing = flags.signKey !== undefined || flags.gpgSign !== undefined;
      if (signing && flags.unsigned) {
        throw new AirlockError('E_USAGE', `${flags.signKey !== undefined ? '--sign-key' : '--gpg-sign'} and --unsigned contradict each other`, { hint: 'drop one of them' });
      }
      if (!signing && !flags.unsigned) {
        throw new AirlockError('E_USAGE', 'refusing to write an unsigned bundle', {
          hint: 'pass --sign-key signer.key.asc (create one with `airlock keys generate`) or --gpg-sign KEY, or --unsigned if you really mean it',
        });
      }
      const splitSize = flags.splitSize === undefined ? spec?.splitSize : parseSize(flags.splitSize);
      if (splitSize !== undefined) checkSplitSize(splitSize, flags.splitSize === undefined ? `splitSize in ${flags.spec}` : '--split-size');
      // load the key before any download: a wrong passphrase should cost nothing
      const signer = await chooseSigner(flags);
      const outPath = await resolveOutputPath(flags.output ?? spec?.output, wanted[0]!.ref.id);
      const workDir = resolve(flags.workDir ?? `${outPath}.work`);
      const concurrency = positiveInt('--concurrency', flags.concurrency, 64);
      const connectionsPerFile = positiveInt('--connections-per-file', flags.connectionsPerFile, 16);
      const throttle = flags.maxRate === undefined ? undefined : new TokenBucket(parseRate(flags.maxRate));
      const dispatcher = createDispatcher({ proxy: flags.proxy });
      const retry = retryPolicyFromEnv(process.env);
      const tty = !out.json && process.stderr.isTTY === true;
      const progress = out.json ? undefined : progressReporter(out, tty, () => process.stderr.columns ?? 80);
      const log = (text: string): void => progress?.log(text);
      const onRequest = flags.verbose && !out.json
        ? (r: RequestRecord): void => log(`  ${r.method} ${r.url} → ${r.status === 0 ? 'no response' : r.status} ${formatBytes(r.bytes)} ${Math.round(r.ms)} ms\n`)
        : undefined;
      // one client per (source, endpoint)
      const clients = new Map<string, HubClient>();
      const clientFor = (w: Wanted): HubClient => {
        if (w.source === 'hf-cache') {
          const cacheDir = resolveHfCacheDir(flags.cacheDir, process.env);
          const key = `hf-cache ${cacheDir}`;
          let client = clients.get(key);
          if (client === undefined) clients.set(key, (client = createHfCacheClient({ cacheDir })));
          return client;
        }
        const flagEndpoint = w.endpoint ?? flags.endpoint;
        const endpoint = w.source === 'modelscope' ? resolveModelScopeEndpoint(flagEndpoint, process.env) : resolveEndpoint(flagEndpoint, process.env);
        const key = `${w.source} ${endpoint}`;
        let client = clients.get(key);
        if (client !== undefined) return client;
        if (w.source === 'modelscope') {
          client = createModelScopeClient({
            endpoint,
            token: resolveModelScopeToken(flags.token, process.env),
            dispatcher,
            ...(onRequest === undefined ? {} : { onRequest }),
          });
        } else {
          client = createHuggingFaceClient({
            endpoint,
            token: resolveToken(flags.token, process.env),
            dispatcher,
            retry,
            onRetry: (e) => log(`  ${e.what}: attempt ${e.attempt} of ${e.attempts} failed (${describeStatus(e.status)}); retrying in ${(e.delayMs / 1000).toFixed(1)} s\n`),
            onSignedUrlExpired: (e) => log(`  ${e.path}: the download URL ${e.url} answered ${e.status} (signature expired?); asking the hub for a fresh one\n`),
            ...(onRequest === undefined ? {} : { onRequest }),
          });
        }
        clients.set(key, client);
        return client;
      };
      const repos: ExportRepo[] = wanted.map((w) => ({ ...w.ref, client: clientFor(w) }));
      const weightCheck = flags.weightCheck && !isTruthyEnv(process.env['AIRLOCK_NO_WEIGHT_CHECK']);
      const fromWhere = [...new Set(repos.map((r) => r.client!.endpoint))].join(', ');
      if (!out.json) out.stderr(`Exporting ${repos.map((r) => `${r.type === 'dataset' ? 'datasets/' : ''}${r.id}@${r.revision}`).join(', ')} from ${fromWhere}\n`);
      const result = await exportBundle({
        repos,
        weightCheck: weightCheck,
        include: flags.include,
        exclude: flags.exclude,
        outPath,
        workDir,
        signer,
        overwrite: Boolean(flags.force),
        keepWorkDir: Boolean(flags.keepWorkDir),
        concurrency,
        connectionsPerFile,
        retry,
        throttle,
        spaceCheck: flags.spaceCheck,
        splitSize,
        bundleSha256: Boolean(flags.sha256),
        have: flags.have === undefined ? undefined : await readInventory(flags.have, flags.trustedKeys, Boolean(flags.allowUnsignedHave)),
        // Ctrl-C / SIGTERM: E_INTERRUPTED (exit 130), the partial bundle kept for a re-run
        handleSignals: true,
        ...(progress === undefined ? {} : { onProgress: progress.event, onBytes: progress.bytes, onPlanned: progress.planned }),
      }).finally(() => progress?.stop());
      if (out.json) {
        // split volumes: bundle.path is the first part (what verify/import take), parts the files written
        const written = result.bundle.parts;
        const folder = dirname(result.bundle.path);
        const bundle =
          written === undefined
            ? bundleJson(result.bundle.path, result.bundle.sha256, result.bundle.bytes)
            : bundleJson(join(folder, written.parts[0]!.name), written.sha256, written.size, written.parts.map((p) => ({ path: join(folder, p.name), bytes: p.size })));
        return printResult(out, {
          bundle: { ...bundle, ...(written === undefined ? {} : { index: indexPathFor(result.bundle.path) }) },
          repos: result.repos,
          signed: result.signer !== undefined,
          // the key export signed with (its own signature, so nothing for airlock to check)
          signers: result.signer === undefined ? [] : [{ ...result.signer, verified: true }],
          signer: result.signer ?? null, // deprecated alias of signers[0]
          content: result.content,
        });
      }
      const files = result.repos.reduce((n, r) => n + r.files, 0);
      const bytes = result.repos.reduce((n, r) => n + r.bytes, 0);
      const parts = result.bundle.parts;
      if (parts === undefined) out.stdout(`Wrote ${result.bundle.path}\n  ${formatBytes(result.bundle.bytes)}${result.bundle.sha256 === undefined ? '' : `, sha256 ${result.bundle.sha256}`}\n`);
      else {
        out.stdout(`Wrote ${parts.parts.length} volumes ${parts.parts[0]!.name} … ${parts.parts.at(-1)!.name} and ${basename(indexPathFor(result.bundle.path))}${result.signer ? ' (+ .asc)' : ''}\n`);
        out.stdout(`  ${formatBytes(result.bundle.bytes)} in parts of at most ${formatBytes(parts.partSize)}; sha256 of the joined tar ${result.bundle.sha256}\n`);
        out.stdout(`  verify or import by naming the first part, ${parts.parts[0]!.name}; \`cat ${parts.bundle}.* > ${parts.bundle}\` rebuilds the single tar\n`);
      }
      for (const r of result.repos) {
        out.stdout(`  ${r.type} ${r.id}@${r.revision} → commit ${r.commit}: ${r.files} files, ${formatBytes(r.bytes)}\n`);
      }
      const referenced = result.repos.reduce((n, r) => n + r.referenced, 0);
      const referencedBytes = result.repos.reduce((n, r) => n + r.referencedBytes, 0);
      out.stdout(`  ${files - referenced} files, ${formatBytes(bytes - referencedBytes)} verified against the ${spec === undefined && flags.fromCache.length > 0 ? "cache's blob names" : "hub's hashes"}${weightCheck ? '; safetensors headers and shard indexes checked' : ' (weight check skipped: --no-weight-check / AIRLOCK_NO_WEIGHT_CHECK)'}\n`);
      if (referenced > 0) {
        out.stdout(`  delta: ${referenced} files, ${formatBytes(referencedBytes)} left out — the offline cache already holds them (import checks they are still there)\n`);
      }
      // recorded in the signed manifest; the offline side judges again and refuses unsafe files by default
      for (const c of result.content.filter((x) => x.verdict === 'unsafe' || x.verdict === 'unscannable')) {
        out.stdout(`  content: ${c.repo} ${c.path} is ${c.verdict.toUpperCase()}${c.unsafeGlobals.length > 0 ? `: loading it would import ${c.unsafeGlobals.join(', ')}` : `: ${c.problems.slice(0, 2).join('; ')}`} — import will refuse it unless allowed\n`);
      }
      for (const c of result.content) for (const n of c.notes) out.stdout(`  content: ${c.repo} ${c.path}: ${n}\n`);
      if (result.content.length > 0) out.stdout(`  content: ${result.content.filter((c) => c.verdict === 'safe').length} pickle file(s) safe, ${result.content.filter((c) => c.verdict === 'no-code').length} carry no code\n`);
      if (result.signer) out.stdout(`  signed by ${spacedFingerprint(result.signer.fingerprint)} ${result.signer.userIds.join(', ')}\n`);
      else out.stdout('  UNSIGNED (--unsigned): importers will refuse it unless told otherwise\n');
    });
}
