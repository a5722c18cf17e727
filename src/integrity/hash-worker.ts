/**
 * One hashing thread (a `worker_threads` worker): SHA-256 (and, when asked, the git blob SHA-1) over
 * byte ranges of a SharedArrayBuffer ring the main thread fills, so hashing runs on another core
 * while the main thread reads, parses the tar and writes staging.
 *
 * Why a source string (`eval: true`) and not a file: the same code must start from `src/` under tsx
 * (tests), from `dist/` (the CLI) and from any bundler's output, without a loader in the worker (it
 * starts in ~15 ms with `execArgv: []`). It only needs `node:crypto`; it never touches the file system.
 *
 * Protocol (messages in order on one port; every command carries a sequence number `seq`, and may
 * carry a stream id `id` — default 0 — so several streams share one thread, each with its own ring):
 *   { op: 'ring', sab }                          use this ring from now on
 *   { op: 'begin', seq, gitBlobSize? }           start a new digest (the git blob SHA-1 too, if given)
 *   { op: 'ranges', seq, ranges: number[] }      hash ring[off, off+len) for each pair; reply { op: 'ack', seq }
 *   { op: 'bytes', seq, bytes: Uint8Array }      hash these (a copy, transferred); reply { op: 'ack', seq }
 *   { op: 'end', seq }                           reply { op: 'digest', seq, sha256, sha1? }
 *   { op: 'drop', seq }                          forget the stream (a non-zero id: its digest is over)
 * A failure replies { op: 'error', seq, message }.
 */
export const HASH_WORKER_SOURCE = `
'use strict';
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const streams = new Map();
function stream(id) {
  let s = streams.get(id);
  if (s === undefined) {
    s = { ring: null, sha256: null, sha1: null };
    streams.set(id, s);
  }
  return s;
}
parentPort.on('message', (m) => {
  try {
    const id = m.id === undefined ? 0 : m.id;
    const s = stream(id);
    switch (m.op) {
      case 'ring':
        s.ring = new Uint8Array(m.sab);
        return;
      case 'begin':
        s.sha256 = createHash('sha256');
        s.sha1 = null;
        if (m.gitBlobSize !== undefined) {
          s.sha1 = createHash('sha1');
          s.sha1.update('blob ' + m.gitBlobSize + '\\0');
        }
        return;
      case 'ranges': {
        const r = m.ranges;
        for (let i = 0; i < r.length; i += 2) {
          const view = s.ring.subarray(r[i], r[i] + r[i + 1]);
          s.sha256.update(view);
          if (s.sha1 !== null) s.sha1.update(view);
        }
        parentPort.postMessage({ op: 'ack', seq: m.seq });
        return;
      }
      case 'bytes':
        s.sha256.update(m.bytes);
        if (s.sha1 !== null) s.sha1.update(m.bytes);
        parentPort.postMessage({ op: 'ack', seq: m.seq });
        return;
      case 'end': {
        const out = { op: 'digest', seq: m.seq, sha256: s.sha256.digest('hex') };
        if (s.sha1 !== null) out.sha1 = s.sha1.digest('hex');
        s.sha256 = null;
        s.sha1 = null;
        parentPort.postMessage(out);
        return;
      }
      case 'drop':
        if (id !== 0) streams.delete(id);
        return;
      default:
        throw new Error('unknown op ' + String(m.op));
    }
  } catch (error) {
    parentPort.postMessage({ op: 'error', seq: m.seq, message: String(error && error.message || error) });
  }
});
`;
