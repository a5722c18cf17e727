/** What `airlock keys list` shows about each key in a file: pure, key objects in, plain data out. */
import * as openpgp from 'openpgp';
import { readKeysAnyEncoding } from './verify.js';

export interface SubkeyDescription {
  fingerprint: string;
  algorithm: string;
  created: string;
  /** ISO time, or null when it never expires. */
  expires: string | null;
  revoked: boolean;
  /** From the binding signature's key flags: sign, encrypt, authenticate, certify. */
  usage: string[];
}

export interface KeyDescription extends SubkeyDescription {
  keyId: string;
  userIds: string[];
  secret: boolean;
  subkeys: SubkeyDescription[];
  source: string;
}

function usage(flags: Uint8Array | null | undefined): string[] {
  const bits = flags?.[0] ?? 0;
  const out: string[] = [];
  if (bits & openpgp.enums.keyFlags.certifyKeys) out.push('certify');
  if (bits & openpgp.enums.keyFlags.signData) out.push('sign');
  if (bits & (openpgp.enums.keyFlags.encryptCommunication | openpgp.enums.keyFlags.encryptStorage)) out.push('encrypt');
  if (bits & openpgp.enums.keyFlags.authentication) out.push('authenticate');
  return out;
}

function algorithm(info: openpgp.AlgorithmInfo): string {
  if (info.bits !== undefined) return `${info.algorithm}${info.bits}`;
  return info.curve === undefined ? String(info.algorithm) : `${info.algorithm}/${info.curve}`;
}

function iso(date: Date | number | null): string | null {
  return date instanceof Date ? date.toISOString() : null;
}

export async function describeKey(key: openpgp.Key, source: string): Promise<KeyDescription> {
  const primaryUser = await key.getPrimaryUser(null as unknown as Date).catch(() => undefined);
  const subkeys: SubkeyDescription[] = [];
  for (const subkey of key.getSubkeys()) {
    const binding = [...subkey.bindingSignatures].sort((a, b) => (b.created?.getTime() ?? 0) - (a.created?.getTime() ?? 0))[0];
    subkeys.push({
      fingerprint: subkey.getFingerprint().toUpperCase(),
      algorithm: algorithm(subkey.getAlgorithmInfo()),
      created: subkey.getCreationTime().toISOString(),
      expires: iso(await subkey.getExpirationTime(null as unknown as Date).catch(() => null)),
      revoked: await subkey.isRevoked(undefined as unknown as openpgp.SignaturePacket, undefined as unknown as openpgp.PublicKeyPacket).catch(() => false),
      usage: usage(binding?.keyFlags),
    });
  }
  return {
    fingerprint: key.getFingerprint().toUpperCase(),
    keyId: key.getKeyID().toHex().toUpperCase(),
    algorithm: algorithm(key.getAlgorithmInfo()),
    created: key.getCreationTime().toISOString(),
    expires: iso(await key.getExpirationTime().catch(() => null)),
    revoked: await key.isRevoked().catch(() => false),
    usage: usage(primaryUser?.selfCertification.keyFlags),
    userIds: key.getUserIDs(),
    secret: key.isPrivate(),
    subkeys,
    source,
  };
}

/** Reads every key (public or secret) of an armored or binary file, for listing only. */
export async function readAnyKeys(data: Uint8Array): Promise<openpgp.Key[]> {
  return readKeysAnyEncoding(data);
}
