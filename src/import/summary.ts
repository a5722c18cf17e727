/** Per-repo summaries shared by the verify and import results, and the evidence record built from them. */
import type { Manifest, RepoType } from '../bundle/manifest.js';
import type { TrustPolicy, VerifiedSigner } from '../signing/verify.js';
import type { FileContent } from '../content/index.js';

/** What verify/import found about what loading the files would execute, and the policy applied. */
export interface ContentOutcome {
  /** `--allow-unsafe-pickle`: unsafe and unscannable files were let through. */
  allowUnsafe: boolean;
  /** Globals this site added to the allow-list. */
  allowGlobals: string[];
  files: FileContent[];
}

/** The record's per-file content entries: files that hold code or could not be analysed (no-code files are counted). */
function contentRecord(content: ContentOutcome): NonNullable<VerificationRecord['content']> {
  const shown = content.files.filter((f) => f.verdict !== 'no-code' || f.notes.length > 0);
  return {
    allowUnsafe: content.allowUnsafe,
    allowGlobals: content.allowGlobals,
    noCodeFiles: content.files.length - shown.length,
    files: shown.map((f) => ({ repo: f.repo, path: f.path, verdict: f.verdict, format: f.format, globals: f.globals, unsafeGlobals: f.unsafeGlobals, problems: f.problems, notes: f.notes })),
  };
}

export interface RepoSummary {
  type: RepoType;
  id: string;
  revision: string;
  commit: string;
  /** Number of files. */
  files: number;
  bytes: number;
  /** Delta bundles: files not in the bundle that the target cache must already hold (counted in files). */
  referenced: number;
}

export function summarizeRepos(manifest: Manifest): RepoSummary[] {
  return manifest.repos.map((repo) => ({
    type: repo.type,
    id: repo.id,
    revision: repo.revision,
    commit: repo.commit,
    files: repo.files.length,
    bytes: repo.files.reduce((sum, file) => sum + file.size, 0),
    referenced: repo.files.filter((file) => file.reference).length,
  }));
}

/**
 * The evidence record `verify --report` and `import --report` write (JSON): what was checked, against
 * which trust, with what result. Built here (pure); the CLI writes it.
 */
export interface VerificationRecord {
  record: 'model-airlock-verification';
  recordVersion: 1;
  command: 'verify' | 'import';
  result: 'verified' | 'imported' | 'refused';
  startedAt: string;
  finishedAt: string;
  tool: { name: 'model-airlock'; version: string };
  host: string;
  bundle: { path: string; sha256: string | null; bytes: number | null };
  trust: {
    keys: Array<{ fingerprint: string; userIds: string[]; source: string }>;
    /** null: no pins, every key in the key files was trusted. */
    pins: Array<{ fingerprint: string; source: string }> | null;
    requireSignatures: number;
    allowUnsigned: boolean;
  };
  signed: boolean | null;
  signers: VerifiedSigner[];
  repos: RepoSummary[];
  files: number | null;
  bytes: number | null;
  cacheDir?: string;
  /** Content analysis (issue 17): verdicts of the files that hold pickles or could not be analysed. */
  content?: {
    allowUnsafe: boolean;
    allowGlobals: string[];
    noCodeFiles: number;
    files: Array<Pick<FileContent, 'repo' | 'path' | 'verdict' | 'format' | 'globals' | 'unsafeGlobals' | 'problems' | 'notes'>>;
  };
  error?: { code: string; message: string; subject?: string };
}

export interface RecordInput {
  command: 'verify' | 'import';
  startedAt: Date;
  finishedAt: Date;
  toolVersion: string;
  host: string;
  bundlePath: string;
  policy: TrustPolicy;
  allowUnsigned: boolean;
  cacheDir?: string;
  /** The successful result… */
  result?: { bundleSha256: string | undefined; bundleBytes: number; signed: boolean; signers: VerifiedSigner[]; repos: RepoSummary[]; files: number; bytes: number; content?: ContentOutcome | undefined };
  /** …or the refusal (with the bundle's hash when it could be read). */
  failure?: { code: string; message: string; subject?: string | undefined; bundleSha256?: string | undefined; bundleBytes?: number | undefined };
}

export function verificationRecord(input: RecordInput): VerificationRecord {
  const ok = input.result !== undefined;
  return {
    record: 'model-airlock-verification',
    recordVersion: 1,
    command: input.command,
    result: ok ? (input.command === 'import' ? 'imported' : 'verified') : 'refused',
    startedAt: input.startedAt.toISOString(),
    finishedAt: input.finishedAt.toISOString(),
    tool: { name: 'model-airlock', version: input.toolVersion },
    host: input.host,
    bundle: {
      path: input.bundlePath,
      sha256: input.result?.bundleSha256 ?? input.failure?.bundleSha256 ?? null,
      bytes: input.result?.bundleBytes ?? input.failure?.bundleBytes ?? null,
    },
    trust: {
      keys: input.policy.keys.map(({ key, source }) => ({ fingerprint: key.getFingerprint().toUpperCase(), userIds: key.getUserIDs(), source })),
      pins: input.policy.pins === undefined ? null : input.policy.pins.map((p) => ({ fingerprint: p.fingerprint, source: p.source })),
      requireSignatures: Math.max(1, input.policy.requireSignatures ?? 1),
      allowUnsigned: input.allowUnsigned,
    },
    signed: input.result?.signed ?? null,
    signers: input.result?.signers ?? [],
    repos: input.result?.repos ?? [],
    files: input.result?.files ?? null,
    bytes: input.result?.bytes ?? null,
    ...(input.cacheDir === undefined ? {} : { cacheDir: input.cacheDir }),
    ...(input.result?.content === undefined ? {} : { content: contentRecord(input.result.content) }),
    ...(input.failure === undefined
      ? {}
      : { error: { code: input.failure.code, message: input.failure.message, ...(input.failure.subject === undefined ? {} : { subject: input.failure.subject }) } }),
  };
}

function spacedFpr(fingerprint: string): string {
  return fingerprint.replace(/(.{4})/g, '$1 ').trim();
}

/** Plain text an auditor can paste into a ticket: one fact per line, nothing hidden in colours. */
export function auditSummary(record: VerificationRecord): string {
  const lines: string[] = [];
  const add = (label: string, value: string): void => void lines.push(`${`${label}:`.padEnd(16)}${value}`);
  lines.push(`model-airlock ${record.command} record (${record.result.toUpperCase()})`);
  add('bundle', record.bundle.path);
  add('bundle sha256', record.bundle.sha256 ?? (record.result === 'refused' ? 'unknown' : 'not computed (add --sha256)'));
  add('bundle bytes', record.bundle.bytes === null ? 'unknown' : String(record.bundle.bytes));
  if (record.signers.length === 0) add('signature', record.signed === false ? 'NONE (unsigned bundle accepted with --allow-unsigned)' : 'not accepted');
  for (const s of record.signers) {
    add('signed by', `${spacedFpr(s.fingerprint)} ${s.userIds[0] ?? ''}`.trim());
    if (s.signingKeyFingerprint !== s.fingerprint) add('  with subkey', spacedFpr(s.signingKeyFingerprint));
    add('  signed at', s.signedAt);
    add('  trusted by', s.pinnedBy === undefined ? `key file ${s.keySource ?? '?'} (no pins)` : `pin ${s.pinnedBy}`);
  }
  add('policy', `${record.trust.requireSignatures} trusted signature(s) required; ${record.trust.pins === null ? 'no fingerprint pins' : `${record.trust.pins.length} pinned fingerprint(s)`}`);
  for (const r of record.repos) add('repo', `${r.type} ${r.id} @ ${r.revision} = commit ${r.commit} (${r.files} files, ${r.bytes} bytes)`);
  if (record.files !== null) add('checked', `${record.files} files, ${record.bytes} bytes: every sha256 matches the signed SHA256SUMS`);
  if (record.content !== undefined) {
    const c = record.content;
    add('content', `${c.files.filter((f) => f.verdict === 'safe').length} pickle file(s) safe (allow-list${c.allowGlobals.length > 0 ? ` + ${c.allowGlobals.join(', ')}` : ''}), ${c.noCodeFiles} file(s) carry no code`);
    for (const f of c.files.filter((x) => x.verdict === 'unsafe' || x.verdict === 'unscannable')) {
      add(`  ${f.verdict.toUpperCase()}`, `${f.repo} ${f.path}${f.unsafeGlobals.length > 0 ? `: ${f.unsafeGlobals.join(', ')}` : ''}${c.allowUnsafe ? ' (let through: --allow-unsafe-pickle)' : ''}`);
    }
    for (const f of c.files) for (const n of f.notes) add('  note', `${f.repo} ${f.path}: ${n}`);
  }
  if (record.cacheDir !== undefined) add('cache', record.cacheDir);
  if (record.error !== undefined) add('refused', `${record.error.code}: ${record.error.message}`);
  add('tool', `model-airlock ${record.tool.version} on ${record.host}`);
  add('time', record.finishedAt);
  return `${lines.join('\n')}\n`;
}
