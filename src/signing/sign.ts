/**
 * Makes the ASCII-armored detached OpenPGP signature over the exact bytes of SHA256SUMS.
 * Binary mode, not text mode: a text-mode signature would still verify after LF→CRLF conversion
 * and so hide a changed file (see shared/specs/node-and-openpgp.md).
 */
import * as openpgp from 'openpgp';
import { AirlockError } from '../errors.js';

export interface Signer {
  /** Primary key fingerprint, uppercase. */
  readonly fingerprint: string;
  readonly userIds: readonly string[];
  /** The public half, when known (resign checks its fresh signature against it). */
  readonly publicKey?: openpgp.PublicKey;
  sign(data: Uint8Array): Promise<string>;
}

export async function openPgpSigner(armoredKey: string, passphrase: string | undefined, source: string): Promise<Signer> {
  let key: openpgp.PrivateKey;
  try {
    key = await openpgp.readPrivateKey({ armoredKey });
  } catch (cause) {
    throw new AirlockError('E_KEY_INVALID', `${source} is not an armored OpenPGP private key: ${(cause as Error).message}`, {
      subject: source,
      hint: 'create one with `airlock keys generate`, or export one with `gpg --export-secret-keys --armor`',
      cause,
    });
  }
  if (!key.isDecrypted()) {
    if (passphrase === undefined) {
      throw new AirlockError('E_KEY_INVALID', `${source} is protected by a passphrase`, {
        subject: source,
        hint: 'pass --passphrase-file FILE (a file holding the passphrase)',
      });
    }
    try {
      key = await openpgp.decryptKey({ privateKey: key, passphrase });
    } catch (cause) {
      throw new AirlockError('E_KEY_INVALID', `cannot unlock ${source}: wrong passphrase`, {
        subject: source,
        hint: 'check the passphrase file',
        cause,
      });
    }
  }
  const unlocked = key;
  return {
    fingerprint: unlocked.getFingerprint().toUpperCase(),
    userIds: unlocked.getUserIDs(),
    publicKey: unlocked.toPublic(),
    async sign(data: Uint8Array): Promise<string> {
      const message = await openpgp.createMessage({ binary: data });
      // openpgp's declared return type names web-stream types this project's lib (no DOM) cannot resolve;
      // for a Uint8Array message and format 'armored' it is the armored signature string.
      return (await openpgp.sign({ message, signingKeys: unlocked, detached: true, format: 'armored' })) as string;
    },
  };
}
