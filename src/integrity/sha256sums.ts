/**
 * SHA256SUMS in GNU coreutils format: `<64 lowercase hex><space><space><path>\n`, one line per file,
 * sorted byte-wise by path. Pure: no I/O. The parser is strict and reports every problem at once,
 * because this file is what the signature covers and what `sha256sum -c` reads.
 */
import { AirlockError } from '../errors.js';
import { compareBytes } from '../bundle/format.js';

export interface SumsEntry {
  path: string;
  sha256: string;
}

// `s`: a name may hold U+2028/U+2029, which `.` alone does not match (lines are split on \n only)
const LINE = /^([0-9a-f]{64}) {2}(.+)$/s;

export function formatSha256Sums(entries: readonly SumsEntry[]): string {
  const sorted = [...entries].sort((a, b) => compareBytes(a.path, b.path));
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.path === sorted[i - 1]!.path) {
      throw new AirlockError('E_INTERNAL', `SHA256SUMS would list ${sorted[i]!.path} twice`);
    }
  }
  for (const entry of sorted) {
    if (!/^[0-9a-f]{64}$/.test(entry.sha256)) {
      throw new AirlockError('E_INTERNAL', `not a SHA-256 hex digest for ${entry.path}: ${entry.sha256}`);
    }
    // coreutils escapes these with a leading backslash; we never produce such names (safe-path rejects them)
    if (/[\\\n\r]/.test(entry.path)) throw new AirlockError('E_INTERNAL', `path not representable in SHA256SUMS: ${JSON.stringify(entry.path)}`);
  }
  return sorted.map((e) => `${e.sha256}  ${e.path}\n`).join('');
}

/**
 * Parses SHA256SUMS. Rejects (all problems listed in one error): CRLF or missing final newline, lines not
 * in the exact two-space text-mode form (so binary mode " *" too), uppercase or short hex, escaped names, duplicates, unsorted lines.
 */
export function parseSha256Sums(text: string, subject = 'SHA256SUMS'): SumsEntry[] {
  const problems: string[] = [];
  if (text.length === 0) problems.push('the file is empty');
  else if (!text.endsWith('\n')) problems.push('the last line has no newline');
  const lines = text.length === 0 ? [] : text.replace(/\n$/, '').split('\n');
  const entries: SumsEntry[] = [];
  const seen = new Set<string>();
  lines.forEach((line, i) => {
    const n = i + 1;
    if (line.includes('\r')) {
      problems.push(`line ${n}: carriage return (CRLF line endings)`);
      return;
    }
    const m = LINE.exec(line);
    if (!m) {
      problems.push(`line ${n}: not "<64 lowercase hex>  <path>": ${JSON.stringify(line.slice(0, 120))}`);
      return;
    }
    const sha256 = m[1]!;
    const path = m[2]!;
    // binary mode ("<hex> *<path>", ONE space) never matches LINE; after TWO spaces a leading "*" is part of
    // the name (coreutils reads it so too), and refusing it would refuse our own bundles of such files
    if (path.includes('\\')) problems.push(`line ${n}: backslash in path ${JSON.stringify(path)}`);
    if (seen.has(path)) problems.push(`line ${n}: ${path} is listed twice`);
    seen.add(path);
    const prev = entries[entries.length - 1];
    if (prev !== undefined && compareBytes(prev.path, path) >= 0 && prev.path !== path) {
      problems.push(`line ${n}: ${path} is out of order (lines must be sorted byte-wise)`);
    }
    entries.push({ path, sha256 });
  });
  if (problems.length > 0) {
    throw new AirlockError('E_SUMS_INVALID', `${subject} is not a valid airlock SHA256SUMS:\n  ${problems.join('\n  ')}`, {
      subject,
      hint: 'the bundle was damaged or not made by airlock; ask for a fresh copy',
    });
  }
  return entries;
}
