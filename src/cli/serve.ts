import { createWriteStream } from 'node:fs';
import type { Command } from 'commander';
import { loadServeConfig, startServer, type ServeFlags } from '../serve/index.js';
import type { CommandContext } from './main.js';

interface Flags extends ServeFlags {
  accessLog?: string;
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
    .option('--max-connections <n>', 'open connections at most (default 256)')
    .option('--tree-page-size <n>', 'entries per tree page (default 1000, like the Hub)')
    .option('--access-log <file>', 'append the JSON access log here instead of stdout')
    .action(async (flags: Flags) => {
      const out = context.output(false);
      const config = await loadServeConfig(flags);
      const log = flags.accessLog === undefined ? undefined : createWriteStream(flags.accessLog, { flags: 'a', mode: 0o640 });
      const server = await startServer({
        ...config,
        onAccess: (entry) => {
          const line = `${JSON.stringify(entry)}\n`;
          if (log) log.write(line);
          else out.stdout(line);
        },
        onEvent: (event) => out.stderr(`${JSON.stringify({ time: new Date().toISOString(), ...event })}\n`),
      });
      out.stderr(`airlock serve: ${config.cacheDir}${config.modelscopeDir ? ` and ${config.modelscopeDir} (ModelScope)` : ''}, read-only${config.tokens ? ', tokens required' : ''}\n`);
      out.stderr(`  export HF_ENDPOINT=${server.url}\n`);
      if (config.modelscopeDir) out.stderr(`  export MODELSCOPE_ENDPOINT=${server.url}\n`);
      out.stderr(`  page: ${server.url}/\n`);
      await new Promise<void>((resolve) => {
        const stop = () => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          out.stderr('airlock serve: stopping\n');
          void server.close().then(() => {
            log?.end();
            resolve();
          });
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
    });
}
