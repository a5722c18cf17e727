/**
 * The `dir --local-dir DIR` import target (shared/specs/hf-hub.md §5): plain files at `DIR/<path>`, plus
 * what huggingface_hub writes for `local_dir` downloads — `DIR/.cache/huggingface/{.gitignore,CACHEDIR.TAG}`
 * and per file `download/<path>.metadata` = 3 lines `<commit>\n<etag>\n<float unix time>\n`, written
 * AFTER the file (metadata is trusted only if `file mtime - 1 <= timestamp`), so
 * `hf_hub_download(repo, f, local_dir=DIR, revision=<commit>)` returns the file without a network call.
 *
 * All or nothing through the undo journal; every directory is a real directory (never a symlink), and
 * existing entries are replaced (never written through).
 */
import { sha256File } from '../integrity/file-hash.js';
import { copyFile, mkdir } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { AirlockError, fsError } from '../errors.js';
import { fsyncDir, UndoJournal, writeNewFile, rollBackAndThrow } from '../fs/atomic.js';
import { ensureRealDirs, lstatIfExists } from '../fs/tree.js';
import type { HfCommitRepo } from './hf-hub.js';

/** huggingface_hub `CACHEDIR_TAG_CONTENT`. */
export const CACHEDIR_TAG_CONTENT =
  'Signature: 8a477f597d28d172789f06886806bc55\n' +
  '# This file is a cache directory tag created by huggingface_hub.\n' +
  '# For information about cache directory tags, see:\n' +
  '#\thttps://bford.info/cachedir/\n';

/** `<commit>\n<etag>\n<time.time()>\n`; the time always has a fractional part, like Python's float repr. */
export function formatDownloadMetadata(commit: string, etag: string, unixSeconds: number): string {
  const time = Number.isInteger(unixSeconds) ? `${unixSeconds}.0` : String(unixSeconds);
  return `${commit}\n${etag}\n${time}\n`;
}

export interface PlainDirCommitOptions {
  /** The target directory (created if missing). */
  localDir: string;
  /** Exactly one repo: two would write into the same files. */
  repos: readonly HfCommitRepo[];
  tempPath: (label: string) => string;
  asideDir: string;
  signal?: AbortSignal;
  /** Clock for the metadata timestamps (seconds); default Date.now()/1000 at the time each is written. */
  now?: () => number;
}

export interface PlainDirCommitOutcome {
  folder: string;
  filesWritten: number;
  filesReused: number;
}

function conflict(path: string, root: string): AirlockError {
  return new AirlockError('E_CACHE_CONFLICT', `${path} is a directory where airlock needs to put a file`, {
    subject: path,
    hint: `inspect ${path} and move it away if it is not needed, then run the import again (${root} was left unchanged)`,
  });
}

async function placeFile(from: string, target: string, journal: UndoJournal, root: string): Promise<void> {
  const existing = await lstatIfExists(target);
  if (existing?.isDirectory()) throw conflict(target, root);
  await journal.place(from, target, existing !== undefined);
}

export async function commitToPlainDir(options: PlainDirCommitOptions): Promise<PlainDirCommitOutcome[]> {
  if (options.repos.length !== 1) {
    throw new AirlockError('E_USAGE', `--layout dir writes one repo into --local-dir, but ${options.repos.length} were selected`, {
      hint: 'pick one with --repo (and run the import once per repo, each with its own --local-dir)',
    });
  }
  const root = resolve(options.localDir);
  const journal = new UndoJournal(options.asideDir);
  const now = options.now ?? ((): number => Date.now() / 1000);
  const checkpoint = (): void => options.signal?.throwIfAborted();
  const { repo, files } = options.repos[0] as HfCommitRepo;
  try {
    const outcome: PlainDirCommitOutcome = { folder: root, filesWritten: 0, filesReused: 0 };
    // the target (and missing parents) may be new: created here, journalled, removed again on failure
    let first: string | undefined;
    try {
      first = await mkdir(root, { recursive: true, mode: 0o777 });
    } catch (error) {
      throw fsError(error, 'create directory', root);
    }
    if (first !== undefined) {
      let dir = resolve(first);
      journal.createdDir(dir);
      for (const segment of relative(dir, root).split('/').filter((s) => s !== '')) {
        dir = join(dir, segment);
        journal.createdDir(dir);
      }
    }
    const hfDir = await ensureRealDirs(root, ['.cache', 'huggingface'], journal, root);
    for (const [name, content] of [['.gitignore', '*'], ['CACHEDIR.TAG', CACHEDIR_TAG_CONTENT]] as const) {
      const path = join(hfDir, name);
      if ((await lstatIfExists(path)) !== undefined) continue;
      const temp = options.tempPath('meta');
      await writeNewFile(temp, content);
      await placeFile(temp, path, journal, root);
    }
    const consumed = new Map<string, string>();
    const placed: Array<{ path: string; etag: string }> = [];
    // files first, all of them; then every metadata file (each written after its file)
    for (const { file, source } of files) {
      checkpoint();
      const segments = file.path.split('/');
      const dir = await ensureRealDirs(root, segments.slice(0, -1), journal, root);
      const target = join(dir, segments[segments.length - 1] as string);
      const existing = await lstatIfExists(target);
      if (existing?.isDirectory()) throw conflict(target, root);
      if (source.kind === 'staged' && !(existing?.isFile() === true && existing.size === file.size && (await sha256File(target)) === file.sha256)) {
        let from = source.path;
        const earlier = consumed.get(source.path);
        if (earlier !== undefined) {
          from = options.tempPath('copy');
          await copyFile(earlier, from).catch((error: unknown) => {
            throw fsError(error, 'copy', earlier);
          });
        } else consumed.set(source.path, target);
        await placeFile(from, target, journal, root);
        outcome.filesWritten += 1;
        await fsyncDir(dir);
      } else if (source.kind === 'existing' && !(existing?.isFile() === true && existing.ino === source.identity.ino && existing.dev === source.identity.dev)) {
        throw new AirlockError('E_CACHE_CONFLICT', `${target} changed while the bundle was being read`, { subject: target });
      } else {
        outcome.filesReused += 1;
      }
      placed.push({ path: file.path, etag: file.etag });
    }
    const downloadDir = await ensureRealDirs(hfDir, ['download'], journal, root);
    for (const { path, etag } of placed) {
      checkpoint();
      const segments = path.split('/');
      const dir = await ensureRealDirs(downloadDir, segments.slice(0, -1), journal, root);
      const temp = options.tempPath('metadata');
      await writeNewFile(temp, formatDownloadMetadata(repo.commit, etag, now()));
      await placeFile(temp, join(dir, `${segments[segments.length - 1] as string}.metadata`), journal, root);
    }
    await fsyncDir(downloadDir);
    journal.clear();
    return [outcome];
  } catch (error) {
    return rollBackAndThrow(journal, error, root, 'write into', `${root} may be inconsistent at the paths listed`);
  }
}
