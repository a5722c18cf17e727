/**
 * The numbers behind a progress display: bytes done of the total, per active file, a rate smoothed over
 * the last seconds and an ETA. No I/O and no clock of its own (`now` is injected): the CLI owns the
 * terminal (src/cli/render.ts draws it).
 */
import type { FetchEvent } from './fetch.js';
import type { SnapshotPlan } from './fetch.js';

export interface ActiveFile {
  path: string;
  size: number;
  done: number;
}

export interface ProgressSnapshot {
  totalBytes: number;
  doneBytes: number;
  files: number;
  filesDone: number;
  /** Bytes per second over the recent window; 0 until measurable. */
  rate: number;
  /** Seconds left at that rate; undefined while unknown. */
  etaSeconds: number | undefined;
  active: ActiveFile[];
}

const WINDOW_MS = 5_000;

export class ProgressModel {
  #total = 0;
  #done = 0;
  #files = 0;
  #filesDone = 0;
  readonly #active = new Map<string, ActiveFile>();
  /** (time, doneBytes) samples inside the window. */
  #samples: Array<[number, number]> = [];

  constructor(private readonly now: () => number = () => performance.now()) {}

  planned(plans: readonly SnapshotPlan[]): void {
    for (const plan of plans) {
      this.#total += plan.totalBytes;
      this.#files += plan.selected.length;
      for (const file of plan.selected) {
        const digests = plan.done.get(file.path);
        if (digests !== undefined) {
          this.#done += digests.size;
          this.#filesDone++;
        }
      }
    }
    this.#sample();
  }

  event(event: FetchEvent): void {
    switch (event.kind) {
      case 'downloading':
        this.#active.set(event.path, { path: event.path, size: event.size, done: 0 });
        break;
      case 'downloaded':
        this.#active.delete(event.path);
        this.#filesDone++;
        break;
      default:
        break;
    }
  }

  /** Plain totals, for reads that are not downloads (verify/import reading a bundle). */
  plan(totalBytes: number, files: number): void {
    this.#total += totalBytes;
    this.#files += files;
    this.#sample();
  }

  /** A file starts / ends (verify/import: an entry of the bundle). */
  start(path: string, size: number): void {
    this.#active.set(path, { path, size, done: 0 });
  }

  finish(path: string): void {
    if (this.#active.delete(path)) this.#filesDone++;
  }

  /** A byte delta for one file (negative when a restart threw bytes away). Kept bytes count as done. */
  bytes(delta: number, path: string): void {
    this.#done += delta;
    const file = this.#active.get(path);
    if (file !== undefined) file.done += delta;
    this.#sample();
  }

  #sample(): void {
    const t = this.now();
    const last = this.#samples[this.#samples.length - 1];
    if (last !== undefined && t - last[0] < 100) {
      last[1] = this.#done;
    } else {
      this.#samples.push([t, this.#done]);
    }
    while (this.#samples.length > 2 && t - (this.#samples[0] as [number, number])[0] > WINDOW_MS) this.#samples.shift();
  }

  snapshot(): ProgressSnapshot {
    const t = this.now();
    const first = this.#samples[0];
    let rate = 0;
    if (first !== undefined && t - first[0] >= 500) rate = Math.max(0, ((this.#done - first[1]) * 1000) / (t - first[0]));
    const left = Math.max(0, this.#total - this.#done);
    return {
      totalBytes: this.#total,
      doneBytes: this.#done,
      files: this.#files,
      filesDone: this.#filesDone,
      rate,
      etaSeconds: rate > 0 ? left / rate : left === 0 ? 0 : undefined,
      active: [...this.#active.values()].map((f) => ({ ...f })),
    };
  }
}
