/**
 * Checks an OpenPGP detached signature over exact bytes against a set of trusted public keys.
 * Pure: bytes and key text in, a verified signer out (or an AirlockError). The caller reads files.
 *
 * Trust decision: a signature counts only if the key that made it (primary or subkey) belongs to one
 * of the keys the user pinned for this run. Keys inside the bundle are never consulted.
 */
import * as openpgp from 'openpgp';
import { AirlockError } from '../errors.js';

export interface VerifiedSigner {
  /** Primary key fingerprint, uppercase hex (as gpg prints it). */
  fingerprint: string;
  /** Fingerprint of the (sub)key that made the signature. */
  signingKeyFingerprint: string;
  userIds: string[];
  signedAt: string;
}

export interface TrustedKey {
  key: openpgp.PublicKey;
  /** Where the key came from (file name), for messages. */
  source: string;
}

/** Reads every public key in an armored or binary key file's contents. */
export async function readPublicKeys(data: Uint8Array, source: string): Promise<TrustedKey[]> {
  const text = Buffer.from(data).toString('utf8');
  try {
    const keys = text.includes('-----BEGIN PGP')
      ? await openpgp.readKeys({ armoredKeys: text })
      : await openpgp.readKeys({ binaryKeys: data });
    const out: TrustedKey[] = [];
    for (const key of keys) {
      if (key.isPrivate()) {
        throw new AirlockError('E_KEY_INVALID', `${source} holds a private key; trusted keys must be public keys`, {
          subject: source,
          hint: 'pass the signer.pub.asc file, not signer.key.asc (never carry private keys to the offline side)',
        });
      }
      out.push({ key, source });
    }
    return out;
  } catch (cause) {
    if (cause instanceof AirlockError) throw cause;
    throw new AirlockError('E_KEY_INVALID', `${source} is not an OpenPGP public key file: ${(cause as Error).message}`, {
      subject: source,
      hint: 'pass an armored public key (e.g. signer.pub.asc from `airlock keys generate` or `gpg --export --armor`)',
      cause,
    });
  }
}

function upper(hex: string): string {
  return hex.toUpperCase();
}

export async function verifyDetachedSignature(
  data: Uint8Array,
  armoredSignature: string,
  trusted: readonly TrustedKey[],
  subject = 'SHA256SUMS.asc',
): Promise<VerifiedSigner[]> {
  let signature: openpgp.Signature;
  try {
    signature = await openpgp.readSignature({ armoredSignature });
  } catch (cause) {
    throw new AirlockError('E_SIGNATURE_INVALID', `${subject} is not an OpenPGP signature: ${(cause as Error).message}`, {
      subject,
      hint: 'the bundle was damaged or tampered with; ask for a fresh copy',
      cause,
    });
  }
  const issuers = signature.getSigningKeyIDs();
  const trustedIssuers = trusted.filter(({ key }) => issuers.some((id) => key.getKeys(id).length > 0));
  if (trustedIssuers.length === 0) {
    const ids = issuers.map((id) => upper(id.toHex())).join(', ') || 'no issuer';
    throw new AirlockError('E_SIGNATURE_UNTRUSTED', `${subject} was made by key ${ids}, which is not among the trusted keys`, {
      subject,
      hint: `trusted: ${trusted.map(({ key, source }) => `${upper(key.getFingerprint())} (${source})`).join(', ') || 'none'}; pass the signer's public key with --trusted-keys only if you trust it`,
    });
  }
  const message = await openpgp.createMessage({ binary: data });
  const result = await openpgp.verify({
    message,
    signature,
    verificationKeys: trustedIssuers.map(({ key }) => key),
    format: 'binary',
  });
  const signers: VerifiedSigner[] = [];
  const failures: string[] = [];
  for (const sig of result.signatures) {
    const owner = trustedIssuers.find(({ key }) => key.getKeys(sig.keyID).length > 0);
    if (owner === undefined) continue;
    try {
      await sig.verified;
      const packet = (await sig.signature).packets[0];
      const signingKey = owner.key.getKeys(sig.keyID)[0]!;
      signers.push({
        fingerprint: upper(owner.key.getFingerprint()),
        signingKeyFingerprint: upper(signingKey.getFingerprint()),
        userIds: owner.key.getUserIDs(),
        signedAt: (packet?.created ?? new Date(0)).toISOString(),
      });
    } catch (cause) {
      failures.push(`${upper(sig.keyID.toHex())}: ${(cause as Error).message}`);
    }
  }
  if (signers.length === 0) {
    throw new AirlockError('E_SIGNATURE_INVALID', `${subject} does not verify: ${failures.join('; ')}`, {
      subject,
      hint: 'SHA256SUMS or its signature was changed after signing; do not use this bundle, ask for a fresh copy',
    });
  }
  return signers;
}
