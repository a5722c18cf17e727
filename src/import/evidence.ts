/**
 * After a commit: one evidence record per imported revision, next to the cache (see
 * cache/evidence.ts). Best effort by design: the cache is already committed and correct, so a record
 * that cannot be written is a warning, never a failed import.
 */
import { basename } from 'node:path';
import type { ManifestRepo } from '../bundle/manifest.js';
import { writeEvidence, type EvidenceFile, type EvidenceLayout, type EvidenceRecord } from '../cache/evidence.js';
import { repoFolderName } from '../cache/hf-hub.js';
import { modelScopeRepoSegments } from '../cache/modelscope.js';
import type { VerifiedSigner } from '../signing/verify.js';
import { toolVersion } from '../version.js';
import type { ContentOutcome } from './summary.js';

export interface EvidenceInput {
  cacheDir: string;
  layout: EvidenceLayout;
  repos: readonly ManifestRepo[];
  bundlePath: string;
  bundleSha256: string | undefined;
  bundleBytes: number;
  signers: readonly VerifiedSigner[];
  /** The verdicts of the content check, when it ran: kept per file for `serve`'s securityFileStatus. */
  content?: ContentOutcome | undefined;
  now?: Date;
}

/** Returns one warning per record that could not be written. */
export async function recordImportEvidence(input: EvidenceInput): Promise<string[]> {
  const now = (input.now ?? new Date()).toISOString();
  const warnings: string[] = [];
  const verdicts = new Map((input.content?.files ?? []).map((f) => [`${f.repo}\0${f.path}`, f]));
  for (const repo of input.repos) {
    const label = `${repo.type === 'dataset' ? 'datasets/' : ''}${repo.id}@${repo.commit}`;
    const folder = input.layout === 'hf' ? repoFolderName(repo.type, repo.id) : modelScopeRepoSegments(repo.type, repo.id).join('/');
    const record: EvidenceRecord = {
      record: 'model-airlock-evidence',
      recordVersion: 1,
      layout: input.layout,
      type: repo.type,
      id: repo.id,
      revision: repo.revision,
      commit: repo.commit,
      folder,
      source: { kind: repo.source.kind, endpoint: repo.source.endpoint, ...(repo.source.createdAt === undefined ? {} : { createdAt: repo.source.createdAt }) },
      bundle: { name: basename(input.bundlePath), sha256: input.bundleSha256 ?? null, bytes: input.bundleBytes },
      signers: input.signers.map((s) => ({ fingerprint: s.fingerprint, userIds: s.userIds, signedAt: s.signedAt })),
      importedAt: now,
      lastVerifiedAt: now,
      tool: { name: 'model-airlock', version: toolVersion },
      files: repo.files.map((f) => ({
        path: f.path,
        size: f.size,
        sha256: f.sha256,
        etag: f.etag,
        lfs: f.lfs,
        ...(f.lastCommit === undefined ? {} : { lastCommit: f.lastCommit }),
        ...contentOf(verdicts.get(`${label}\0${f.path}`)),
      })),
    };
    try {
      await writeEvidence(input.cacheDir, record);
    } catch (error) {
      warnings.push(`could not write the evidence record of ${repo.type} ${repo.id}@${repo.commit}: ${(error as Error).message}`);
    }
  }
  return warnings;
}

function contentOf(verdict: { verdict: 'safe' | 'unsafe' | 'unscannable' | 'no-code'; globals: string[]; unsafeGlobals: string[] } | undefined): { content?: EvidenceFile['content'] } {
  return verdict === undefined ? {} : { content: { verdict: verdict.verdict, globals: verdict.globals, unsafeGlobals: verdict.unsafeGlobals } };
}
