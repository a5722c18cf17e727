/**
 * The content policy of one offline site (pure): which extra globals it trusts (`--allow-global`, a
 * policy file), and whether unsafe files may pass at all (`--allow-unsafe-pickle`). `refusal` turns the
 * verdicts of a verify/import into the one E_UNSAFE_CONTENT error naming every refused file and global.
 */
import { AirlockError } from '../errors.js';
import { GLOBAL_NAME_RE } from './allowlist.js';
import type { ContentVerdict } from './analyse.js';

export interface ContentPolicy {
  /** `module.name` entries added to the allow-list. */
  allowGlobals: string[];
  /** Let unsafe and unscannable files through (recorded in the result and the report). */
  allowUnsafe: boolean;
}

export const DEFAULT_CONTENT_POLICY: ContentPolicy = { allowGlobals: [], allowUnsafe: false };

/** One file's verdict, as verify/import report it. */
export interface FileContent extends ContentVerdict {
  /** `org/name@commit` (datasets prefixed). */
  repo: string;
  path: string;
}

/** Checks `--allow-global` values. */
export function checkGlobalNames(names: readonly string[], source: string): string[] {
  const bad = names.filter((n) => !GLOBAL_NAME_RE.test(n));
  if (bad.length > 0) {
    throw new AirlockError('E_USAGE', `${source}: not a module.name global: ${bad.slice(0, 5).map((n) => JSON.stringify(n)).join(', ')}`, {
      subject: source,
      hint: 'name each global exactly as the pickle imports it, e.g. --allow-global sklearn.linear_model._base.LinearRegression (no wildcards)',
    });
  }
  return [...names];
}

/** A policy file: one `module.name` per line; blank lines and `#` comments ignored. */
export function parsePolicyFile(text: string, source: string): string[] {
  const names = text
    .split(/\r?\n/)
    .map((line) => line.replace(/#.*$/, '').trim())
    .filter((line) => line.length > 0);
  return checkGlobalNames(names, source);
}

/** The refused files of a read, as one error (or undefined when nothing is refused or the policy lets it pass). */
export function refusal(files: readonly FileContent[], policy: ContentPolicy): AirlockError | undefined {
  const refused = files.filter((f) => f.verdict === 'unsafe' || f.verdict === 'unscannable');
  if (refused.length === 0 || policy.allowUnsafe) return undefined;
  const lines = refused.slice(0, 10).map((f) =>
    f.verdict === 'unsafe'
      ? `${f.repo}: ${f.path} (${f.format}) would import ${f.unsafeGlobals.slice(0, 8).join(', ')}${f.unsafeGlobals.length > 8 ? ` and ${f.unsafeGlobals.length - 8} more` : ''}`
      : `${f.repo}: ${f.path} (${f.format}) cannot be fully analysed: ${f.problems.slice(0, 2).join('; ')}`,
  );
  if (refused.length > lines.length) lines.push(`… and ${refused.length - lines.length} more`);
  return new AirlockError('E_UNSAFE_CONTENT', `${refused.length} file(s) would run code outside the allow-list when loaded, or cannot be analysed:\n  ${lines.join('\n  ')}`, {
    subject: refused[0]!.path,
    hint: 'nothing was written. Prefer a safetensors copy of the model; if these globals are your own trusted formats, allow them with --allow-global module.name (or --content-policy FILE); --allow-unsafe-pickle imports anyway and records it',
    details: { refused: refused.map(({ repo, path, verdict, format, unsafeGlobals, problems }) => ({ repo, path, verdict, format, unsafeGlobals, problems })) },
  });
}
