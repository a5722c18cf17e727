/**
 * `airlock keys generate`: a v4 EdDSA (ed25519, "curve25519Legacy") key pair, the kind stock GnuPG 2.2
 * on every offline site can check. The private key file is created with mode 0600 and never overwritten.
 */
import { constants } from 'node:fs';
import { access, lstat, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as openpgp from 'openpgp';
import { AirlockError, fsError } from '../errors.js';
import { realMkdirError } from '../fs/mkdir-error.js';

export interface GeneratedKeys {
  fingerprint: string;
  userId: string;
  privateKeyPath: string;
  publicKeyPath: string;
  /** signer.rev.asc: revokes the key when imported next to it (kept apart from the private key's uses). */
  revocationCertificatePath: string;
  /** ISO 8601 UTC, or null: never expires. */
  expires: string | null;
}

export const KEY_FILES = { privateKey: 'signer.key.asc', publicKey: 'signer.pub.asc', revocationCertificate: 'signer.rev.asc' } as const;

/**
 * `--expires`: a lifetime (`90d`, `12w`, `18m`, `2y`), a date (`2027-12-31`, UTC midnight), or `never`.
 * Returns seconds from `now` (openpgp's keyExpirationTime), undefined for never.
 */
export function parseExpiry(value: string, now: Date): number | undefined {
  const text = value.trim().toLowerCase();
  if (text === 'never' || text === '0') return undefined;
  const lifetime = /^(\d+)\s*([dwmy])$/.exec(text);
  let seconds: number | undefined;
  if (lifetime !== null) {
    const n = Number(lifetime[1]);
    const days = { d: 1, w: 7, m: 30, y: 365 }[lifetime[2] as 'd' | 'w' | 'm' | 'y'] * n;
    seconds = days * 86_400;
  } else if (/^\d{4}-\d{2}-\d{2}(T[\d:.]+Z?)?$/i.test(value.trim())) {
    const at = Date.parse(/T/i.test(value) ? value.trim() : `${value.trim()}T00:00:00Z`);
    if (Number.isFinite(at)) seconds = Math.floor((at - now.getTime()) / 1000);
  }
  if (seconds === undefined) {
    throw new AirlockError('E_USAGE', `--expires takes a lifetime (90d, 12w, 18m, 2y), a date (2027-12-31) or never, not ${JSON.stringify(value)}`, {
      hint: 'e.g. --expires 2y; rotate by revoking (signer.rev.asc) before that, see docs/security-model.md',
    });
  }
  if (seconds <= 0) throw new AirlockError('E_USAGE', `--expires ${value} is not in the future`, { hint: 'give a later date or a lifetime such as 2y' });
  return seconds;
}

/** The address rule OpenPGP.js applies to a user id's email (a local part, `@`, and a domain of two or more characters). */
const EMAIL = /^[^\p{C}\p{Z}@<>\\]+@[^\p{C}\p{Z}@<>\\]+[^\p{C}\p{Z}\p{P}]$/u;

export function parseUserId(userId: string): { name?: string; email?: string } {
  const refuse = (why: string): AirlockError =>
    new AirlockError('E_USAGE', `--user-id ${JSON.stringify(userId)}: ${why}`, { subject: '--user-id', hint: 'use the form "Name <email@example.org>"' });
  if (/\p{C}/u.test(userId)) throw refuse('it contains control characters');
  const m = /^\s*(.*?)\s*<([^<>\s]+@[^<>\s]+)>\s*$/.exec(userId);
  const email = m ? m[2]! : /^[^<>\s]+@[^<>\s]+$/.test(userId.trim()) ? userId.trim() : undefined;
  if (email !== undefined) {
    if (!EMAIL.test(email)) throw refuse(`${JSON.stringify(email)} is not an email address an OpenPGP key can carry`);
    return { ...(m?.[1] ? { name: m[1] } : {}), email };
  }
  if (userId.trim() !== '' && !/[<>]/.test(userId)) return { name: userId.trim() };
  throw refuse('not a user id');
}

/**
 * Every output is checked before anything is written: an existing key, public key or revocation
 * certificate (or an unusable --out-dir) refuses the whole run, so no private key is ever left behind
 * that matches nothing. The three files are then created exclusively ('wx'); if one cannot be written,
 * the ones already written are removed again.
 */
export async function generateKeys(options: { userId: string; outDir: string; passphrase?: string; expiresInSeconds?: number | undefined }): Promise<GeneratedKeys> {
  const userIDs = [parseUserId(options.userId)];
  const privateKeyPath = join(options.outDir, KEY_FILES.privateKey);
  const publicKeyPath = join(options.outDir, KEY_FILES.publicKey);
  const revocationCertificatePath = join(options.outDir, KEY_FILES.revocationCertificate);
  const outputs = [privateKeyPath, publicKeyPath, revocationCertificatePath];
  for (const path of outputs) {
    const existing = await lstat(path).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined;
      if (error.code === 'ENOTDIR') {
        throw new AirlockError('E_USAGE', `--out-dir ${options.outDir} is not a directory`, { subject: options.outDir, hint: 'name a directory (it is created when missing)' });
      }
      throw fsError(error, 'check', path);
    });
    if (existing !== undefined) {
      throw new AirlockError('E_OUTPUT_EXISTS', `${path} already exists; refusing to overwrite a key (nothing was written)`, {
        subject: path,
        hint: 'choose another --out-dir, or move the old key files away first',
      });
    }
  }
  try {
    await mkdir(options.outDir, { recursive: true, mode: 0o700 });
    await access(options.outDir, constants.W_OK);
  } catch (error) {
    throw fsError(await realMkdirError(error, options.outDir), 'write keys into directory', options.outDir);
  }
  const { privateKey, publicKey, revocationCertificate } = await openpgp.generateKey({
    type: 'ecc',
    curve: 'curve25519Legacy',
    userIDs,
    ...(options.passphrase === undefined ? {} : { passphrase: options.passphrase }),
    ...(options.expiresInSeconds === undefined ? {} : { keyExpirationTime: options.expiresInSeconds }),
    format: 'armored',
  });
  const key = await openpgp.readKey({ armoredKey: publicKey });
  const written: string[] = [];
  const files = [
    [privateKeyPath, privateKey, 0o600],
    [publicKeyPath, publicKey, 0o644],
    // whoever holds it can revoke the key: as private as the key itself
    [revocationCertificatePath, revocationCertificate, 0o600],
  ] as const;
  for (const [path, text, mode] of files) {
    try {
      // 'wx': never clobber an existing key (one may have appeared since the check)
      await writeFile(path, text, { mode, flag: 'wx' });
      written.push(path);
    } catch (error) {
      for (const done of written) await rm(done, { force: true });
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new AirlockError('E_OUTPUT_EXISTS', `${path} already exists; refusing to overwrite a key (nothing was written)`, {
          subject: path,
          hint: 'choose another --out-dir, or move the old key files away first',
        });
      }
      throw fsError(error, 'write', path);
    }
  }
  const expiry = await key.getExpirationTime();
  return {
    fingerprint: key.getFingerprint().toUpperCase(),
    userId: key.getUserIDs()[0] ?? options.userId,
    privateKeyPath,
    publicKeyPath,
    revocationCertificatePath,
    expires: expiry instanceof Date ? expiry.toISOString().replace(/\.\d{3}Z$/, 'Z') : null,
  };
}
