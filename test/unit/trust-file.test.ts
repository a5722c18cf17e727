/** The trust file: parse rules, location rule, fingerprint normalisation (pure). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseFingerprintArgs, parseTrustFile, trustFileLocation } from '../../src/signing/trust-file.ts';
import { normalizeFingerprint } from '../../src/signing/verify.ts';
import { isAirlockError } from '../../src/errors.ts';

const F = 'AC0D0A91F35A4396ADA8AC7F8A2440A14184843C';

test('fingerprints are normalised from how people write them; short ids are refused', () => {
  assert.equal(normalizeFingerprint('ac0d 0a91 f35a 4396 ada8  ac7f 8a24 40a1 4184 843c'), F);
  assert.equal(normalizeFingerprint(`0x${F}`), F);
  assert.equal(normalizeFingerprint('8A2440A14184843C'), undefined);
  assert.throws(() => parseFingerprintArgs(['8A2440A14184843C']), (e) => isAirlockError(e, 'E_USAGE'));
});

test('trust file: comments, blanks, duplicates; every bad line reported at once', () => {
  const pins = parseTrustFile(`# release keys\n\n${F}  # ml platform\n${F.toLowerCase()}\n`, '/etc/t');
  assert.deepEqual(pins, [{ fingerprint: F, source: '/etc/t:3' }]);
  assert.throws(
    () => parseTrustFile('nope\nABCD\n', '/etc/t'),
    (e) => isAirlockError(e, 'E_USAGE') && /line 1/.test(e.message) && /line 2/.test(e.message),
  );
});

test('location: $AIRLOCK_TRUST_FILE, else $XDG_CONFIG_HOME/airlock/trusted-fingerprints, else ~/.config', () => {
  assert.deepEqual(trustFileLocation({ AIRLOCK_TRUST_FILE: '/x/t' }, '/home/u'), { path: '/x/t', explicit: true });
  assert.deepEqual(trustFileLocation({ XDG_CONFIG_HOME: '/cfg' }, '/home/u'), { path: '/cfg/airlock/trusted-fingerprints', explicit: false });
  assert.deepEqual(trustFileLocation({}, '/home/u'), { path: '/home/u/.config/airlock/trusted-fingerprints', explicit: false });
});
