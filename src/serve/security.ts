/**
 * `securityFileStatus` from what this side judged: import and pull analyse every file while it streams
 * (src/content) and keep each verdict in the revision's evidence record; this answers the Hub's
 * `pickleImportScan` from it. Nothing is analysed on request, and a file with no recorded verdict (an
 * import from before the analysis, a file with no code) claims nothing.
 */
import { pickleImportScan } from '../content/index.js';
import type { SecurityStatusProvider } from './hf-api.js';

export const evidenceSecurityStatus: SecurityStatusProvider = {
  fileStatus(_repo, revision, file) {
    const recorded = revision.evidence?.files.find((f) => f.path === file.path)?.content;
    if (recorded === undefined) return Promise.resolve(undefined);
    const scan = pickleImportScan(recorded);
    if (scan === undefined) return Promise.resolve(undefined);
    return Promise.resolve({ status: scan.highestSafetyLevel === 'innocuous' ? 'safe' : 'unsafe', pickleImportScan: scan });
  },
};
