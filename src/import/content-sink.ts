/**
 * Content analysis on the offline side, in the same single pass as hashing: wraps a PayloadSink and
 * feeds every payload entry's bytes to a ContentScanner as they stream past (scanners stop taking bytes
 * once they know enough; tensor data is skipped). The connected side's verdict in the manifest is never
 * trusted: each file is judged again here, against this site's allow-list. Nothing is refused here —
 * the caller asks `refusal()` once the whole stream verified, so every refused file is named at once,
 * and refuses before anything is committed.
 */
import type { Manifest } from '../bundle/manifest.js';
import type { PayloadEntry, PayloadSink, PayloadTarget } from '../bundle/reader.js';
import { allowList, ContentScanner, verdictOf, type AllowList, type FileContent } from '../content/index.js';

export function repoLabel(entry: Pick<PayloadEntry, 'repo'>): string {
  return `${entry.repo.type === 'dataset' ? 'datasets/' : ''}${entry.repo.id}@${entry.repo.commit}`;
}

export class ContentCheckingSink implements PayloadSink {
  readonly #inner: PayloadSink;
  readonly #allow: AllowList;
  /** One verdict per payload entry, in bundle order. */
  readonly files: FileContent[] = [];

  constructor(inner: PayloadSink, allowGlobals: readonly string[] = []) {
    this.#inner = inner;
    this.#allow = allowList(allowGlobals);
  }

  async begin(manifest: Manifest): Promise<void> {
    await this.#inner.begin?.(manifest);
  }

  async open(entry: PayloadEntry): Promise<PayloadTarget> {
    const target = await this.#inner.open(entry);
    const scanner = new ContentScanner(entry.file.path, entry.file.size);
    return {
      write: async (chunk) => {
        // synchronous, before the write: the chunk's memory is ours until the write settles
        if (!scanner.done) scanner.update(chunk);
        await target.write(chunk);
      },
      finish: async () => {
        this.files.push({ repo: repoLabel(entry), path: entry.file.path, ...verdictOf(scanner.result(), this.#allow) });
        await target.finish();
      },
      abort: () => target.abort(),
    };
  }
}
