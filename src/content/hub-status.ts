/**
 * The Hub's `securityFileStatus.pickleImportScan` for one analysed file, as `serve` answers it in
 * `expand`ed tree / paths-info entries. The Hub grades each import innocuous / suspicious / dangerous
 * from a deny-list; we grade from the allow-list and fail closed: what is not allowed is dangerous, and
 * a file that cannot be fully walked is dangerous as a whole. Files without pickles have no scan.
 */
import type { ContentVerdict } from './analyse.js';

export type SafetyLevel = 'innocuous' | 'suspicious' | 'dangerous';

export interface PickleImportScan {
  highestSafetyLevel: SafetyLevel;
  imports: Array<{ module: string; name: string; safety: SafetyLevel }>;
}

export function pickleImportScan(verdict: Pick<ContentVerdict, 'verdict' | 'globals' | 'unsafeGlobals'>): PickleImportScan | undefined {
  if (verdict.verdict === 'no-code') return undefined;
  const unsafe = new Set(verdict.unsafeGlobals);
  const imports = verdict.globals.map((g) => {
    const dot = g.lastIndexOf('.');
    const safety: SafetyLevel = unsafe.has(g) ? 'dangerous' : 'innocuous';
    return dot <= 0 ? { module: g, name: '', safety } : { module: g.slice(0, dot), name: g.slice(dot + 1), safety };
  });
  return { highestSafetyLevel: verdict.verdict === 'safe' ? 'innocuous' : 'dangerous', imports };
}
