/**
 * The registry's own floor for the bench's many-files publish: the requests a client must make per new
 * blob, 16 at once over kept-alive connections — no bundle read, no verification. Run as its own process
 * (like every other measured command: its start-up counts, its RSS is its own).
 *   node --import tsx bench/registry-floor.ts HOST REPO COUNT [mount|head]
 * `mount` (default): POST with a mount from the repository itself (answered 202, an upload session), then
 * the PUT — two requests, what airlock does. `head`: HEAD, POST, PUT — what docker, skopeo and oras do.
 */
import { createHash } from 'node:crypto';
import { Agent, request } from 'undici';
import { manyFiles } from './many-files.ts';

const [host, repo, count, mode = 'mount'] = process.argv.slice(2);
if (host === undefined || repo === undefined || count === undefined || !['mount', 'head'].includes(mode)) throw new Error('usage: registry-floor.ts HOST REPO COUNT [mount|head]');
const blobs = manyFiles(Number(count)).map((f) => Buffer.from(f.data));
const agent = new Agent({ connections: 16 });
let next = 0;
try {
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < blobs.length) {
        const body = blobs[next++]!;
        const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
        let uploads = `http://${host}/v2/${repo}/blobs/uploads/`;
        if (mode === 'head') {
          const head = await request(`http://${host}/v2/${repo}/blobs/${digest}`, { method: 'HEAD', dispatcher: agent, reset: false });
          await head.body.dump();
        } else uploads += `?mount=${digest}&from=${repo}`;
        const post = await request(uploads, { method: 'POST', dispatcher: agent });
        await post.body.dump();
        if (post.statusCode !== 202) throw new Error(`registry floor: POST ${digest} answered ${post.statusCode}`);
        const location = new URL(String(post.headers['location']), `http://${host}`);
        location.searchParams.set('digest', digest);
        const put = await request(location, { method: 'PUT', body, headers: { 'content-type': 'application/octet-stream' }, dispatcher: agent });
        await put.body.dump();
        if (put.statusCode !== 201) throw new Error(`registry floor: PUT ${digest} answered ${put.statusCode}`);
      }
    }),
  );
} finally {
  await agent.close();
}
