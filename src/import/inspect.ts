/**
 * `airlock inspect`: what a bundle says it holds, without keys. Reads only the leading entries and
 * checks that SHA256SUMS and manifest.json agree with each other, but does NOT check the signature:
 * everything it shows is a claim until `verify` (or `import`) checked it against a trusted key. The
 * result says so (`signatureChecked: false`).
 */
import * as openpgp from 'openpgp';
import { AirlockError } from '../errors.js';
import type { Manifest } from '../bundle/manifest.js';
import { SIGNATURE_NAME } from '../bundle/format.js';
import { readBundleHead } from '../bundle/reader.js';
import type { SumsEntry } from '../integrity/sha256sums.js';
import { openBundle } from './open-bundle.js';

export interface InspectResult {
  bundlePath: string;
  manifest: Manifest;
  sums: SumsEntry[];
  signed: boolean;
  /** Always false: inspect never checks the signature. */
  signatureChecked: false;
  /** Key ids (16 uppercase hex) the signature claims to be made by: unverified. Deprecated: see signatureFingerprints. */
  signatureKeyIds: string[];
  /**
   * Fingerprints (40 uppercase hex, what --trusted-fingerprint takes) of the keys the signature claims
   * to be made by, from its issuer-fingerprint subpacket (every airlock and GnuPG 2.2+ signature has
   * one); the 16-hex key id only for a signature without it. Unverified.
   */
  signatureFingerprints: string[];
}

async function claimedKeys(armoredSignature: string): Promise<{ keyIds: string[]; fingerprints: string[] }> {
  try {
    const signature = await openpgp.readSignature({ armoredSignature });
    // a plain array (openpgp hands out an Array subclass)
    const keyIds = Array.from(signature.getSigningKeyIDs(), (id) => id.toHex().toUpperCase());
    const fingerprints = Array.from(signature.packets, (packet) => {
      const fpr = (packet as { issuerFingerprint?: Uint8Array | null }).issuerFingerprint;
      return fpr instanceof Uint8Array && fpr.length > 0 ? Buffer.from(fpr).toString('hex').toUpperCase() : packet.issuerKeyID.toHex().toUpperCase();
    });
    return { keyIds, fingerprints };
  } catch (cause) {
    throw new AirlockError('E_SIGNATURE_INVALID', `${SIGNATURE_NAME} is not an OpenPGP signature: ${(cause as Error).message}`, {
      subject: SIGNATURE_NAME,
      hint: 'the bundle was damaged or tampered with; ask for a fresh copy',
      cause,
    });
  }
}

export async function inspectBundle(bundlePath: string): Promise<InspectResult> {
  const head = await readBundleHead(await openBundle(bundlePath), bundlePath);
  const claimed = head.signature === undefined ? { keyIds: [], fingerprints: [] } : await claimedKeys(head.signature);
  return {
    bundlePath,
    manifest: head.manifest,
    sums: head.sums,
    signed: head.signature !== undefined,
    signatureChecked: false,
    signatureKeyIds: claimed.keyIds,
    signatureFingerprints: claimed.fingerprints,
  };
}
