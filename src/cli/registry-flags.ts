/** Flags shared by the commands that talk to an OCI registry (publish, pull, inspect oci://). */
import type { Command } from 'commander';
import { AirlockError } from '../errors.js';
import { openRegistry, type RegistryClient } from '../registry/index.js';

export interface RegistryFlags {
  plainHttp?: boolean;
  caFile?: string;
  registryUser?: string;
  registryPasswordStdin?: boolean;
}

export function addRegistryOptions(command: Command): Command {
  return command
    .option('--plain-http', 'talk plain HTTP to the registry (only on a network you trust; default https)')
    .option('--ca-file <pem>', "extra CA certificate(s) to trust for the registry's TLS (besides the system CAs and NODE_EXTRA_CA_CERTS)")
    .option('--registry-user <name>', 'registry user name (the password is read from stdin with --registry-password-stdin)')
    .option('--registry-password-stdin', 'read the registry password (or token) from stdin');
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

export async function registryFrom(registry: string, flags: RegistryFlags): Promise<RegistryClient> {
  if (flags.registryPasswordStdin && flags.registryUser === undefined) throw new AirlockError('E_USAGE', '--registry-password-stdin needs --registry-user');
  if (flags.registryUser !== undefined && !flags.registryPasswordStdin) {
    throw new AirlockError('E_USAGE', '--registry-user needs --registry-password-stdin', { hint: 'pipe the password in: … --registry-user NAME --registry-password-stdin < password-file' });
  }
  const password = flags.registryPasswordStdin ? await readStdin() : undefined;
  return openRegistry({ registry, plainHttp: flags.plainHttp, caFile: flags.caFile, user: flags.registryUser, password, env: process.env });
}
