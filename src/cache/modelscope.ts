/**
 * The modelscope cache (shared/specs/modelscope.md §3, §5): where it is, the `.msc` / `.mdl` / `.mv`
 * metadata byte for byte, and committing verified, staged files into
 * `<C>/models/<owner>/<name with . → ___>/` (datasets: `<C>/datasets/…`) so that modelscope 1.23–1.37
 * (`snapshot_download(id, local_files_only=True)`, needing a non-empty `.msc`) and modelscope-hub ≥ 0.1.7
 * (the 1.38+ legacy-dir probe) load it offline.
 *
 * Commit order: every file (temp + rename), then `.mdl` and `.mv`, then `.msc` LAST (an index only ever
 * names files that are there). Every change goes through the undo journal; on failure the cache is put
 * back as it was. Every directory traversed or created must be a real directory (never a symlink), and
 * existing entries are replaced, never written through, so nothing lands outside the repo folder.
 *
 * Pickles are protocol 2 with only PROTO, EMPTY_LIST/EMPTY_DICT, MARK, BINUNICODE, SETITEMS/APPENDS and
 * STOP: nothing executes on load and every Python 3 reads them (§3.3).
 */
import { sha256File, type ChunkObserver } from '../integrity/file-hash.js';
import { copyFile, open, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import type { ManifestFile, ManifestRepo, RepoType } from '../bundle/manifest.js';
import { AirlockError, fsError } from '../errors.js';
import { fsyncDir, UndoJournal, writeNewFile, rollBackAndThrow } from '../fs/atomic.js';
import { checkRealDirs, ensureRealDirs, lstatIfExists } from '../fs/tree.js';
import type { BlobIdentity, HfCommitFile } from './hf-hub.js';

type Env = Readonly<Record<string, string | undefined>>;

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

function expandHome(value: string, home: string): string {
  if (value === '~' || value.startsWith('~/')) return home + value.slice(1);
  return value;
}

/**
 * The cache root `<C>` (what `MODELSCOPE_CACHE` means to modelscope 1.23–1.37): `--cache-dir`, else
 * `MODELSCOPE_CACHE`, else `~/.cache/modelscope/hub` (the library default, also probed by msh ≥ 0.1.8).
 * Models go under `<C>/models/`. `~` is expanded; the result is absolute.
 */
export function resolveModelScopeCacheDir(flag: string | undefined, env: Env = process.env, home: string = homedir()): string {
  const explicit = nonEmpty(flag) ?? nonEmpty(env['MODELSCOPE_CACHE']);
  if (explicit !== undefined) return resolve(expandHome(explicit, home));
  return join(home, '.cache', 'modelscope', 'hub');
}

/** 1.15+ masking: only the name, every `.` → `___` (owner and case kept). */
export function maskModelScopeName(name: string): string {
  return name.split('.').join('___');
}

/** `[owner, masked name]` of an `owner/name` id; refuses ids without an owner. */
export function modelScopeIdParts(id: string): [string, string] {
  const slash = id.indexOf('/');
  if (slash <= 0 || slash !== id.lastIndexOf('/')) {
    throw new AirlockError('E_REPO_ID_INVALID', `the ModelScope layout needs an owner/name repo id, got ${JSON.stringify(id)}`, {
      subject: id,
      hint: 'import this repo with --layout hf or --layout dir instead',
    });
  }
  return [id.slice(0, slash), maskModelScopeName(id.slice(slash + 1))];
}

/** `models/<owner>/<masked name>` (or `datasets/…`), relative to the cache root. */
export function modelScopeRepoSegments(type: RepoType, id: string): string[] {
  const [owner, masked] = modelScopeIdParts(id);
  return [type === 'dataset' ? 'datasets' : 'models', owner, masked];
}

// ---------------------------------------------------------------------------------------------------------
// Pickles (§3.3)

const PROTO = 0x80;
const EMPTY_LIST = 0x5d;
const EMPTY_DICT = 0x7d;
const MARK = 0x28;
const BINUNICODE = 0x58;
const SETITEMS = 0x75;
const APPENDS = 0x65;
const STOP = 0x2e;

function binunicode(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  const head = Buffer.alloc(5);
  head[0] = BINUNICODE;
  head.writeUInt32LE(bytes.length, 1);
  return Buffer.concat([head, bytes]);
}

export interface MscEntry {
  /** The listing `Path`, `/`-separated. */
  path: string;
  /** The per-file commit (the listing's `Revision`). */
  revision: string;
}

/** `.msc`: `80 02 5d 28`, per file `7d 28 X"Path" X<path> X"Revision" X<commit> 75`, then `65 2e`. */
export function encodeMsc(entries: readonly MscEntry[]): Buffer {
  if (entries.length === 0) throw new AirlockError('E_INTERNAL', 'an .msc index must not be empty (modelscope 1.x offline treats it as "nothing cached")');
  const parts: Buffer[] = [Buffer.from([PROTO, 2, EMPTY_LIST, MARK])];
  for (const entry of entries) {
    parts.push(Buffer.from([EMPTY_DICT, MARK]), binunicode('Path'), binunicode(entry.path), binunicode('Revision'), binunicode(entry.revision), Buffer.from([SETITEMS]));
  }
  parts.push(Buffer.from([APPENDS, STOP]));
  return Buffer.concat(parts);
}

/** `.mdl`: `80 02 7d 28 X"id" X<owner/masked-name> 75 2e`. */
export function encodeMdl(maskedId: string): Buffer {
  return Buffer.concat([Buffer.from([PROTO, 2, EMPTY_DICT, MARK]), binunicode('id'), binunicode(maskedId), Buffer.from([SETITEMS, STOP])]);
}

/** `.mv`, no newline: models `Revision:<ref>,CreatedAt:<epoch s>`; datasets the bare revision. */
export function encodeMv(type: RepoType, revision: string, createdAt: number | undefined): string | undefined {
  if (type === 'dataset') return revision;
  return createdAt === undefined ? undefined : `Revision:${revision},CreatedAt:${createdAt}`;
}

/**
 * Reads a pickle of lists, dicts and strings as Python writes `.msc`/`.mdl` (protocols 2–5, §3.3):
 * PROTO, FRAME, EMPTY_LIST, EMPTY_DICT, MARK, SHORT_BINUNICODE, BINUNICODE, BINUNICODE8, the memo ops,
 * APPEND(S), SETITEM(S), STOP. Any other opcode is refused (nothing is ever executed).
 */
export function decodeModelScopePickle(bytes: Uint8Array): unknown {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  let pos = 0;
  const fail = (why: string): never => {
    throw new AirlockError('E_CACHE_CONFLICT', `not a modelscope metadata pickle: ${why} at byte ${pos}`);
  };
  const need = (n: number): void => {
    if (pos + n > buf.length) fail('truncated');
  };
  const text = (length: number): string => {
    need(length);
    const s = new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(pos, pos + length));
    pos += length;
    return s;
  };
  const popMark = (): unknown[] => {
    const mark = marks.pop();
    if (mark === undefined) fail('no MARK');
    return stack.splice(mark as number);
  };
  const top = (): unknown => (stack.length === 0 ? fail('empty stack') : stack[stack.length - 1]);
  for (;;) {
    need(1);
    const op = buf[pos++] as number;
    switch (op) {
      case 0x80: need(1); pos += 1; break; // PROTO
      case 0x95: need(8); pos += 8; break; // FRAME
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x7d: stack.push(new Map<string, unknown>()); break; // EMPTY_DICT
      case 0x28: marks.push(stack.length); break; // MARK
      case 0x8c: { need(1); const n = buf[pos++] as number; stack.push(text(n)); break; } // SHORT_BINUNICODE
      case 0x58: { need(4); const n = buf.readUInt32LE(pos); pos += 4; stack.push(text(n)); break; } // BINUNICODE
      case 0x8d: { need(8); const n = Number(buf.readBigUInt64LE(pos)); pos += 8; stack.push(text(n)); break; } // BINUNICODE8
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x71: { need(1); memo.set(buf[pos++] as number, top()); break; } // BINPUT
      case 0x72: { need(4); memo.set(buf.readUInt32LE(pos), top()); pos += 4; break; } // LONG_BINPUT
      case 0x68: { need(1); const k = buf[pos++] as number; if (!memo.has(k)) fail('unknown memo'); stack.push(memo.get(k)); break; } // BINGET
      case 0x6a: { need(4); const k = buf.readUInt32LE(pos); pos += 4; if (!memo.has(k)) fail('unknown memo'); stack.push(memo.get(k)); break; } // LONG_BINGET
      case 0x61: { const v = stack.pop(); const l = top(); if (!Array.isArray(l)) fail('APPEND to a non-list'); (l as unknown[]).push(v); break; } // APPEND
      case 0x65: { const items = popMark(); const l = top(); if (!Array.isArray(l)) fail('APPENDS to a non-list'); (l as unknown[]).push(...items); break; } // APPENDS
      case 0x73: { const v = stack.pop(); const k = stack.pop(); const d = top(); if (!(d instanceof Map) || typeof k !== 'string') fail('bad SETITEM'); (d as Map<string, unknown>).set(k as string, v); break; } // SETITEM
      case 0x75: { // SETITEMS
        const items = popMark();
        const d = top();
        if (!(d instanceof Map) || items.length % 2 !== 0) fail('bad SETITEMS');
        for (let i = 0; i < items.length; i += 2) {
          if (typeof items[i] !== 'string') fail('non-string key');
          (d as Map<string, unknown>).set(items[i] as string, items[i + 1]);
        }
        break;
      }
      case 0x2e: { // STOP
        if (stack.length !== 1) fail('stack not of one value at STOP');
        const toPlain = (v: unknown): unknown => (v instanceof Map ? Object.fromEntries([...v].map(([k, x]) => [k, toPlain(x)])) : Array.isArray(v) ? v.map(toPlain) : v);
        return toPlain(stack[0]);
      }
      default:
        fail(`opcode 0x${op.toString(16).padStart(2, '0')} is not allowed`);
    }
  }
}

/** The entries of an existing `.msc`, or undefined when it is not a list of {Path, Revision} (1.x then treats it as empty). */
export function parseMsc(bytes: Uint8Array): MscEntry[] | undefined {
  let value: unknown;
  try {
    value = decodeModelScopePickle(bytes);
  } catch {
    return undefined;
  }
  if (!Array.isArray(value)) return undefined;
  const out: MscEntry[] = [];
  for (const item of value) {
    const rec = item as Record<string, unknown> | null;
    if (rec === null || typeof rec !== 'object' || typeof rec['Path'] !== 'string' || typeof rec['Revision'] !== 'string') return undefined;
    out.push({ path: rec['Path'], revision: rec['Revision'] });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Commit

/**
 * Fields a manifest may carry for ModelScope sources (proposed; read structurally until they exist):
 * `files[].lastCommit` (the listing's per-file `Revision`) and `source.createdAt` (the ref's `CreatedAt`).
 */
type MaybeMsFile = ManifestFile & { lastCommit?: unknown };
type MaybeMsSource = ManifestRepo['source'] & { createdAt?: unknown };

export interface ModelScopeCommitRepo {
  repo: ManifestRepo;
  /** Same shape as for the HF cache; `existing` means the target file is already there (see findExistingModelScopeFile). */
  files: HfCommitFile[];
  /** Per-file commit for `.msc`; default the manifest's `lastCommit`, else the repo's commit. */
  fileRevisions?: ReadonlyMap<string, string>;
  /** The ref's `CreatedAt` for `.mv`; default the manifest's `source.createdAt`. No value → no `.mv`. */
  createdAt?: number;
}

export interface ModelScopeCommitOptions {
  /** The cache root `<C>` (resolveModelScopeCacheDir). */
  cacheDir: string;
  repos: readonly ModelScopeCommitRepo[];
  /** Fresh temp paths on the cache's file system (the staging directory). */
  tempPath: (label: string) => string;
  /** Where replaced entries are kept until the commit ends (same file system). */
  asideDir: string;
  signal?: AbortSignal;
}

export interface ModelScopeCommitOutcome {
  /** Absolute path of the repo folder (what `snapshot_download` returns). */
  folder: string;
  filesWritten: number;
  filesReused: number;
  /** Entries in the `.msc` written (this import's files plus earlier entries whose files are still there). */
  indexEntries: number;
  mvWritten: boolean;
}

function identityOf(stats: { dev: number; ino: number; size: number; mtimeMs: number }): BlobIdentity {
  return { dev: stats.dev, ino: stats.ino, size: stats.size, mtimeMs: stats.mtimeMs };
}

function sameIdentity(a: BlobIdentity, b: BlobIdentity): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs;
}

/** Is the file already at its place in the cache (a regular file, not a link) with the right content? */
export async function findExistingModelScopeFile(cacheDir: string, repo: ManifestRepo, file: ManifestFile, observe?: ChunkObserver): Promise<BlobIdentity | undefined> {
  const root = resolve(cacheDir);
  const segments = [...modelScopeRepoSegments(repo.type, repo.id), ...file.path.split('/')];
  await checkRealDirs(root, segments.slice(0, -1), root);
  const path = join(root, ...segments);
  const stats = await lstatIfExists(path);
  if (stats === undefined || !stats.isFile() || stats.size !== file.size) return undefined;
  if ((await sha256File(path, observe)) !== file.sha256) return undefined;
  const after = await lstatIfExists(path);
  return after !== undefined && after.isFile() && sameIdentity(identityOf(after), identityOf(stats)) ? identityOf(stats) : undefined;
}

function conflict(path: string, what: string, root: string): AirlockError {
  return new AirlockError('E_CACHE_CONFLICT', `${path} is ${what} where airlock needs to put a file`, {
    subject: path,
    hint: `inspect ${path} and move it away if it is not needed, then run the import again (the cache at ${root} was left unchanged)`,
  });
}

async function readSmall(path: string, max: number): Promise<Buffer | undefined> {
  const stats = await lstatIfExists(path);
  if (stats === undefined || !stats.isFile() || stats.size > max) return undefined;
  let handle;
  try {
    handle = await open(path, 'r');
    const buffer = Buffer.alloc(stats.size);
    const { bytesRead } = await handle.read(buffer, 0, stats.size, 0);
    return buffer.subarray(0, bytesRead);
  } catch (error) {
    throw fsError(error, 'read', path);
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

/** Puts `data` at `path` (temp + rename, journalled) unless it already holds exactly that. */
async function placeSmallFile(path: string, data: Buffer, journal: UndoJournal, options: ModelScopeCommitOptions, root: string): Promise<boolean> {
  const existing = await lstatIfExists(path);
  if (existing?.isDirectory()) throw conflict(path, 'a directory', root);
  if (existing?.isFile() && existing.size === data.length) {
    const current = await readSmall(path, data.length);
    if (current !== undefined && current.equals(data)) return false;
  }
  const temp = options.tempPath('meta');
  await writeNewFile(temp, data);
  await journal.place(temp, path, existing !== undefined); // a symlink there is replaced itself, never written through
  return true;
}

/**
 * Commits verified, staged files into the modelscope cache (§5), all or nothing; one outcome per repo in
 * the order given. On any failure (or abort through `signal`) every change is rolled back and the error
 * rethrown. Files already in the folder but not in this import stay, and stay indexed if they were.
 */
export async function commitToModelScopeCache(options: ModelScopeCommitOptions): Promise<ModelScopeCommitOutcome[]> {
  const root = resolve(options.cacheDir);
  const journal = new UndoJournal(options.asideDir);
  const checkpoint = (): void => options.signal?.throwIfAborted();
  const touched = new Set<string>();
  const syncTouched = async (): Promise<void> => {
    for (const dir of touched) await fsyncDir(dir);
    touched.clear();
  };

  // one folder per repo: two revisions of one repo would overwrite each other
  const folders = new Map<string, string>();
  for (const { repo } of options.repos) {
    const key = modelScopeRepoSegments(repo.type, repo.id).join('/');
    const other = folders.get(key);
    if (other !== undefined) {
      throw new AirlockError('E_CACHE_CONFLICT', `${repo.id}@${repo.revision} and @${other} would share the ModelScope folder ${key}`, {
        subject: key,
        hint: 'the modelscope layout holds one revision per repo: import one of them at a time (--repo)',
      });
    }
    folders.set(key, repo.revision);
  }

  try {
    const outcomes: ModelScopeCommitOutcome[] = [];
    /** staged path → where it went (a staged blob shared by several paths is copied for the later ones) */
    const consumed = new Map<string, string>();
    const indexes: MscEntry[][] = [];

    // 1. files
    for (const input of options.repos) {
      checkpoint();
      const { repo } = input;
      const folder = await ensureRealDirs(root, modelScopeRepoSegments(repo.type, repo.id), journal, root);
      const outcome: ModelScopeCommitOutcome = { folder, filesWritten: 0, filesReused: 0, indexEntries: 0, mvWritten: false };
      const entries: MscEntry[] = [];
      for (const { file, source } of input.files) {
        checkpoint();
        const segments = file.path.split('/');
        const dir = await ensureRealDirs(folder, segments.slice(0, -1), journal, root);
        const target = join(dir, segments[segments.length - 1] as string);
        const existing = await lstatIfExists(target);
        if (existing?.isDirectory()) throw conflict(target, 'a directory', root);
        let reused = false;
        if (source.kind === 'existing') {
          if (existing === undefined || !existing.isFile() || !sameIdentity(identityOf(existing), source.identity)) {
            throw new AirlockError('E_CACHE_CONFLICT', `${target} changed while the bundle was being read`, {
              subject: target,
              hint: 'another process is writing to this cache; wait for it to finish and run the import again',
            });
          }
          reused = true;
        } else if (existing?.isFile() && existing.size === file.size && (await sha256File(target)) === file.sha256) {
          reused = true;
        } else {
          let from = source.path;
          const earlier = consumed.get(source.path);
          if (earlier !== undefined) {
            from = options.tempPath('copy');
            try {
              await copyFile(earlier, from);
            } catch (error) {
              throw fsError(error, 'copy', earlier);
            }
          } else {
            consumed.set(source.path, target);
          }
          await journal.place(from, target, existing !== undefined);
          touched.add(dir);
        }
        if (reused) outcome.filesReused += 1;
        else outcome.filesWritten += 1;
        const lastCommit = input.fileRevisions?.get(file.path) ?? (file as MaybeMsFile).lastCommit;
        entries.push({ path: file.path, revision: typeof lastCommit === 'string' && lastCommit !== '' ? lastCommit : repo.commit });
      }
      outcomes.push(outcome);
      indexes.push(entries);
    }
    await syncTouched();

    // 2. .mdl and .mv
    for (const [i, input] of options.repos.entries()) {
      checkpoint();
      const { repo } = input;
      const outcome = outcomes[i] as ModelScopeCommitOutcome;
      const [owner, masked] = modelScopeIdParts(repo.id);
      if (await placeSmallFile(join(outcome.folder, '.mdl'), encodeMdl(`${owner}/${masked}`), journal, options, root)) touched.add(outcome.folder);
      const fromSource = (repo.source as MaybeMsSource).createdAt;
      const createdAt = input.createdAt ?? (typeof fromSource === 'number' ? fromSource : undefined);
      const mv = encodeMv(repo.type, repo.revision, createdAt);
      if (mv !== undefined) {
        outcome.mvWritten = await placeSmallFile(join(outcome.folder, '.mv'), Buffer.from(mv, 'utf8'), journal, options, root);
        if (outcome.mvWritten) touched.add(outcome.folder);
      }
    }
    await syncTouched();

    // 3. .msc, last: earlier entries whose files are still there, then this import's (same Path replaced)
    for (const [i] of options.repos.entries()) {
      checkpoint();
      const outcome = outcomes[i] as ModelScopeCommitOutcome;
      const mscPath = join(outcome.folder, '.msc');
      const ours = indexes[i] as MscEntry[];
      const mine = new Set(ours.map((e) => e.path));
      const previous = parseMsc((await readSmall(mscPath, 64 * 1024 * 1024)) ?? Buffer.alloc(0)) ?? [];
      const kept: MscEntry[] = [];
      for (const entry of previous) {
        if (mine.has(entry.path)) continue;
        const stats = await stat(join(outcome.folder, ...entry.path.split('/'))).catch(() => undefined);
        if (stats?.isFile() === true) kept.push(entry);
      }
      const all = [...kept, ...ours];
      outcome.indexEntries = all.length;
      if (all.length === 0) continue; // a repo without files: nothing to index (1.x will not find it offline)
      if (await placeSmallFile(mscPath, encodeMsc(all), journal, options, root)) touched.add(outcome.folder);
    }
    await syncTouched();
    journal.clear();
    return outcomes;
  } catch (error) {
    return rollBackAndThrow(journal, error, root, 'commit into', `the cache at ${root} may be inconsistent at the paths listed; remove those repo folders and import again`);
  }
}
