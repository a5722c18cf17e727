/**
 * `--include` / `--exclude` with huggingface_hub's `filter_repo_objects` semantics (allow_patterns /
 * ignore_patterns), so a pattern selects exactly the files `snapshot_download` would:
 * - patterns are Python `fnmatch.fnmatchcase` globs: `*` and `?` match `/` too, `[seq]`, `[!seq]`, no
 *   escape character, case-sensitive on every platform;
 * - `\` in a pattern is a path separator (normalised to `/`), and a pattern ending in `/` gets `*` appended;
 * - no include pattern = every file; a file matching any exclude pattern is dropped (exclude wins).
 *
 * Why not picomatch: it cannot be configured into fnmatch. With its closest settings `{bash, dot,
 * nobrace, noextglob, nonegate, noglobstar}` it disagreed with Python on 8 of 42 tricky cases: `?` and
 * `[!a]` never match `/`; `[!z-a]` and `[!]]` reject characters Python accepts; `?` does not match
 * one astral character; `./a` matches `a`; `[^a]` negates (in fnmatch `^` is literal). So this module
 * ports CPython 3.11's `fnmatch.translate` line by line; test/unit/filter.test.ts checks it against the
 * real Python (hand-picked cases, a seeded fuzz, and huggingface_hub's own `filter_repo_objects`).
 */

/** Characters with a meaning in a JS regular expression (outside a class) under the `u` flag. */
const SYNTAX = /[\\^$.*+?()[\]{}|/]/;

function escapeChar(ch: string): string {
  return SYNTAX.test(ch) ? `\\${ch}` : ch;
}

/** Inside a class: `\`, `]`, `[`, `^` and `-` need escaping; every other character is literal. */
function escapeClassChar(ch: string): string {
  return /[\\\][^-]/.test(ch) ? `\\${ch}` : ch;
}

type Piece = { star: true } | { star: false; re: string };

/**
 * Python's bracket handling, step for step (fnmatch.translate): builds the Python class text
 * `stuff`, then reads it the way Python's `re` would and re-emits it as a JS class with every member
 * escaped (the texts cannot be shared: `[^]]` or `[[]` mean different things in the two dialects).
 */
function translateBracket(pat: string[], i: number, j: number): string {
  // pat[i..j) is the bracket content (a leading '!' included); pat[j] is the closing ']'
  let stuff: string;
  if (!pat.slice(i, j).includes('-')) {
    stuff = pat.slice(i, j).join('').replace(/\\/g, '\\\\');
  } else {
    const chunks: string[] = [];
    let start = i;
    let k = pat[i] === '!' ? i + 2 : i + 1;
    for (;;) {
      k = indexOf(pat, '-', k, j);
      if (k < 0) break;
      chunks.push(pat.slice(start, k).join(''));
      start = k + 1;
      k = k + 3;
    }
    const chunk = pat.slice(start, j).join('');
    if (chunk !== '') chunks.push(chunk);
    else chunks[chunks.length - 1] += '-';
    // Remove empty ranges (Python: "invalid in RE")
    for (let m = chunks.length - 1; m > 0; m--) {
      const prev = [...(chunks[m - 1] as string)];
      const cur = [...(chunks[m] as string)];
      // Python compares code points; JS `>` on strings would compare UTF-16 units
      if ((prev[prev.length - 1] as string).codePointAt(0)! > (cur[0] as string).codePointAt(0)!) {
        chunks[m - 1] = prev.slice(0, -1).join('') + cur.slice(1).join('');
        chunks.splice(m, 1);
      }
    }
    // Escape backslashes and hyphens for set difference (--); hyphens that make ranges stay bare
    stuff = chunks.map((s) => s.replace(/\\/g, '\\\\').replace(/-/g, '\\-')).join('-');
  }
  // Escape set operations (&&, ~~ and ||)
  stuff = stuff.replace(/([&~|])/g, '\\$1');
  if (stuff === '') return '(?!)'; // empty range: never matches
  if (stuff === '!') return '.'; // negated empty range: any character
  if (stuff.startsWith('!')) stuff = `^${stuff.slice(1)}`;
  else if (stuff.startsWith('^') || stuff.startsWith('[')) stuff = `\\${stuff}`;
  return pythonClassToJs(stuff);
}

function indexOf(chars: string[], ch: string, from: number, to: number): number {
  for (let x = from; x < to; x++) if (chars[x] === ch) return x;
  return -1;
}

/**
 * Reads a Python `re` class body (what `stuff` above is, without the brackets) like `sre_parse` does —
 * optional leading `^`, a `]` first is literal, `\x` escapes, `a-b` ranges, a `-` before the end is
 * literal — and writes the same set as a JS class.
 */
function pythonClassToJs(body: string): string {
  const chars = [...body];
  let p = 0;
  let negate = false;
  if (chars[p] === '^') {
    negate = true;
    p++;
  }
  const items: string[] = [];
  const next = (): string => {
    const ch = chars[p++] as string;
    return ch === '\\' ? (chars[p++] as string) : ch;
  };
  const first = p;
  while (p < chars.length) {
    if (chars[p] === ']' && p !== first) break; // cannot happen: Python only adds the closing one
    const lo = next();
    if (chars[p] === '-' && p + 1 < chars.length) {
      p++;
      const hi = next();
      items.push(`${escapeClassChar(lo)}-${escapeClassChar(hi)}`);
    } else {
      items.push(escapeClassChar(lo));
    }
  }
  return `[${negate ? '^' : ''}${items.join('')}]`;
}

/** Python `fnmatch.translate` as a JS RegExp (flags `su`: `.` matches newlines, code points not UTF-16 units). */
export function fnmatchToRegExp(pattern: string): RegExp {
  const pat = [...pattern]; // code points, as Python indexes a str
  const pieces: Piece[] = [];
  let i = 0;
  const n = pat.length;
  while (i < n) {
    const c = pat[i] as string;
    i++;
    if (c === '*') {
      const last = pieces[pieces.length - 1];
      if (last === undefined || !last.star) pieces.push({ star: true }); // compress consecutive '*'
    } else if (c === '?') {
      pieces.push({ star: false, re: '.' });
    } else if (c === '[') {
      let j = i;
      if (j < n && pat[j] === '!') j++;
      if (j < n && pat[j] === ']') j++;
      while (j < n && pat[j] !== ']') j++;
      if (j >= n) {
        pieces.push({ star: false, re: '\\[' }); // unclosed: a literal '['
      } else {
        pieces.push({ star: false, re: translateBracket(pat, i, j) });
        i = j + 1;
      }
    } else {
      pieces.push({ star: false, re: escapeChar(c) });
    }
  }

  // Python wraps each interior `*fixed` in an atomic group `(?>.*?fixed)`; JS has none, so the same
  // group is spelled with a lookahead and a back-reference, which keeps matching linear.
  let out = '';
  let group = 0;
  let p = 0;
  while (p < pieces.length && !(pieces[p] as Piece).star) out += (pieces[p++] as { re: string }).re;
  while (p < pieces.length) {
    p++; // a star
    if (p === pieces.length) {
      out += '.*';
      break;
    }
    let fixed = '';
    while (p < pieces.length && !(pieces[p] as Piece).star) fixed += (pieces[p++] as { re: string }).re;
    if (p === pieces.length) {
      out += `.*${fixed}`;
    } else {
      group++;
      out += `(?=(.*?${fixed}))\\${group}`;
    }
  }
  return new RegExp(`^(?:${out})$`, 'su');
}

/** Python `fnmatch.fnmatchcase(name, pattern)`. */
export function fnmatchCase(name: string, pattern: string): boolean {
  return fnmatchToRegExp(pattern).test(name);
}

/** huggingface_hub `_normalize_separators` + `_add_wildcard_to_directories`. */
export function normalizeRepoPattern(pattern: string): string {
  const normalized = pattern.replace(/\\/g, '/');
  return normalized.endsWith('/') ? `${normalized}*` : normalized;
}

/**
 * A predicate over repo paths: true when the path matches some include pattern (or there are none)
 * and no exclude pattern.
 */
export function makeFileFilter(include: readonly string[], exclude: readonly string[]): (path: string) => boolean {
  const allow = include.map((p) => fnmatchToRegExp(normalizeRepoPattern(p)));
  const deny = exclude.map((p) => fnmatchToRegExp(normalizeRepoPattern(p)));
  return (path: string): boolean => {
    const normalized = path.replace(/\\/g, '/');
    if (allow.length > 0 && !allow.some((re) => re.test(normalized))) return false;
    return !deny.some((re) => re.test(normalized));
  };
}
