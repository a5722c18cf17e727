/** Flags → ServeOptions: listen address, token file, TLS files, cache roots (library work, not the CLI's). */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { resolveHfCacheDir } from '../cache/hf-hub.js';
import { resolveModelScopeCacheDir } from '../cache/modelscope.js';
import { AirlockError, fsError } from '../errors.js';
import type { ServeOptions } from './server.js';

export interface ServeFlags {
  cacheDir?: string;
  modelscopeCacheDir?: string;
  listen?: string;
  tokenFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  maxConnections?: string;
  /** Tree listing page size (the Hub's is 1000); small values exercise client pagination. */
  treePageSize?: string;
}

/** `HOST:PORT`, `[::1]:PORT`, or `:PORT` (loopback). */
export function parseListen(value: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new AirlockError('E_USAGE', `--listen ${JSON.stringify(value)} is not HOST:PORT`, { subject: value, hint: 'for example --listen 127.0.0.1:8080 or --listen [::1]:8080 or --listen 0.0.0.0:8080' });
  }
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

async function readFlagFile(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    throw fsError(error, `read the ${what}`, path);
  }
}

export async function loadServeConfig(flags: ServeFlags, env: NodeJS.ProcessEnv = process.env): Promise<Omit<ServeOptions, 'onAccess' | 'onEvent'>> {
  const { host, port } = parseListen(flags.listen ?? '127.0.0.1:8080');
  let tokens: string[] | undefined;
  if (flags.tokenFile !== undefined) {
    tokens = (await readFlagFile(flags.tokenFile, 'token file'))
      .toString('utf8')
      .split(/\r?\n/)
      .map((line) => line.trim())
      .filter((line) => line !== '' && !line.startsWith('#'));
    if (tokens.length === 0) {
      throw new AirlockError('E_USAGE', `token file ${flags.tokenFile} holds no token`, { subject: flags.tokenFile, hint: 'one token per line; clients send it as HF_TOKEN' });
    }
  }
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) {
    throw new AirlockError('E_USAGE', 'TLS needs both --tls-cert and --tls-key', { hint: 'PEM files: the certificate (chain) and its private key' });
  }
  const tls = flags.tlsCert !== undefined && flags.tlsKey !== undefined ? { cert: await readFlagFile(flags.tlsCert, 'TLS certificate'), key: await readFlagFile(flags.tlsKey, 'TLS key') } : undefined;
  const cacheDir = resolveHfCacheDir(flags.cacheDir, env);
  const modelscopeDir = resolveModelScopeCacheDir(flags.modelscopeCacheDir, env);
  const maxConnections = flags.maxConnections === undefined ? undefined : Number(flags.maxConnections);
  if (maxConnections !== undefined && (!Number.isSafeInteger(maxConnections) || maxConnections < 1)) {
    throw new AirlockError('E_USAGE', `--max-connections ${flags.maxConnections} is not a positive integer`, { hint: 'for example --max-connections 256' });
  }
  const pageSize = flags.treePageSize === undefined ? undefined : Number(flags.treePageSize);
  if (pageSize !== undefined && (!Number.isSafeInteger(pageSize) || pageSize < 1)) {
    throw new AirlockError('E_USAGE', `--tree-page-size ${flags.treePageSize} is not a positive integer`, { hint: 'for example --tree-page-size 1000' });
  }
  return {
    cacheDir,
    ...(pageSize ? { pageSize, expandPageSize: Math.min(pageSize, 50) } : {}),
    modelscopeDir: existsSync(modelscopeDir) ? modelscopeDir : undefined,
    host,
    port,
    ...(tokens ? { tokens } : {}),
    tls,
    ...(maxConnections ? { maxConnections } : {}),
  };
}
