/**
 * Progress of a bundle read (verify, import), observed where the verified bytes go: the payload sink.
 * No I/O and no clock: the CLI turns these calls into a display (src/cli/render.ts).
 */
import type { Manifest } from '../bundle/manifest.js';
import type { PayloadEntry, PayloadSink, PayloadTarget } from '../bundle/reader.js';

export interface ReadProgress {
  /** The manifest verified: this many payload bytes and files will stream. */
  planned(totalBytes: number, files: number): void;
  start(path: string, size: number): void;
  bytes(delta: number, path: string): void;
  finish(path: string): void;
}

/** `sink`, reporting to `progress` as entries open, stream and end (their bytes already hashed alongside). */
export function observeSink(sink: PayloadSink, progress: ReadProgress | undefined): PayloadSink {
  if (progress === undefined) return sink;
  return {
    begin: async (manifest: Manifest): Promise<void> => {
      let bytes = 0;
      let files = 0;
      for (const repo of manifest.repos) {
        for (const file of repo.files) {
          if (file.reference) continue; // delta: not in the bundle
          bytes += file.size;
          files += 1;
        }
      }
      progress.planned(bytes, files);
      if (sink.begin !== undefined) await sink.begin(manifest);
    },
    open: async (entry: PayloadEntry): Promise<PayloadTarget> => {
      const target = await sink.open(entry);
      const name = `${entry.repo.id}/${entry.file.path}`;
      progress.start(name, entry.file.size);
      return {
        write: async (chunk: Buffer): Promise<void> => {
          await target.write(chunk);
          progress.bytes(chunk.byteLength, name);
        },
        finish: async (): Promise<void> => {
          await target.finish();
          progress.finish(name);
        },
        abort: async (): Promise<void> => {
          progress.finish(name);
          await target.abort();
        },
      };
    },
  };
}
