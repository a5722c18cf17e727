/**
 * Hashes bytes as they stream past: SHA-256 always, and the git blob SHA-1 (`"blob <len>\0" + content`)
 * when the hub names the file by it. The expected length must be known up front (it is: from the
 * listing or the manifest); a stream that runs longer fails the moment it does.
 */
import { createHash, type Hash } from 'node:crypto';

export interface Digests {
  size: number;
  sha256: string;
  /** Present when the digester was asked for it. */
  gitSha1?: string;
}

export class Digester {
  readonly #sha256: Hash = createHash('sha256');
  readonly #sha1: Hash | undefined;
  #size = 0;

  /** @param gitBlobSize when given, also computes the git blob id for content of exactly this length */
  constructor(gitBlobSize?: number) {
    if (gitBlobSize !== undefined) {
      this.#sha1 = createHash('sha1');
      this.#sha1.update(`blob ${gitBlobSize}\0`);
    }
  }

  get size(): number {
    return this.#size;
  }

  update(chunk: Uint8Array): void {
    this.#size += chunk.byteLength;
    this.#sha256.update(chunk);
    this.#sha1?.update(chunk);
  }

  digest(): Digests {
    const out: Digests = { size: this.#size, sha256: this.#sha256.digest('hex') };
    if (this.#sha1 !== undefined) out.gitSha1 = this.#sha1.digest('hex');
    return out;
  }
}

export function sha256Hex(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export function gitBlobSha1(bytes: Uint8Array): string {
  return createHash('sha1').update(`blob ${bytes.byteLength}\0`).update(bytes).digest('hex');
}
