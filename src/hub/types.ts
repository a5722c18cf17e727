/**
 * The seam between the exporter and a hub. Domain types only: each hub's wire format is parsed into
 * these in its own folder (src/hub/huggingface/…), never passed further in.
 */
import type { RepoType, SourceKind } from '../bundle/manifest.js';
import type { Digests } from '../integrity/digest.js';
import type { OpenRange } from './download.js';

export interface RepoRef {
  type: RepoType;
  id: string;
  /** Branch, tag or commit as the user asked. */
  revision: string;
}

/** One file of a snapshot as the hub lists it. */
export interface RemoteFile {
  path: string;
  size: number;
  /** Git blob id (for LFS files the pointer's blob id). */
  blobId: string;
  /** Present for LFS/Xet files: the content's sha256, which is also its cache etag. */
  lfsSha256?: string;
}

export function etagOf(file: RemoteFile): string {
  return file.lfsSha256 ?? file.blobId;
}

export interface DownloadProgress {
  (bytes: number): void;
}

export interface HubClient {
  readonly kind: SourceKind;
  /** Origin (and path prefix) recorded in manifests: never carries credentials. */
  readonly endpoint: string;
  /** Resolves a branch, tag or commit to the full 40-hex commit. */
  resolveCommit(repo: RepoRef): Promise<string>;
  /** Every file of the snapshot at that commit (recursive). */
  listFiles(repo: RepoRef, commit: string): Promise<RemoteFile[]>;
  /**
   * Streams one file into `destination` (created or truncated), hashing in the same pass, and checks
   * size and hash against the listing; throws E_DOWNLOAD_INTEGRITY naming the file on a mismatch.
   * One attempt; nothing is kept on failure.
   */
  download(repo: RepoRef, commit: string, file: RemoteFile, destination: string, onProgress?: DownloadProgress): Promise<Digests>;
  /**
   * Optional: byte ranges of one file, for the resumable, retrying, parallel downloader
   * (`downloadFile` in ./download.ts). The exporter uses it when present, else `download`.
   * Validates the path (E_UNSAFE_PATH) before returning.
   */
  rangeSource?(repo: RepoRef, commit: string, file: RemoteFile): OpenRange;
  /**
   * Optional: downloads in all of a file that fails its hash check, each from byte 0, before giving
   * up (`hashAttempts` of ./download.ts; default 1). ModelScope's SDK makes 3.
   */
  readonly hashAttempts?: number;
}
