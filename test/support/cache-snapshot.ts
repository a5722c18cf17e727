/**
 * A full, comparable listing of a directory tree: every path with its type and mode, files with
 * size and sha256, symlinks with their target text (never followed). Two equal snapshots mean the
 * tree is byte-for-byte the same (optionally mtimes too, for "nothing was rewritten" checks).
 */
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';

export interface TreeEntry {
  /** Relative to the root, `/`-separated; '.' is the root itself. */
  path: string;
  type: 'dir' | 'file' | 'symlink' | 'other';
  /** Permission bits (mode & 0o7777). */
  mode: number;
  size?: number;
  sha256?: string;
  target?: string;
  mtimeMs?: number;
}

export interface SnapshotOptions {
  /** Also record mtimes of files and symlinks (not directories: their mtime changes with any entry). */
  mtimes?: boolean;
}

/** The snapshot of `root`, or null when `root` does not exist. */
export async function snapshotTree(root: string, options: SnapshotOptions = {}): Promise<TreeEntry[] | null> {
  try {
    await lstat(root);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  const out: TreeEntry[] = [];
  const walk = async (rel: string): Promise<void> => {
    const abs = rel === '.' ? root : join(root, rel);
    const stats = await lstat(abs);
    const mode = stats.mode & 0o7777;
    const withTime = <T extends TreeEntry>(entry: T): T => (options.mtimes ? { ...entry, mtimeMs: stats.mtimeMs } : entry);
    if (stats.isSymbolicLink()) {
      out.push(withTime({ path: rel, type: 'symlink', mode, target: await readlink(abs) }));
    } else if (stats.isFile()) {
      const sha256 = createHash('sha256').update(await readFile(abs)).digest('hex');
      out.push(withTime({ path: rel, type: 'file', mode, size: stats.size, sha256 }));
    } else if (stats.isDirectory()) {
      out.push({ path: rel, type: 'dir', mode });
      const names = (await readdir(abs)).sort();
      for (const name of names) await walk(rel === '.' ? name : `${rel}/${name}`);
    } else {
      out.push({ path: rel, type: 'other', mode });
    }
  };
  await walk('.');
  return out;
}

/** One line per entry, for readable assertion diffs. */
export function formatTree(entries: readonly TreeEntry[] | null): string {
  if (entries === null) return '(missing)';
  return entries
    .map((e) => {
      const mode = e.mode.toString(8).padStart(4, '0');
      const detail = e.type === 'file' ? ` ${e.size} ${e.sha256}` : e.type === 'symlink' ? ` -> ${e.target}` : '';
      return `${e.type.padEnd(7)} ${mode} ${e.path}${detail}${e.mtimeMs === undefined ? '' : ` @${e.mtimeMs}`}`;
    })
    .join('\n');
}

/** Paths only (for layout assertions). */
export function treePaths(entries: readonly TreeEntry[] | null): string[] {
  return entries === null ? [] : entries.map((e) => e.path);
}

/** Staging directories an import left in `<cache>/.locks` (there must be none after any import ends). */
export async function stagingLeftovers(cache: string): Promise<string[]> {
  const names = await readdir(join(cache, '.locks')).catch(() => [] as string[]);
  return names.filter((n) => n.startsWith('airlock-staging-'));
}
