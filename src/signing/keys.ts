/**
 * `airlock keys generate`: a v4 EdDSA (ed25519, "curve25519Legacy") key pair, the kind stock GnuPG 2.2
 * on every offline site can check. The private key file is created with mode 0600 and never overwritten.
 */
import { writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import * as openpgp from 'openpgp';
import { AirlockError, fsError } from '../errors.js';

export interface GeneratedKeys {
  fingerprint: string;
  userId: string;
  privateKeyPath: string;
  publicKeyPath: string;
}

export function parseUserId(userId: string): { name?: string; email?: string } {
  const m = /^\s*(.*?)\s*<([^<>\s]+@[^<>\s]+)>\s*$/.exec(userId);
  if (m) return { ...(m[1] ? { name: m[1] } : {}), email: m[2]! };
  if (/^[^<>\s]+@[^<>\s]+$/.test(userId.trim())) return { email: userId.trim() };
  if (userId.trim() !== '' && !/[<>]/.test(userId)) return { name: userId.trim() };
  throw new AirlockError('E_USAGE', `not a user id: ${JSON.stringify(userId)}`, {
    hint: 'use the form "Name <email@example.org>"',
  });
}

export async function generateKeys(options: { userId: string; outDir: string; passphrase?: string }): Promise<GeneratedKeys> {
  const { privateKey, publicKey } = await openpgp.generateKey({
    type: 'ecc',
    curve: 'curve25519Legacy',
    userIDs: [parseUserId(options.userId)],
    ...(options.passphrase === undefined ? {} : { passphrase: options.passphrase }),
    format: 'armored',
  });
  const key = await openpgp.readKey({ armoredKey: publicKey });
  const privateKeyPath = join(options.outDir, 'signer.key.asc');
  const publicKeyPath = join(options.outDir, 'signer.pub.asc');
  try {
    await mkdir(options.outDir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw fsError(error, 'create directory', options.outDir);
  }
  for (const [path, text, mode] of [[privateKeyPath, privateKey, 0o600], [publicKeyPath, publicKey, 0o644]] as const) {
    try {
      // 'wx': never clobber an existing key
      await writeFile(path, text, { mode, flag: 'wx' });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new AirlockError('E_OUTPUT_EXISTS', `${path} already exists; refusing to overwrite a key`, {
          subject: path,
          hint: 'choose another --out-dir, or move the old keys away first',
        });
      }
      throw fsError(error, 'write', path);
    }
  }
  return { fingerprint: key.getFingerprint().toUpperCase(), userId: key.getUserIDs()[0] ?? options.userId, privateKeyPath, publicKeyPath };
}
