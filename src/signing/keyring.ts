/** Reads the key files a user names on the command line. The only I/O in signing/. */
import { readFile, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { AirlockError, inputFileError } from '../errors.js';
import { describeKey, readAnyKeys, type KeyDescription } from './describe.js';
import { gpgSigner } from './gpg.js';
import { openPgpSigner, type Signer } from './sign.js';
import { parseFingerprintArgs, parseTrustFile, trustFileLocation } from './trust-file.js';
import { readPublicKeys, type TrustPin, type TrustPolicy, type TrustedKey } from './verify.js';

export async function loadTrustedKeys(paths: readonly string[]): Promise<TrustedKey[]> {
  const keys: TrustedKey[] = [];
  for (const path of paths) {
    let data: Buffer;
    try {
      data = await readFile(path);
    } catch (error) {
      throw inputFileError(error, 'trusted key file', path, '--trusted-keys');
    }
    keys.push(...(await readPublicKeys(data, path)));
  }
  return keys;
}

export async function readPassphraseFile(path: string | undefined): Promise<string | undefined> {
  if (path === undefined) return undefined;
  let passphrase: string;
  try {
    // one line; a trailing newline (as `echo` writes) is not part of the passphrase
    passphrase = (await readFile(path, 'utf8')).replace(/\r?\n$/, '');
  } catch (error) {
    throw inputFileError(error, 'passphrase file', path, '--passphrase-file');
  }
  // an empty passphrase would silently mean "no protection" (never echo the file's content)
  if (passphrase.trim() === '') {
    throw new AirlockError('E_USAGE', `the passphrase file ${path} is empty (or holds only blanks/newlines)`, {
      subject: path,
      hint: 'write the passphrase on the first line of that file, or leave out --passphrase-file',
    });
  }
  return passphrase;
}

export async function loadSigner(keyPath: string, passphraseFile: string | undefined): Promise<Signer> {
  let armored: string;
  try {
    armored = await readFile(keyPath, 'utf8');
  } catch (error) {
    throw inputFileError(error, 'signing key', keyPath, '--sign-key');
  }
  if (!armored.includes('PRIVATE KEY BLOCK')) {
    throw new AirlockError('E_KEY_INVALID', `${keyPath} is not an armored private key`, {
      subject: keyPath,
      hint: 'pass the signer.key.asc written by `airlock keys generate` (signer.pub.asc is the public half)',
    });
  }
  return openPgpSigner(armored, await readPassphraseFile(passphraseFile), keyPath);
}

export interface TrustOptions {
  /** Armored key files or binary keyrings (`gpg --export`). */
  keyFiles: readonly string[];
  /** `--trusted-fingerprint` values; when non-empty they replace the trust file. */
  fingerprints?: readonly string[];
  requireSignatures?: number;
  /** Environment for the trust file location (default process.env). */
  env?: Readonly<Record<string, string | undefined>>;
}

export interface LoadedTrust {
  policy: TrustPolicy;
  /** Where the pins came from: 'flags', the trust file path, or undefined (no pins: every key file is trusted). */
  pinSource: string | undefined;
}

/** Reads the pins of the trust file, when there is one (see trust-file.ts for the location rule). */
export async function loadTrustFile(env: Readonly<Record<string, string | undefined>>): Promise<{ path: string; pins: TrustPin[] } | undefined> {
  const location = trustFileLocation(env, homedir());
  let text: string;
  try {
    const info = await stat(location.path);
    // a trust file others can write is no pin at all
    if ((info.mode & 0o022) !== 0) {
      throw new AirlockError('E_USAGE', `${location.path} is writable by group or others; refusing to take pins from it`, {
        subject: location.path,
        hint: `chmod go-w ${location.path}`,
      });
    }
    text = await readFile(location.path, 'utf8');
  } catch (error) {
    if (!location.explicit && (error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw inputFileError(error, 'trust file', location.path, 'AIRLOCK_TRUST_FILE');
  }
  return { path: location.path, pins: parseTrustFile(text, location.path) };
}

/** Builds the run's trust policy from key files, pins (flags, else the trust file) and the signature count. */
export async function loadTrustPolicy(options: TrustOptions): Promise<LoadedTrust> {
  const keys = await loadTrustedKeys(options.keyFiles);
  let pins: TrustPin[] | undefined;
  let pinSource: string | undefined;
  if ((options.fingerprints ?? []).length > 0) {
    pins = parseFingerprintArgs(options.fingerprints ?? []);
    pinSource = '--trusted-fingerprint';
  } else {
    const file = await loadTrustFile(options.env ?? process.env);
    if (file !== undefined) {
      pins = file.pins;
      pinSource = file.path;
    }
  }
  if (pins !== undefined && keys.length > 0) {
    const known = new Set(keys.flatMap(({ key }) => key.getKeys().map((k) => k.getFingerprint().toUpperCase())));
    if (!pins.some((p) => known.has(p.fingerprint))) {
      throw new AirlockError('E_USAGE', `none of the pinned fingerprints (${pinSource}) is a key in the trusted key files`, {
        subject: pinSource,
        hint: `pinned: ${pins.map((p) => p.fingerprint).join(', ') || 'none'}; keys: ${keys.map(({ key, source }) => `${key.getFingerprint().toUpperCase()} (${source})`).join(', ')}`,
      });
    }
  }
  const required = options.requireSignatures;
  if (required !== undefined && (!Number.isInteger(required) || required < 1)) {
    throw new AirlockError('E_USAGE', `--require-signatures must be a whole number ≥ 1, not ${String(required)}`);
  }
  return { policy: { keys, pins, ...(required === undefined ? {} : { requireSignatures: required }) }, pinSource };
}

/** `airlock keys list FILE…`: every key (public or secret) in the files, described. */
export async function listKeyFiles(paths: readonly string[]): Promise<KeyDescription[]> {
  const out: KeyDescription[] = [];
  for (const path of paths) {
    let data: Buffer;
    try {
      data = await readFile(path);
    } catch (error) {
      throw inputFileError(error, 'key file', path, 'keys list');
    }
    if (data.byteLength >= 12 && data.subarray(8, 12).toString('latin1') === 'KBXf') {
      // same refusal (and hint) as for trusted keys
      await readPublicKeys(data, path);
    }
    let keys;
    try {
      keys = await readAnyKeys(data);
    } catch (cause) {
      throw new AirlockError('E_KEY_INVALID', `${path} is not an OpenPGP key file: ${(cause as Error).message}`, { subject: path, cause });
    }
    for (const key of keys) out.push(await describeKey(key, path));
  }
  return out;
}

export interface SignerChoice {
  /** Armored private key file (openpgp.js signing). */
  signKey?: string | undefined;
  passphraseFile?: string | undefined;
  /** Key id / fingerprint for the system gpg (gpg-agent, smartcards). */
  gpgSign?: string | undefined;
  gpgHomedir?: string | undefined;
}

/** The signer a command's flags choose: `--sign-key` (openpgp.js) or `--gpg-sign` (system gpg); never both. */
export async function chooseSigner(choice: SignerChoice): Promise<Signer | undefined> {
  if (choice.signKey !== undefined && choice.gpgSign !== undefined) {
    throw new AirlockError('E_USAGE', '--sign-key and --gpg-sign contradict each other', { hint: 'sign with one of them' });
  }
  if (choice.gpgHomedir !== undefined && choice.gpgSign === undefined) {
    throw new AirlockError('E_USAGE', '--gpg-homedir only applies with --gpg-sign');
  }
  if (choice.gpgSign !== undefined) return gpgSigner({ keyId: choice.gpgSign, homedir: choice.gpgHomedir });
  if (choice.signKey !== undefined) return loadSigner(choice.signKey, choice.passphraseFile);
  return undefined;
}
