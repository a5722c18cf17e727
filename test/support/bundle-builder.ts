/**
 * Builds airlock bundles inside a test (no binary fixtures): manifest + SHA256SUMS + detached
 * signature + tar, with knobs to make them hostile at every stage:
 *
 *   - `editManifest` changes the manifest object before it is serialised and hashed (a *signed* hostile
 *     manifest: unsafe paths, wrong etags, …);
 *   - `editSums` changes SHA256SUMS text before it is signed (a *signed* malformed list);
 *   - `signer` chooses the key (an untrusted one, or `undefined` for an unsigned bundle),
 *     `editSignature` changes the armored signature after signing;
 *   - `editEntries` has the final say over the tar entries after signing: flip bytes, add, remove,
 *     duplicate, reorder, turn into links/dirs/devices (see `tamper`); such tars are packed entry by
 *     entry with tar-stream.
 *
 * Without `editEntries` the tar is laid out exactly as `airlock export` writes it (`writerLayout`:
 * leading entries in a pax-padded reserve, payload at fixed offsets), so tests of well-formed bundles
 * see what users get; test/e2e/builder-agrees.test.ts proves the two agree byte for byte.
 *
 * A later hostile corpus builds on these pieces, so each is exported on its own.
 */
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import * as openpgp from 'openpgp';
import { pack as tarPack, type Header } from 'tar-stream';
import type { Manifest, ManifestFile, ManifestRepo, RepoType } from '../../src/bundle/manifest.ts';
import { compareBytes, MANIFEST_NAME, payloadEntryName, SIGNATURE_NAME, SUMS_NAME } from '../../src/bundle/format.ts';
import { gitBlobSha1, sha256Hex } from '../../src/integrity/digest.ts';
import { openPgpSigner, type Signer } from '../../src/signing/sign.ts';
import { readPublicKeys, type TrustedKey } from '../../src/signing/verify.ts';
import { layOut, leadingBlock, leadingReserve } from '../../src/export/bundle-layout.ts';
import { draftManifestOf } from '../../src/export/exporter.ts';
import { END_OF_ARCHIVE_BYTES, paddingAfter } from '../../src/bundle/tar-header.ts';
import type { BundleLeading } from '../../src/bundle/writer.ts';

export interface BuilderFile {
  path: string;
  data: Buffer | string;
  /** Stored in LFS: the etag is the sha256 (default: false, a git file named by its blob sha1). */
  lfs?: boolean;
}

export interface BuilderRepo {
  type?: RepoType;
  id: string;
  /** Default 'main'. */
  revision?: string;
  /** Default: a commit derived from id and revision (or the revision itself when it is 40-hex). */
  commit?: string;
  files: BuilderFile[];
}

export interface TarEntrySpec {
  name: string;
  /** Default 'file'. */
  type?: Header['type'];
  /** File content (files only). */
  data?: Buffer;
  /** For symlinks and hard links. */
  linkname?: string;
  mode?: number;
}

export interface PayloadPart {
  name: string;
  data: Buffer;
  repo: ManifestRepo;
  file: ManifestFile;
}

export interface BuildOptions {
  repos: BuilderRepo[];
  /** Signs SHA256SUMS; `undefined` makes an unsigned bundle (no SHA256SUMS.asc entry). */
  signer: Signer | undefined;
  editManifest?: (manifest: Manifest) => void;
  editSums?: (text: string) => string;
  editSignature?: (armored: string) => string;
  editEntries?: (entries: TarEntrySpec[]) => TarEntrySpec[] | void;
  createdAt?: string;
}

export interface BuiltBundle {
  /** The tar, as written. */
  bytes: Buffer;
  manifest: Manifest;
  manifestBytes: Buffer;
  sumsBytes: Buffer;
  signature: string | undefined;
  payload: PayloadPart[];
  /** The entries as written (after editEntries). */
  entries: TarEntrySpec[];
}

export const COMMIT_A = '0123456789abcdef0123456789abcdef01234567';

/** A deterministic 40-hex "commit" for a label. */
export function fakeCommit(label: string): string {
  return createHash('sha1').update(label).digest('hex');
}

function lfsPointer(sha256: string, size: number): Buffer {
  return Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${size}\n`);
}

/** The manifest entry for a file, as the exporter would record it. */
export function manifestFile(file: BuilderFile): ManifestFile {
  const data = Buffer.from(file.data);
  const sha256 = sha256Hex(data);
  if (file.lfs) {
    return { path: file.path, size: data.byteLength, sha256, etag: sha256, blobId: gitBlobSha1(lfsPointer(sha256, data.byteLength)), lfs: true };
  }
  const blobId = gitBlobSha1(data);
  return { path: file.path, size: data.byteLength, sha256, etag: blobId, blobId, lfs: false };
}

export function commitOf(repo: BuilderRepo): string {
  const revision = repo.revision ?? 'main';
  return repo.commit ?? (/^[0-9a-f]{40}$/.test(revision) ? revision : fakeCommit(`${repo.id}@${revision}`));
}

/** Manifest object + payload parts (in canonical order), before any edit. */
export function makeManifest(repos: readonly BuilderRepo[], createdAt = '2025-01-01T00:00:00Z'): { manifest: Manifest; data: Map<string, Buffer> } {
  const data = new Map<string, Buffer>();
  const manifestRepos: ManifestRepo[] = repos.map((repo) => {
    const type = repo.type ?? 'model';
    const commit = commitOf(repo);
    const files = repo.files.map((file) => {
      data.set(payloadEntryName(type, repo.id, commit, file.path), Buffer.from(file.data));
      return manifestFile(file);
    });
    return {
      type,
      id: repo.id,
      revision: repo.revision ?? 'main',
      commit,
      source: { kind: 'huggingface' as const, endpoint: 'https://huggingface.co' },
      files: files.sort((a, b) => compareBytes(a.path, b.path)),
    };
  });
  manifestRepos.sort((a, b) => compareBytes(`${a.type}s/${a.id}/${a.commit}`, `${b.type}s/${b.id}/${b.commit}`));
  return {
    manifest: { format: 'model-airlock-bundle', formatVersion: 1, tool: { name: 'model-airlock', version: '0.0.0-test' }, createdAt, repos: manifestRepos },
    data,
  };
}

/** The length of the draft export would size the reserve from; a manifest that is not JSON (hostile cases) is its own draft. */
function draftLength(manifest: Uint8Array): number {
  let parsed: Manifest;
  try {
    parsed = JSON.parse(Buffer.from(manifest).toString('utf8')) as Manifest;
  } catch {
    return manifest.byteLength;
  }
  if (!Array.isArray(parsed?.repos) || !parsed.repos.every((r) => Array.isArray(r?.files))) return manifest.byteLength;
  return serializeManifest(draftManifestOf(parsed)).byteLength;
}

/** Serialised like formatManifest, but without validation (so hostile manifests can be built). */
export function serializeManifest(manifest: Manifest): Buffer {
  return Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`, 'utf8');
}

/** SHA256SUMS text (sorted, coreutils format) without validation. */
export function sumsText(lines: ReadonlyArray<{ path: string; sha256: string }>): string {
  return [...lines]
    .sort((a, b) => compareBytes(a.path, b.path))
    .map((l) => `${l.sha256}  ${l.path}\n`)
    .join('');
}

export async function buildBundle(options: BuildOptions): Promise<BuiltBundle> {
  const { manifest, data } = makeManifest(options.repos, options.createdAt);
  options.editManifest?.(manifest);
  const manifestBytes = serializeManifest(manifest);

  // payload parts follow the (possibly edited) manifest; content for unknown names is empty
  const payload: PayloadPart[] = [];
  for (const repo of manifest.repos) {
    for (const file of repo.files) {
      const name = payloadEntryName(repo.type, repo.id, repo.commit, file.path);
      const original = [...data.entries()].find(([n]) => n === name)?.[1];
      payload.push({ name, data: original ?? Buffer.alloc(0), repo, file });
    }
  }
  payload.sort((a, b) => compareBytes(a.name, b.name));

  let text = sumsText([{ path: MANIFEST_NAME, sha256: sha256Hex(manifestBytes) }, ...payload.map((p) => ({ path: p.name, sha256: p.file.sha256 }))]);
  if (options.editSums) text = options.editSums(text);
  const sumsBytes = Buffer.from(text, 'utf8');

  let signature = options.signer === undefined ? undefined : await options.signer.sign(sumsBytes);
  if (signature !== undefined && options.editSignature) signature = options.editSignature(signature);

  let entries: TarEntrySpec[] = [
    { name: SUMS_NAME, data: sumsBytes },
    ...(signature === undefined ? [] : [{ name: SIGNATURE_NAME, data: Buffer.from(signature, 'utf8') }]),
    { name: MANIFEST_NAME, data: manifestBytes },
    ...payload.map((p) => ({ name: p.name, data: p.data })),
  ];
  if (options.editEntries) {
    // hostile structure: the edited entries are packed as they are
    entries = options.editEntries(entries) ?? entries;
    return { bytes: await packTar(entries), manifest, manifestBytes, sumsBytes, signature, payload, entries };
  }
  const bytes = await writerLayout({ sums: sumsBytes, signature, manifest: manifestBytes }, payload);
  return { bytes, manifest, manifestBytes, sumsBytes, signature, payload, entries };
}

/**
 * The tar exactly as `airlock export` lays it out (src/export/bundle-layout.ts), made with the writer's
 * own functions: the leading entries padded into the reserve export computes for them, closed by the
 * pax comment header, then every payload entry at its fixed offset. When the leading entries do not
 * fit (export's rare fallback) they go in front unpadded. test/e2e/builder-agrees.test.ts checks that
 * this gives byte for byte what export writes for the same manifest, SHA256SUMS and signature.
 */
export async function writerLayout(leading: BundleLeading, payload: ReadonlyArray<{ name: string; data: Buffer }>): Promise<Buffer> {
  // export sizes the reserve from a draft: placeholder hashes of the same length, placeholder safetensors
  // and content summaries — the same draft, made by export's own function, from the finished manifest
  const reserve = leadingReserve(leading.sums.byteLength, draftLength(leading.manifest), leading.signature !== undefined);
  const layout = layOut(payload.map((p) => ({ name: p.name, size: p.data.byteLength, expected: '' })), reserve);
  const block = (await leadingBlock(leading, reserve)) ?? (await leadingBlock(leading))!;
  const byName = new Map(payload.map((p) => [p.name, p.data]));
  const chunks: Buffer[] = [block];
  for (const e of layout.entries) chunks.push(e.header, byName.get(e.name)!, Buffer.alloc(paddingAfter(e.size)));
  chunks.push(Buffer.alloc(END_OF_ARCHIVE_BYTES));
  return Buffer.concat(chunks);
}

export async function writeBundleFile(path: string, options: BuildOptions): Promise<BuiltBundle> {
  const built = await buildBundle(options);
  await writeFile(path, built.bytes);
  return built;
}

/** Writes entries into a tar with tar-stream's pack (pax headers for long or non-ASCII names). */
export async function packTar(entries: readonly TarEntrySpec[]): Promise<Buffer> {
  const pack = tarPack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of pack) chunks.push(chunk as Buffer);
  })();
  for (const entry of entries) {
    const type = entry.type ?? 'file';
    const header: Header = {
      name: entry.name,
      size: type === 'file' ? (entry.data?.byteLength ?? 0) : 0,
      mode: entry.mode ?? (type === 'directory' ? 0o755 : 0o644),
      mtime: new Date(0),
      type,
      linkname: entry.linkname ?? '',
      uid: 0,
      gid: 0,
      uname: '',
      gname: '',
      devmajor: 0,
      devminor: 0,
    };
    await new Promise<void>((resolve, reject) => {
      const callback = (error?: Error | null): void => (error ? reject(error) : resolve());
      if (type === 'file') pack.entry(header, entry.data ?? Buffer.alloc(0), callback);
      else pack.entry(header, callback);
    });
  }
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}

type EntryEdit = (entries: TarEntrySpec[]) => TarEntrySpec[];

function indexOf(entries: readonly TarEntrySpec[], name: string): number {
  const i = entries.findIndex((e) => e.name === name);
  if (i < 0) throw new Error(`test bundle has no entry ${name}`);
  return i;
}

/** Entry-list edits for `editEntries`; compose them with `tamper.all(...)`. */
export const tamper = {
  /** XOR one byte of an entry's data (default: the middle byte). */
  flipByte(name: string, offset?: number, mask = 0x01): EntryEdit {
    return (entries) =>
      entries.map((e) => {
        if (e.name !== name) return e;
        const data = Buffer.from(e.data ?? Buffer.alloc(0));
        if (data.byteLength === 0) throw new Error(`cannot flip a byte of empty entry ${name}`);
        const at = offset ?? Math.floor(data.byteLength / 2);
        data[at] = data[at]! ^ mask;
        return { ...e, data };
      });
  },
  setData(name: string, data: Buffer): EntryEdit {
    return (entries) => entries.map((e) => (e.name === name ? { ...e, data } : e));
  },
  remove(name: string): EntryEdit {
    return (entries) => {
      indexOf(entries, name);
      return entries.filter((e) => e.name !== name);
    };
  },
  /** A second copy right after the first (or with other data). */
  duplicate(name: string, data?: Buffer): EntryEdit {
    return (entries) => {
      const i = indexOf(entries, name);
      const copy = { ...entries[i]!, ...(data === undefined ? {} : { data }) };
      return [...entries.slice(0, i + 1), copy, ...entries.slice(i + 1)];
    };
  },
  /** Moves an entry to position `to` (negative counts from the end). */
  move(name: string, to: number): EntryEdit {
    return (entries) => {
      const i = indexOf(entries, name);
      const rest = entries.filter((_, j) => j !== i);
      const at = to < 0 ? rest.length + 1 + to : to;
      return [...rest.slice(0, at), entries[i]!, ...rest.slice(at)];
    };
  },
  swap(a: string, b: string): EntryEdit {
    return (entries) => {
      const i = indexOf(entries, a);
      const j = indexOf(entries, b);
      const out = [...entries];
      [out[i], out[j]] = [out[j]!, out[i]!];
      return out;
    };
  },
  /** Inserts an entry at `at` (default: the end). */
  add(entry: TarEntrySpec, at?: number): EntryEdit {
    return (entries) => {
      const i = at === undefined ? entries.length : at < 0 ? entries.length + 1 + at : at;
      return [...entries.slice(0, i), entry, ...entries.slice(i)];
    };
  },
  /** Replaces an entry by a symlink / hard link / directory / device of the same name. */
  retype(name: string, type: NonNullable<Header['type']>, linkname?: string): EntryEdit {
    return (entries) => {
      indexOf(entries, name);
      return entries.map((e) => (e.name === name ? { name, type, ...(linkname === undefined ? {} : { linkname }) } : e));
    };
  },
  rename(name: string, to: string): EntryEdit {
    return (entries) => {
      indexOf(entries, name);
      return entries.map((e) => (e.name === name ? { ...e, name: to } : e));
    };
  },
  all(...edits: EntryEdit[]): EntryEdit {
    return (entries) => edits.reduce((acc, edit) => edit(acc), entries);
  },
};

export interface TestKey {
  signer: Signer;
  trustedKeys: TrustedKey[];
  publicKeyArmored: string;
  fingerprint: string;
}

/** A fresh v4 EdDSA key pair (what `airlock keys generate` makes), in memory. */
export async function makeTestKey(userId = 'Airlock Test <test@example.org>'): Promise<TestKey> {
  const m = /^(.*?)\s*<(.+)>$/.exec(userId);
  const { privateKey, publicKey } = await openpgp.generateKey({
    type: 'ecc',
    curve: 'curve25519Legacy',
    userIDs: [m ? { name: m[1]!, email: m[2]! } : { name: userId }],
    format: 'armored',
  });
  const signer = await openPgpSigner(privateKey, undefined, 'test key');
  const trustedKeys = await readPublicKeys(Buffer.from(publicKey), 'test.pub.asc');
  return { signer, trustedKeys, publicKeyArmored: publicKey, fingerprint: signer.fingerprint };
}

/** The payload entry name of a file of a BuilderRepo. */
export function entryName(repo: BuilderRepo, path: string): string {
  return payloadEntryName(repo.type ?? 'model', repo.id, commitOf(repo), path);
}

/* ------------------------------------------------------------------------------------------------
 * Raw tar blocks, for what tar-stream's pack refuses to write (huge claimed sizes, pax bombs,
 * global headers, trailing garbage). Hostile tests splice them into an otherwise good bundle.
 * ---------------------------------------------------------------------------------------------- */

export interface RawHeader {
  name: string;
  /** The size field; sizes above 8 GiB are written base-256, as GNU tar does. */
  size: number;
  /** The typeflag character (default '0', a regular file). */
  flag?: string;
  linkname?: string;
}

/** One 512-byte ustar header block with a valid checksum. */
export function tarHeader(h: RawHeader): Buffer {
  const block = Buffer.alloc(512);
  block.write(h.name, 0, 100, 'utf8');
  block.write('0000644\0', 100, 'latin1');
  block.write('0000000\0', 108, 'latin1');
  block.write('0000000\0', 116, 'latin1');
  if (h.size > 0o77777777777) {
    block[124] = 0x80;
    let n = h.size;
    for (let i = 135; i > 124; i--) {
      block[i] = n % 256;
      n = Math.floor(n / 256);
    }
  } else {
    block.write(`${h.size.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  }
  block.write('00000000000\0', 136, 'latin1');
  block.write((h.flag ?? '0').slice(0, 1), 156, 'latin1');
  if (h.linkname) block.write(h.linkname, 157, 100, 'utf8');
  block.write('ustar\0', 257, 'latin1');
  block.write('00', 263, 'latin1');
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of block) sum += b;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return block;
}

/** Data padded with zeros to a whole number of 512-byte blocks. */
export function padBlocks(data: Buffer): Buffer {
  const padded = Buffer.alloc(Math.ceil(data.byteLength / 512) * 512);
  data.copy(padded);
  return padded;
}

/** pax records `<len> <key>=<value>\n` (the length counts itself). */
export function paxRecords(records: ReadonlyArray<readonly [string, string]>): Buffer {
  return Buffer.concat(
    records.map(([key, value]) => {
      const body = ` ${key}=${value}\n`;
      let len = Buffer.byteLength(body) + 1;
      while (`${len}${body}`.length !== len) len = Buffer.byteLength(`${len}${body}`);
      return Buffer.from(`${len}${body}`, 'utf8');
    }),
  );
}

/** The offset of the end-of-archive marker (two zero blocks) pack writes at the end. */
export function endOfArchive(tar: Buffer): number {
  const at = tar.byteLength - 1024;
  if (at < 0 || !tar.subarray(at).every((b) => b === 0)) throw new Error('tar does not end in two zero blocks');
  return at;
}

/** `extra` inserted at `offset` (a block boundary). */
export function spliceTar(tar: Buffer, offset: number, extra: Buffer, removeBytes = 0): Buffer {
  return Buffer.concat([tar.subarray(0, offset), extra, tar.subarray(offset + removeBytes)]);
}
