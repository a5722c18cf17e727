/**
 * Pure checks for names that come from a hub listing, a manifest or a tar header before any of them
 * is allowed to name something on disk. Mirrors huggingface_hub's `_validate_relative_filename` and
 * hub.js `validateRelativeFilename`, applying Windows rules to every segment too, so a bundle that is
 * safe here is safe on any consumer's machine.
 */

const CONTROL = /[\u0000-\u001f\u007f]/;
const MAX_SEGMENT_BYTES = 255;
const MAX_PATH_BYTES = 4096;

/** Returns the reason a relative path is unsafe, or undefined when it is safe. */
export function unsafeRelativePathReason(path: string): string | undefined {
  if (path.length === 0) return 'empty path';
  if (Buffer.byteLength(path, 'utf8') > MAX_PATH_BYTES) return `longer than ${MAX_PATH_BYTES} bytes`;
  if (CONTROL.test(path)) return 'control character in path';
  if (path.includes('\\')) return 'backslash in path';
  if (path.startsWith('/')) return 'absolute path';
  if (/^[A-Za-z]:/.test(path)) return 'drive-letter path';
  if (path.endsWith('/')) return 'trailing slash';
  if (path !== path.normalize('NFC')) return 'not in Unicode NFC form';
  for (const segment of path.split('/')) {
    if (segment === '') return 'empty path segment (//)';
    if (segment === '.' || segment === '..') return `"${segment}" path segment`;
    if (Buffer.byteLength(segment, 'utf8') > MAX_SEGMENT_BYTES) return `segment longer than ${MAX_SEGMENT_BYTES} bytes`;
    if (segment.includes(':')) return 'colon in path segment (alternate data stream / drive form on Windows)';
    // Windows drops trailing dots and spaces, so "..." or " " would alias another name there
    if (/^[. ]+$/.test(segment)) return 'segment made only of dots and spaces';
  }
  return undefined;
}

export function isSafeRelativePath(path: string): boolean {
  return unsafeRelativePathReason(path) === undefined;
}

/** huggingface_hub `validate_repo_id`: `[namespace/]name`, word chars, `-` and `.`, no `--` or `..`. */
const REPO_ID = /^(?:[\w\-.]+\/)?[\w\-.]{1,96}$/;

export function unsafeRepoIdReason(repoId: string): string | undefined {
  if (!REPO_ID.test(repoId)) return 'a repo id is "name" or "namespace/name" with letters, digits, "-", "_" and "."';
  if (repoId.includes('--')) return 'a repo id cannot contain "--"';
  if (repoId.includes('..')) return 'a repo id cannot contain ".."';
  if (repoId.endsWith('.git')) return 'a repo id cannot end in ".git"';
  for (const part of repoId.split('/')) {
    if (/^[-.]|[-.]$/.test(part)) return 'a repo id part cannot start or end with "-" or "."';
  }
  return undefined;
}

export const COMMIT_RE = /^[0-9a-f]{40}$/;

/**
 * A revision is a commit (40 lowercase hex) or a ref name (branch, tag, `refs/pr/N`). Ref names become
 * paths under `refs/` in the cache, so they follow git's ref-name rules and our path rules.
 */
export function unsafeRevisionReason(revision: string): string | undefined {
  if (revision.length === 0) return 'empty revision';
  if (revision.length > 255) return 'revision longer than 255 characters';
  if (/[\s~^:?*[\\\u0000-\u001f\u007f]/.test(revision)) return 'revision contains a character git forbids in ref names';
  if (revision.includes('..')) return 'revision contains ".."';
  if (revision.includes('@{')) return 'revision contains "@{"';
  if (revision === '@') return 'revision "@" is not a ref name';
  if (revision.startsWith('/') || revision.endsWith('/') || revision.includes('//')) return 'revision has an empty path segment';
  if (revision.endsWith('.') || revision.endsWith('.lock')) return 'revision ends in "." or ".lock"';
  for (const segment of revision.split('/')) {
    if (segment.startsWith('.')) return 'a revision segment starts with "."';
  }
  return undefined;
}
