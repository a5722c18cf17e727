/**
 * The trust file: fingerprints the offline side pins, one per line, kept where an administrator puts
 * machine-wide trust. Pure parse + location rule; keyring.ts reads it.
 *
 * Location: `$AIRLOCK_TRUST_FILE` when set (it must then exist), else
 * `$XDG_CONFIG_HOME/airlock/trusted-fingerprints` (XDG_CONFIG_HOME defaulting to `~/.config`), used
 * only when it exists. `--trusted-fingerprint` on the command line replaces the file for that run.
 *
 * Format: one fingerprint per line (40 or 64 hex; spaces, `0x` and lower case allowed); `#` starts a
 * comment; blank lines are ignored. Every bad line is reported at once.
 */
import { join } from 'node:path';
import { AirlockError } from '../errors.js';
import { normalizeFingerprint, type TrustPin } from './verify.js';

export const TRUST_FILE_ENV = 'AIRLOCK_TRUST_FILE';

export interface TrustFileLocation {
  path: string;
  /** true when named by $AIRLOCK_TRUST_FILE (then it must exist). */
  explicit: boolean;
}

export function trustFileLocation(env: Readonly<Record<string, string | undefined>>, home: string): TrustFileLocation {
  const explicit = env[TRUST_FILE_ENV];
  if (explicit !== undefined && explicit !== '') return { path: explicit, explicit: true };
  const config = env['XDG_CONFIG_HOME'] !== undefined && env['XDG_CONFIG_HOME'] !== '' ? env['XDG_CONFIG_HOME'] : join(home, '.config');
  return { path: join(config, 'airlock', 'trusted-fingerprints'), explicit: false };
}

export function parseTrustFile(text: string, source: string): TrustPin[] {
  const pins: TrustPin[] = [];
  const problems: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/#.*$/, '').trim();
    if (line === '') return;
    const fingerprint = normalizeFingerprint(line);
    if (fingerprint === undefined) problems.push(`line ${i + 1}: not a fingerprint: ${JSON.stringify(line.slice(0, 80))}`);
    else if (!pins.some((p) => p.fingerprint === fingerprint)) pins.push({ fingerprint, source: `${source}:${i + 1}` });
  });
  if (problems.length > 0) {
    throw new AirlockError('E_USAGE', `${source} is not a valid trust file:\n  ${problems.join('\n  ')}`, {
      subject: source,
      hint: 'one full fingerprint (40 hex digits, as `airlock keys list` prints it) per line; # starts a comment',
    });
  }
  return pins;
}

export function parseFingerprintArgs(values: readonly string[]): TrustPin[] {
  const pins: TrustPin[] = [];
  for (const value of values) {
    const fingerprint = normalizeFingerprint(value);
    if (fingerprint === undefined) {
      throw new AirlockError('E_USAGE', `--trusted-fingerprint ${JSON.stringify(value)} is not a full fingerprint`, {
        hint: 'pass the 40-hex fingerprint `airlock keys list` prints (short key ids are not accepted: they can be forged)',
      });
    }
    if (!pins.some((p) => p.fingerprint === fingerprint)) pins.push({ fingerprint, source: '--trusted-fingerprint' });
  }
  return pins;
}
