/**
 * The least a Node program can do per byte of a pull, on this machine: the bench's bound for
 * `airlock pull`, not a client. Each blob is fetched over a raw socket whose reads land straight in
 * SharedArrayBuffer slots (`net.connect({ onread })`: no HTTP library, no per-chunk allocation), each full
 * slot is hashed by one of two worker threads and written to the file from the same memory, and each file
 * is fdatasync'ed at the end and its digest compared. No TLS, auth, redirects, retries, signature,
 * manifest checks, staging or commit, and Node's start-up is not counted: what is left is receive, hash,
 * write, fsync — the work pull cannot skip.
 *   node --import tsx bench/pull-floor.ts HOST:PORT REPO OUT_DIR SECONDS_FILE DIGEST...
 * Writes the seconds from the first connect to the last fsync to SECONDS_FILE.
 */
import net from 'node:net';
import { Worker } from 'node:worker_threads';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const [target, repo, outDir, secondsFile, ...digests] = process.argv.slice(2);
if (target === undefined || repo === undefined || outDir === undefined || secondsFile === undefined || digests.length === 0) {
  throw new Error('usage: pull-floor.ts HOST:PORT REPO OUT_DIR SECONDS_FILE DIGEST...');
}
const [host, port] = target.split(':') as [string, string];
const SLOT = 512 * 1024;
const SLOTS = 8;

type Answer = { type: 'hashed'; id: number; slot: number } | { type: 'digest'; id: number; hex: string };
const HASHER = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hashes = new Map();
parentPort.on('message', (m) => {
  if (m.type === 'start') hashes.set(m.id, createHash('sha256'));
  else if (m.type === 'slot') { hashes.get(m.id).update(new Uint8Array(m.memory, m.offset, m.length)); parentPort.postMessage({ type: 'hashed', id: m.id, slot: m.slot }); }
  else { parentPort.postMessage({ type: 'digest', id: m.id, hex: hashes.get(m.id).digest('hex') }); hashes.delete(m.id); }
});`;
const hashers = [0, 1].map(() => new Worker(HASHER, { eval: true }));
const listeners = new Map<number, (answer: Answer) => void>();
for (const hasher of hashers) hasher.on('message', (answer: Answer) => listeners.get(answer.id)?.(answer));

async function fetchBlob(digest: string, id: number): Promise<void> {
  const hasher = hashers[id % hashers.length]!;
  const file = await open(join(outDir!, String(id)), 'w');
  const shared = new SharedArrayBuffer(SLOT * SLOTS);
  const memory = Buffer.from(shared);
  // per slot: how many of its hash and write are still running (it is refilled only at 0)
  const pending = new Array<number>(SLOTS).fill(0);
  let slot = 0;
  let fill = 0;
  let fileAt = 0;
  let expected = -1;
  let received = 0;
  let head = Buffer.alloc(0);
  const headRead = Buffer.alloc(16 * 1024);
  let paused = false;
  let ended = false;
  let hex: string | undefined;
  return new Promise<void>((resolve, reject) => {
    const settle = (): void => {
      if (paused && pending[slot] === 0) {
        paused = false;
        socket.resume();
      }
      if (!ended || hex === undefined || pending.some((n) => n > 0)) return;
      ended = false;
      void file
        .datasync()
        .then(() => file.close())
        .then(() => (hex === digest.slice('sha256:'.length) ? resolve() : reject(new Error(`${digest}: got sha256:${hex}`))), reject);
    };
    listeners.set(id, (answer) => {
      if (answer.type === 'hashed') pending[answer.slot]! -= 1;
      else hex = answer.hex;
      settle();
    });
    hasher.postMessage({ type: 'start', id });
    const flush = (): void => {
      const full = slot;
      const length = fill;
      pending[full]! += 2;
      hasher.postMessage({ type: 'slot', id, memory: shared, offset: full * SLOT, length, slot: full });
      file.write(memory, full * SLOT, length, fileAt).then(() => {
        pending[full]! -= 1;
        settle();
      }, reject);
      fileAt += length;
      slot = (slot + 1) % SLOTS;
      fill = 0;
    };
    const socket = net.connect({
      host,
      port: Number(port),
      onread: {
        buffer: () => (expected < 0 ? headRead : memory.subarray(slot * SLOT + fill, (slot + 1) * SLOT)),
        callback: (n: number, buffer: Uint8Array): boolean => {
          if (expected < 0) {
            head = Buffer.concat([head, buffer.subarray(0, n)]);
            const end = head.indexOf('\r\n\r\n');
            if (end < 0) return true;
            const headers = head.subarray(0, end).toString('latin1');
            const length = /\r\ncontent-length: *(\d+)/i.exec(headers)?.[1];
            if (!headers.startsWith('HTTP/1.1 200') || length === undefined) {
              reject(new Error(`${digest}: ${headers.split('\r\n')[0]}`));
              socket.destroy();
              return false;
            }
            expected = Number(length);
            fill = head.copy(memory, slot * SLOT, end + 4);
            received = fill;
          } else {
            fill += n;
            received += n;
          }
          if (received >= expected) {
            if (fill > 0) flush();
            ended = true;
            hasher.postMessage({ type: 'end', id });
            socket.end();
            return false;
          }
          if (fill === SLOT) {
            flush();
            if (pending[slot]! > 0) {
              paused = true;
              return false;
            }
          }
          return true;
        },
      },
    });
    socket.on('connect', () => socket.write(`GET /v2/${repo}/blobs/${digest} HTTP/1.1\r\nHost: ${target}\r\nConnection: close\r\n\r\n`));
    socket.on('error', reject);
  });
}

const started = performance.now();
try {
  await Promise.all(digests.map((digest, id) => fetchBlob(digest, id)));
} finally {
  await Promise.all(hashers.map((hasher) => hasher.terminate()));
}
await writeFile(secondsFile, String((performance.now() - started) / 1000));
