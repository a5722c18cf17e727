/**
 * Bench helper: one `importBundle` with the content analysis on or off — the only switch between the two
 * timed runs (`off` exists for this measurement; the CLI has no such flag). Usage:
 *   node --import tsx bench/import-content.ts on|off BUNDLE CACHE_DIR TRUSTED_PUB_KEY
 */
import { importBundle } from '../src/import/index.ts';
import { loadTrustPolicy } from '../src/signing/keyring.ts';

const [mode, bundlePath, cacheDir, pub] = process.argv.slice(2);
if ((mode !== 'on' && mode !== 'off') || bundlePath === undefined || cacheDir === undefined || pub === undefined) {
  process.stderr.write('usage: import-content.ts on|off BUNDLE CACHE_DIR PUB\n');
  process.exit(2);
}
const trust = await loadTrustPolicy({ keyFiles: [pub], fingerprints: [] });
const result = await importBundle({ bundlePath, trust: trust.policy, cacheDir, contentCheck: mode === 'on', handleSignals: false });
if (mode === 'on' && !result.content?.files.some((f) => f.verdict === 'safe')) throw new Error('the checkpoint was not analysed');
