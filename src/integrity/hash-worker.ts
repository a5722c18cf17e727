/**
 * One hashing thread (a `worker_threads` worker): SHA-256 (and, when asked, the git blob SHA-1) over
 * byte ranges of a SharedArrayBuffer ring the main thread fills, so hashing runs on another core
 * while the main thread reads, parses the tar and writes staging.
 *
 * Why a source string (`eval: true`) and not a file: the same code must start from `src/` under tsx
 * (tests), from `dist/` (the CLI) and from any bundler's output, without a loader in the worker (it
 * starts in ~15 ms with `execArgv: []`). It only needs `node:crypto`; it never touches the file system.
 *
 * Protocol (messages in order on one port; every command carries a sequence number `seq`):
 *   { op: 'ring', sab }                          use this ring from now on
 *   { op: 'begin', seq, gitBlobSize? }           start a new digest (the git blob SHA-1 too, if given)
 *   { op: 'ranges', seq, ranges: number[] }      hash ring[off, off+len) for each pair; reply { op: 'ack', seq }
 *   { op: 'bytes', seq, bytes: Uint8Array }      hash these (a copy, transferred); reply { op: 'ack', seq }
 *   { op: 'end', seq }                           reply { op: 'digest', seq, sha256, sha1? }
 * A failure replies { op: 'error', seq, message }.
 */
export const HASH_WORKER_SOURCE = `
'use strict';
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
let ring = null;
let sha256 = null;
let sha1 = null;
parentPort.on('message', (m) => {
  try {
    switch (m.op) {
      case 'ring':
        ring = new Uint8Array(m.sab);
        return;
      case 'begin':
        sha256 = createHash('sha256');
        sha1 = null;
        if (m.gitBlobSize !== undefined) {
          sha1 = createHash('sha1');
          sha1.update('blob ' + m.gitBlobSize + '\\0');
        }
        return;
      case 'ranges': {
        const r = m.ranges;
        for (let i = 0; i < r.length; i += 2) {
          const view = ring.subarray(r[i], r[i] + r[i + 1]);
          sha256.update(view);
          if (sha1 !== null) sha1.update(view);
        }
        parentPort.postMessage({ op: 'ack', seq: m.seq });
        return;
      }
      case 'bytes':
        sha256.update(m.bytes);
        if (sha1 !== null) sha1.update(m.bytes);
        parentPort.postMessage({ op: 'ack', seq: m.seq });
        return;
      case 'end': {
        const out = { op: 'digest', seq: m.seq, sha256: sha256.digest('hex') };
        if (sha1 !== null) out.sha1 = sha1.digest('hex');
        sha256 = null;
        sha1 = null;
        parentPort.postMessage(out);
        return;
      }
      default:
        throw new Error('unknown op ' + String(m.op));
    }
  } catch (error) {
    parentPort.postMessage({ op: 'error', seq: m.seq, message: String(error && error.message || error) });
  }
});
`;
