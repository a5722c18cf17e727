import cluster from 'node:cluster';
import { createWriteStream } from 'node:fs';
import type { Command } from 'commander';
import { AirlockError } from '../errors.js';
import { loadServeConfig, startServer, type ServeFlags } from '../serve/index.js';
import type { Output } from './render.js';
import type { CommandContext } from './main.js';

interface Flags extends ServeFlags {
  accessLog?: string;
  workers: string;
}

function untilSignal(onStop: () => Promise<void>): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      void onStop().then(resolve);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

/**
 * Several processes on one port (node:cluster): each hashes what it serves on its own core. The primary
 * only forks, prints the banner once the first worker listens, replaces a worker that dies, and on
 * SIGINT/SIGTERM stops them all and waits.
 */
async function runPrimary(out: Output, count: number, banner: (url: string) => void): Promise<void> {
  let stopping = false;
  let announced = false;
  const fork = () => {
    const worker = cluster.fork();
    worker.on('message', (message: { url?: string }) => {
      if (!announced && typeof message?.url === 'string') {
        announced = true;
        banner(message.url);
      }
    });
  };
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    out.stderr(`${JSON.stringify({ time: new Date().toISOString(), event: 'worker-exit', pid: worker.process.pid, code, signal })}\n`);
    fork();
  });
  for (let i = 0; i < count; i++) fork();
  await untilSignal(async () => {
    stopping = true;
    out.stderr('airlock serve: stopping\n');
    const workers = Object.values(cluster.workers ?? {}).filter((w) => w !== undefined);
    await Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.isDead()) return resolve();
            w.once('exit', () => resolve());
            w.process.kill('SIGTERM');
          }),
      ),
    );
  });
}

export function registerServe(program: Command, context: CommandContext): void {
  program
    .command('serve')
    .description('serve the verified cache to unmodified Hub and ModelScope clients (HF_ENDPOINT), read-only')
    .option('--cache-dir <dir>', 'hub cache (default: $HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub)')
    .option('--modelscope-cache-dir <dir>', 'ModelScope cache root (default: $MODELSCOPE_CACHE, ~/.cache/modelscope/hub); its API is served when it exists')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:8080')
    .option('--token-file <file>', 'accepted bearer tokens, one per line (clients send HF_TOKEN); without it, no authentication')
    .option('--tls-cert <file>', 'serve HTTPS with this PEM certificate (chain)')
    .option('--tls-key <file>', 'the PEM private key of --tls-cert')
    .option('--max-connections <n>', 'open connections at most, per worker (default 256)')
    .option('--workers <n>', 'processes sharing the port, each hashing on its own core (e.g. one per core)', '1')
    .option('--tree-page-size <n>', 'entries per tree page (default 1000, like the Hub)')
    .option('--access-log <file>', 'append the JSON access log here instead of stdout')
    .action(async (flags: Flags) => {
      const out = context.output(false);
      const config = await loadServeConfig(flags);
      const workers = Number(flags.workers);
      if (!Number.isSafeInteger(workers) || workers < 1 || workers > 64) {
        throw new AirlockError('E_USAGE', `--workers ${flags.workers} is not a number from 1 to 64`, { hint: 'for example --workers 4 (one per core)' });
      }
      const banner = (url: string) => {
        out.stderr(`airlock serve: ${config.cacheDir}${config.modelscopeDir ? ` and ${config.modelscopeDir} (ModelScope)` : ''}, read-only${config.tokens ? ', tokens required' : ''}${workers > 1 ? `, ${workers} workers` : ''}\n`);
        out.stderr(`  export HF_ENDPOINT=${url}\n`);
        if (config.modelscopeDir) out.stderr(`  export MODELSCOPE_ENDPOINT=${url}\n`);
        out.stderr(`  page: ${url}/\n`);
      };
      if (workers > 1 && cluster.isPrimary) return runPrimary(out, workers, banner);

      const log = flags.accessLog === undefined ? undefined : createWriteStream(flags.accessLog, { flags: 'a', mode: 0o640 });
      const server = await startServer({
        ...config,
        onAccess: (entry) => {
          const line = `${JSON.stringify(entry)}\n`;
          if (log) log.write(line);
          else out.stdout(line);
        },
        onEvent: (event) => out.stderr(`${JSON.stringify({ time: new Date().toISOString(), ...(cluster.isWorker ? { pid: process.pid } : {}), ...event })}\n`),
      });
      if (cluster.isWorker) process.send?.({ url: server.url });
      else banner(server.url);
      await untilSignal(async () => {
        if (!cluster.isWorker) out.stderr('airlock serve: stopping\n');
        await server.close();
        await new Promise<void>((resolve) => (log ? log.end(resolve) : resolve()));
        if (cluster.isWorker) cluster.worker?.disconnect();
      });
    });
}
