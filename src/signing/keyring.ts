/** Reads the key files a user names on the command line. The only I/O in signing/. */
import { readFile } from 'node:fs/promises';
import { AirlockError, fsError } from '../errors.js';
import { openPgpSigner, type Signer } from './sign.js';
import { readPublicKeys, type TrustedKey } from './verify.js';

export async function loadTrustedKeys(paths: readonly string[]): Promise<TrustedKey[]> {
  const keys: TrustedKey[] = [];
  for (const path of paths) {
    let data: Buffer;
    try {
      data = await readFile(path);
    } catch (error) {
      throw fsError(error, 'read trusted key file', path);
    }
    keys.push(...(await readPublicKeys(data, path)));
  }
  return keys;
}

export async function readPassphraseFile(path: string | undefined): Promise<string | undefined> {
  if (path === undefined) return undefined;
  try {
    // one line; a trailing newline (as `echo` writes) is not part of the passphrase
    return (await readFile(path, 'utf8')).replace(/\r?\n$/, '');
  } catch (error) {
    throw fsError(error, 'read passphrase file', path);
  }
}

export async function loadSigner(keyPath: string, passphraseFile: string | undefined): Promise<Signer> {
  let armored: string;
  try {
    armored = await readFile(keyPath, 'utf8');
  } catch (error) {
    throw fsError(error, 'read signing key', keyPath);
  }
  if (!armored.includes('PRIVATE KEY BLOCK')) {
    throw new AirlockError('E_KEY_INVALID', `${keyPath} is not an armored private key`, {
      subject: keyPath,
      hint: 'pass the signer.key.asc written by `airlock keys generate` (signer.pub.asc is the public half)',
    });
  }
  return openPgpSigner(armored, await readPassphraseFile(passphraseFile), keyPath);
}
