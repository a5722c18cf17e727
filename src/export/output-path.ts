/**
 * Where an export writes its bundle. `-o DIR/` (a trailing slash) or `-o DIR` naming an existing
 * directory means "write `<name>.airlock.tar` in DIR", as `cp` and `curl --output-dir` do; anything
 * else is the bundle's own path. The folder is created later, before the first download, if missing.
 */
import { stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';

/** The default bundle name for a repo id: `acme/tiny-llm` → `tiny-llm.airlock.tar`. */
export function defaultBundleName(repoId: string): string {
  return `${basename(repoId)}.airlock.tar`;
}

export async function resolveOutputPath(given: string | undefined, repoId: string): Promise<string> {
  if (given === undefined) return resolve(defaultBundleName(repoId));
  const path = resolve(given);
  const folder = /[\\/]$/.test(given) || (await stat(path).then((s) => s.isDirectory(), () => false));
  return folder ? join(path, defaultBundleName(repoId)) : path;
}
