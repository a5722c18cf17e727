/**
 * Checks OpenPGP detached signatures over exact bytes against a trust policy. Pure: bytes, key objects
 * and pins in, verified signers out (or an AirlockError). The caller reads files (see keyring.ts).
 *
 * Trust decisions, all made here:
 *   - a signature counts only if the key that made it (primary or subkey) belongs to one of the keys the
 *     user gave for this run; keys inside the bundle are never consulted;
 *   - when pins are given (--trusted-fingerprint or the trust file), the key must also be pinned: by its
 *     primary fingerprint (any valid signing subkey of it counts) or by a subkey fingerprint (only that
 *     subkey counts). Without pins, every key in the trusted key files is trusted (the file is the pin);
 *   - a key (or subkey) that was revoked is refused, whatever the signature's date: the offline side
 *     only learns of a revocation after the fact, and a compromised key can back-date signatures;
 *   - a key (or subkey) is checked for expiry AT THE SIGNATURE'S CREATION TIME: a bundle signed while
 *     the key was valid stays valid after the key expires; one signed after expiry is refused;
 *   - only binary-mode signatures (type 0x00) are accepted: a text-mode one still verifies after a
 *     LF→CRLF conversion, which would hide a changed SHA256SUMS;
 *   - one armored file may hold several signatures (two-person rule). Signatures by keys the user did
 *     not trust are ignored (and reported); a signature by a trusted key that does not verify
 *     cryptographically is fatal, whatever the others say: that is tampering, not rotation.
 */
import * as openpgp from 'openpgp';
import { AirlockError, type ErrorCode } from '../errors.js';

export interface VerifiedSigner {
  /** Primary key fingerprint, uppercase hex (as gpg prints it). */
  fingerprint: string;
  /** Fingerprint of the (sub)key that made the signature. */
  signingKeyFingerprint: string;
  userIds: string[];
  signedAt: string;
  /** Where the trusted key came from (file name). */
  keySource?: string;
  /** The pin that admitted the key (fingerprint and where it was pinned), when pins were in force. */
  pinnedBy?: string;
}

export interface TrustedKey {
  key: openpgp.PublicKey;
  /** Where the key came from (file name), for messages. */
  source: string;
}

export interface TrustPin {
  /** Uppercase hex, no spaces: a primary key or a subkey fingerprint. */
  fingerprint: string;
  /** Where the pin came from: `--trusted-fingerprint` or the trust file's path (and line). */
  source: string;
}

/** What the offline side trusts for one run. */
export interface TrustPolicy {
  keys: readonly TrustedKey[];
  /** When defined, only pinned keys count (see the file comment). Undefined: every key in `keys` counts. */
  pins?: readonly TrustPin[] | undefined;
  /** Distinct trusted primary keys that must have signed (default 1): the two-person rule. */
  requireSignatures?: number | undefined;
}

/** A signature in the file that did not count, and why. */
export interface RejectedSignature {
  code: ErrorCode;
  /** Issuer key id (16 hex) as the signature names it. */
  keyId: string;
  /** Primary fingerprint, when the key is among the trusted keys. */
  fingerprint?: string;
  userIds: string[];
  signedAt?: string;
  reason: string;
}

export interface SignatureCheck {
  signers: VerifiedSigner[];
  rejected: RejectedSignature[];
  /** Number of signature packets in the file. */
  signatures: number;
}

const KEY_BLOCK = /-----BEGIN PGP (PUBLIC|PRIVATE) KEY BLOCK-----[\s\S]*?-----END PGP \1 KEY BLOCK-----/g;

/**
 * Every key in a file: binary (a `gpg --export` keyring) or armored, including several armored blocks
 * one after the other (`cat alice.asc bob.asc`), which openpgp.js alone would read only the first of.
 */
export async function readKeysAnyEncoding(data: Uint8Array): Promise<openpgp.Key[]> {
  const text = Buffer.from(data).toString('utf8');
  if (!text.includes('-----BEGIN PGP')) return openpgp.readKeys({ binaryKeys: data });
  const blocks = text.match(KEY_BLOCK) ?? [text];
  const keys: openpgp.Key[] = [];
  for (const block of blocks) keys.push(...(await openpgp.readKeys({ armoredKeys: block })));
  return keys;
}

/** Reads every public key in an armored or binary key file's contents. */
export async function readPublicKeys(data: Uint8Array, source: string): Promise<TrustedKey[]> {
  if (data.byteLength >= 12 && Buffer.from(data.subarray(8, 12)).toString('latin1') === 'KBXf') {
    throw new AirlockError('E_KEY_INVALID', `${source} is a GnuPG keybox (pubring.kbx), which only gpg itself reads`, {
      subject: source,
      hint: `export the keys you trust as a keyring: gpg --export FINGERPRINT... > trusted.gpg (or --armor > trusted.asc), and pass that file`,
    });
  }
  try {
    const keys = await readKeysAnyEncoding(data);
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
      hint: 'pass an armored public key (e.g. signer.pub.asc from `airlock keys generate` or `gpg --export --armor`), or a binary keyring (`gpg --export`)',
      cause,
    });
  }
}

function upper(hex: string): string {
  return hex.toUpperCase();
}

/** `0123 4567 …`: how people compare fingerprints. */
export function spaced(fingerprint: string): string {
  return fingerprint.replace(/(.{4})/g, '$1 ').trim();
}

/** Normalises a fingerprint as people write it (spaces, `0x`, lower case); undefined if it is not one. */
export function normalizeFingerprint(text: string): string | undefined {
  const hex = text.replace(/^0x/i, '').replace(/[\s:]/g, '').toUpperCase();
  return /^([0-9A-F]{40}|[0-9A-F]{64})$/.test(hex) ? hex : undefined;
}

const ARMOR_BLOCK = /-----BEGIN PGP SIGNATURE-----[\s\S]*?-----END PGP SIGNATURE-----/g;

/**
 * Parses an armored signature file into one Signature holding every signature packet. Accepts one armor
 * block (gpg and airlock write this) or several concatenated (`cat a.asc b.asc`), which gpg also accepts;
 * anything but whitespace around the blocks is refused.
 */
export async function readSignatures(armored: string, subject = 'SHA256SUMS.asc'): Promise<openpgp.Signature> {
  const blocks = armored.match(ARMOR_BLOCK) ?? [];
  const outside = armored.replace(ARMOR_BLOCK, '');
  const bad = (why: string, cause?: unknown): AirlockError =>
    new AirlockError('E_SIGNATURE_INVALID', `${subject} is not an OpenPGP signature: ${why}`, {
      subject,
      hint: 'the bundle was damaged or tampered with; ask for a fresh copy',
      ...(cause === undefined ? {} : { cause }),
    });
  if (blocks.length === 0) throw bad('no armored signature block');
  if (outside.trim() !== '') throw bad('text outside the armored signature block(s)');
  const packets = new openpgp.PacketList<openpgp.SignaturePacket>();
  for (const block of blocks) {
    let signature: openpgp.Signature;
    try {
      signature = await openpgp.readSignature({ armoredSignature: block });
    } catch (cause) {
      throw bad((cause as Error).message, cause);
    }
    packets.push(...signature.packets);
  }
  if (packets.length === 0) throw bad('no signature packets');
  return new openpgp.Signature(packets);
}

/** One armored block holding the signatures of every input (for `resign --add`). */
export async function mergeSignatures(armored: readonly string[]): Promise<string> {
  const packets = new openpgp.PacketList<openpgp.SignaturePacket>();
  for (const text of armored) packets.push(...(await readSignatures(text)).packets);
  return new openpgp.Signature(packets).armor();
}

function describeKey(fingerprint: string, userIds: readonly string[], source?: string): string {
  const uid = userIds[0] === undefined ? '' : ` "${userIds[0]}"`;
  return `key ${spaced(fingerprint)}${uid}${source === undefined ? '' : ` (from ${source})`}`;
}

type Outcome = { good: VerifiedSigner } | { rejected: RejectedSignature };

async function checkOne(
  packet: openpgp.SignaturePacket,
  data: Uint8Array,
  policy: TrustPolicy,
  subject: string,
): Promise<Outcome> {
  const keyId = packet.issuerKeyID;
  const keyIdHex = upper(keyId.toHex());
  const issuerFpr = packet.issuerFingerprint instanceof Uint8Array && packet.issuerFingerprint.byteLength > 0
    ? upper(Buffer.from(packet.issuerFingerprint).toString('hex'))
    : undefined;
  const created = packet.created ?? undefined;
  const signedAt = created?.toISOString();

  // 1. whose key? Only the trusted keys are searched (never anything the bundle carries).
  const owner = policy.keys.find(({ key }) =>
    key.getKeys(keyId).some((k) => issuerFpr === undefined || upper(k.getFingerprint()) === issuerFpr),
  );
  if (owner === undefined) {
    return {
      rejected: {
        code: 'E_SIGNATURE_UNTRUSTED',
        keyId: keyIdHex,
        userIds: [],
        ...(signedAt === undefined ? {} : { signedAt }),
        reason: `made by key ${issuerFpr === undefined ? keyIdHex : spaced(issuerFpr)}, which is not among the trusted keys`,
      },
    };
  }
  const primaryFpr = upper(owner.key.getFingerprint());
  const signingKey = owner.key.getKeys(keyId).find((k) => issuerFpr === undefined || upper(k.getFingerprint()) === issuerFpr)!;
  const signingFpr = upper(signingKey.getFingerprint());
  const isSubkey = signingFpr !== primaryFpr;
  const userIds = owner.key.getUserIDs();
  const who = describeKey(primaryFpr, userIds, owner.source);
  const subkeyNote = isSubkey ? ` (subkey ${spaced(signingFpr)})` : '';
  const reject = (code: ErrorCode, reason: string): Outcome => ({
    rejected: { code, keyId: keyIdHex, fingerprint: primaryFpr, userIds, ...(signedAt === undefined ? {} : { signedAt }), reason },
  });

  // 2. pinned?
  let pinnedBy: string | undefined;
  if (policy.pins !== undefined) {
    const pin = policy.pins.find((p) => p.fingerprint === primaryFpr || p.fingerprint === signingFpr);
    if (pin === undefined) {
      const otherSubkeyPinned = policy.pins.some((p) => owner.key.getKeys().some((k) => upper(k.getFingerprint()) === p.fingerprint));
      if (otherSubkeyPinned) {
        return reject('E_SIGNATURE_WRONG_SUBKEY', `made by ${who}${subkeyNote}, but only another subkey of that key is pinned`);
      }
      return reject('E_SIGNATURE_UNTRUSTED', `made by ${who}, which is not pinned (not in ${pinSources(policy.pins)})`);
    }
    pinnedBy = `${spaced(pin.fingerprint)} (${pin.source})`;
  }

  // 3. binary mode only
  if (packet.signatureType !== openpgp.enums.signature.binary) {
    throw new AirlockError('E_SIGNATURE_INVALID', `${subject}: the signature by ${who} is not a binary-mode signature (type ${packet.signatureType ?? '?'})`, {
      subject,
      hint: 'sign SHA256SUMS in binary mode (gpg --detach-sign --armor, without --textmode)',
    });
  }
  if (created === undefined) {
    throw new AirlockError('E_SIGNATURE_INVALID', `${subject}: the signature by ${who} has no creation time`, { subject });
  }

  // 4. revoked (at any time) and expired (at signing time)
  if (await owner.key.isRevoked()) {
    return reject('E_SIGNATURE_REVOKED_KEY', `made by ${who}, which has been revoked`);
  }
  if (isSubkey) {
    const subkey = signingKey as openpgp.Subkey;
    if (await subkey.isRevoked(undefined as unknown as openpgp.SignaturePacket, undefined as unknown as openpgp.PublicKeyPacket)) {
      return reject('E_SIGNATURE_REVOKED_KEY', `made by subkey ${spaced(signingFpr)} of ${who}, which has been revoked`);
    }
  }
  if (signingKey.getCreationTime().getTime() > created.getTime()) {
    return reject('E_SIGNATURE_INVALID', `made by ${who}${subkeyNote} at ${signedAt}, before that key was created (${signingKey.getCreationTime().toISOString()})`);
  }
  const primaryExpiry = await owner.key.getExpirationTime().catch(() => null);
  if (primaryExpiry instanceof Date && primaryExpiry.getTime() <= created.getTime()) {
    return reject('E_SIGNATURE_EXPIRED_KEY', `made by ${who} at ${signedAt}, after the key expired (${primaryExpiry.toISOString()})`);
  }
  if (isSubkey) {
    const subExpiry = await (signingKey as openpgp.Subkey).getExpirationTime(created).catch(() => null);
    if (subExpiry instanceof Date && subExpiry.getTime() <= created.getTime()) {
      return reject('E_SIGNATURE_EXPIRED_KEY', `made by subkey ${spaced(signingFpr)} of ${who} at ${signedAt}, after that subkey expired (${subExpiry.toISOString()})`);
    }
  }

  // 5. the key must be a valid signing key of the certificate at signing time (binding, flags)
  try {
    await owner.key.getSigningKey(keyId, created);
  } catch (cause) {
    return reject(
      'E_SIGNATURE_WRONG_SUBKEY',
      `made by ${isSubkey ? `subkey ${spaced(signingFpr)} of ` : ''}${who}, which is not a valid signing key of that certificate: ${(cause as Error).message}`,
    );
  }

  // 6. the cryptography, with the key's validity evaluated at signing time
  const single = new openpgp.PacketList<openpgp.SignaturePacket>();
  single.push(packet);
  try {
    const result = await openpgp.verify({
      message: await openpgp.createMessage({ binary: data }),
      signature: new openpgp.Signature(single),
      verificationKeys: [owner.key],
      date: created,
      format: 'binary',
    });
    await result.signatures[0]!.verified;
  } catch (cause) {
    throw new AirlockError('E_SIGNATURE_INVALID', `${subject} does not verify: the signature by ${who}${subkeyNote} does not match: ${(cause as Error).message}`, {
      subject,
      hint: 'SHA256SUMS or its signature was changed after signing; do not use this bundle, ask for a fresh copy',
      cause,
    });
  }
  return {
    good: {
      fingerprint: primaryFpr,
      signingKeyFingerprint: signingFpr,
      userIds,
      signedAt: created.toISOString(),
      keySource: owner.source,
      ...(pinnedBy === undefined ? {} : { pinnedBy }),
    },
  };
}

/** Checks every signature in the file; throws only for a malformed file or a bad signature by a trusted key. */
export async function checkDetachedSignatures(
  data: Uint8Array,
  armoredSignature: string,
  policy: TrustPolicy,
  subject = 'SHA256SUMS.asc',
): Promise<SignatureCheck> {
  const signature = await readSignatures(armoredSignature, subject);
  const signers: VerifiedSigner[] = [];
  const rejected: RejectedSignature[] = [];
  for (const packet of signature.packets) {
    const outcome = await checkOne(packet, data, policy, subject);
    if ('good' in outcome) signers.push(outcome.good);
    else rejected.push(outcome.rejected);
  }
  return { signers, rejected, signatures: signature.packets.length };
}

const SEVERITY: readonly ErrorCode[] = ['E_SIGNATURE_REVOKED_KEY', 'E_SIGNATURE_EXPIRED_KEY', 'E_SIGNATURE_WRONG_SUBKEY', 'E_SIGNATURE_INVALID', 'E_SIGNATURE_UNTRUSTED'];

/** Where the pins in force came from: `--trusted-fingerprint`, or the trust file by its path. */
function pinSources(pins: readonly TrustPin[]): string {
  const sources = [...new Set(pins.map((p) => (p.source === '--trusted-fingerprint' ? p.source : `the trust file ${p.source.replace(/:\d+$/, '')}`)))];
  return sources.join(' or ') || 'the (empty) pins';
}

function trustedHint(policy: TrustPolicy): string {
  const keys = policy.keys.map(({ key, source }) => `${upper(key.getFingerprint())} (${source})`).join(', ') || 'none';
  const pins =
    policy.pins === undefined
      ? ''
      : `; pinned in ${pinSources(policy.pins)}: ${policy.pins.map((p) => p.fingerprint).join(', ') || 'none'} — a key rotated since the pin was written needs its new fingerprint there`;
  return `trusted: ${keys}${pins}`;
}

/**
 * Verifies the signature file under `trust` and enforces its signature count. Returns the distinct
 * trusted signers (one per primary key), or throws an AirlockError naming the refused key(s).
 */
export async function verifyDetachedSignature(
  data: Uint8Array,
  armoredSignature: string,
  trust: TrustPolicy | readonly TrustedKey[],
  subject = 'SHA256SUMS.asc',
): Promise<VerifiedSigner[]> {
  const policy: TrustPolicy = Array.isArray(trust) ? { keys: trust as readonly TrustedKey[] } : (trust as TrustPolicy);
  const required = Math.max(1, policy.requireSignatures ?? 1);
  const check = await checkDetachedSignatures(data, armoredSignature, policy, subject);
  const distinct: VerifiedSigner[] = [];
  for (const s of check.signers) if (!distinct.some((d) => d.fingerprint === s.fingerprint)) distinct.push(s);
  if (distinct.length >= required) return distinct;

  const reasons = check.rejected.map((r) => r.reason);
  if (distinct.length === 0) {
    const worst = SEVERITY.find((code) => check.rejected.some((r) => r.code === code)) ?? 'E_SIGNATURE_UNTRUSTED';
    const hint =
      worst === 'E_SIGNATURE_UNTRUSTED'
        ? `${trustedHint(policy)}; pass the signer's public key with --trusted-keys (and pin its fingerprint) only if you trust it`
        : worst === 'E_SIGNATURE_REVOKED_KEY'
          ? 'the signer revoked this key: do not use this bundle; ask for one signed with the signer\'s current key'
          : worst === 'E_SIGNATURE_EXPIRED_KEY'
            ? 'the key had expired when it signed; ask the signer to re-sign (`airlock resign`) with a valid key'
            : `${trustedHint(policy)}; ask the signer which (sub)key signs bundles`;
    throw new AirlockError(worst, `${subject} was not signed by a trusted key: ${reasons.join('; ') || 'no signature'}`, { subject, hint });
  }
  throw new AirlockError(
    'E_NOT_ENOUGH_SIGNATURES',
    `${subject} has ${distinct.length} trusted signature(s), ${required} required: good by ${distinct.map((s) => describeKey(s.fingerprint, s.userIds)).join(', ')}` +
      (reasons.length > 0 ? `; not counted: ${reasons.join('; ')}` : ''),
    {
      subject,
      hint: `a second, different trusted key must countersign: \`airlock resign --add\`; ${trustedHint(policy)}`,
    },
  );
}
