/**
 * The bundle format, in one place: the names and order of the leading entries, where payload files
 * live inside the tar, and the normalised metadata every entry carries (so the same snapshot always
 * gives the same payload bytes). Described for people in docs/bundle-format.md.
 */
import type { RepoType } from './manifest.js';

export const SUMS_NAME = 'SHA256SUMS';
export const SIGNATURE_NAME = 'SHA256SUMS.asc';
export const MANIFEST_NAME = 'manifest.json';
/** The first entries of every bundle, in this order. */
export const LEADING_ENTRIES = [SUMS_NAME, SIGNATURE_NAME, MANIFEST_NAME] as const;
export const PAYLOAD_DIR = 'payload';

export const FORMAT_VERSION = 1;

/** Normalised tar metadata: no machine's clock, owner or umask leaks into a bundle. */
export const ENTRY_MTIME = new Date(0);
export const ENTRY_MODE = 0o644;

/** Caps on what a reader buffers in memory before it has verified anything. */
export const MAX_SUMS_BYTES = 16 * 1024 * 1024;
export const MAX_SIGNATURE_BYTES = 256 * 1024;
export const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

/** `payload/<type>s/<repo id>/<commit>/<path in repo>`: unique per repo and commit, stable, readable. */
export function payloadEntryName(type: RepoType, repoId: string, commit: string, path: string): string {
  return `${PAYLOAD_DIR}/${type}s/${repoId}/${commit}/${path}`;
}

/** Byte-wise (UTF-8) order, the order of SHA256SUMS lines and payload entries. */
export function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}
