/** Builds the registry client for a reference: credentials from the standard places, TLS or --plain-http. */
import { findCredentials } from './credentials.js';
import { RegistryClient } from './client.js';

export interface OpenRegistryOptions {
  registry: string;
  plainHttp?: boolean | undefined;
  caFile?: string | undefined;
  user?: string | undefined;
  password?: string | undefined;
  env: Readonly<Record<string, string | undefined>>;
}

export async function openRegistry(options: OpenRegistryOptions): Promise<RegistryClient> {
  const credentials = await findCredentials({ registry: options.registry, user: options.user, password: options.password, env: options.env });
  return new RegistryClient({ registry: options.registry, plainHttp: options.plainHttp, caFile: options.caFile, credentials });
}
