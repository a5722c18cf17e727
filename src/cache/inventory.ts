/**
 * `airlock cache inventory`: a small JSON list of what an offline hub cache holds (repos, commits,
 * refs, blob etags and sizes), to carry back to the connected side. Only blobs that a snapshot uses
 * and whose names are etags are listed. Validated against schemas/inventory.schema.json on write and
 * on read; a delta import re-checks every referenced blob in the cache anyway, so an inventory is a
 * hint for what to leave out, never a source of trust.
 */
import { schemaProblems } from '../schema/validators.js';
import { AirlockError } from '../errors.js';
import { toolVersion } from '../version.js';
import type { CacheRepoType, CacheScan } from './hf-scan.js';

export interface Inventory {
  format: 'model-airlock-inventory';
  formatVersion: 1;
  tool: { name: 'model-airlock'; version: string };
  createdAt: string;
  cache: { kind: 'huggingface' };
  repos: Array<{
    type: CacheRepoType;
    id: string;
    revisions: Array<{ commit: string; refs: string[] }>;
    blobs: Array<{ etag: string; size: number }>;
  }>;
}

function check(value: unknown, subject: string): Inventory {
  const problems = schemaProblems('inventory', value);
  if (problems.length > 0) {
    throw new AirlockError('E_USAGE', `${subject} is not an airlock cache inventory:\n  ${problems.join('\n  ')}`, {
      subject,
      hint: 'make one on the offline side with `airlock cache inventory --out have.json`',
    });
  }
  return value as Inventory;
}

export function inventoryFromScan(scan: CacheScan, now: Date = new Date()): Inventory {
  const inventory: Inventory = {
    format: 'model-airlock-inventory',
    formatVersion: 1,
    tool: { name: 'model-airlock', version: toolVersion },
    createdAt: now.toISOString(),
    cache: { kind: 'huggingface' },
    repos: scan.repos.map((repo) => {
      const used = new Set(repo.revisions.flatMap((r) => r.files.map((f) => f.blob).filter((b): b is string => b !== undefined)));
      return {
        type: repo.type,
        id: repo.id,
        revisions: repo.revisions.map((r) => ({ commit: r.commit, refs: r.refs })),
        blobs: repo.blobs.filter((b) => used.has(b.etag) && /^([0-9a-f]{40}|[0-9a-f]{64})$/.test(b.etag)).map((b) => ({ etag: b.etag, size: b.size })),
      };
    }),
  };
  return check(inventory, 'inventory');
}

export function formatInventory(inventory: Inventory): Buffer {
  return Buffer.from(`${JSON.stringify(check(inventory, 'inventory'), null, 2)}\n`, 'utf8');
}

export function parseInventory(bytes: Uint8Array, subject: string): Inventory {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (cause) {
    // never the parser's message: it quotes the file, which may be anything (a passphrase file given by mistake)
    throw new AirlockError('E_USAGE', `${subject} is not an inventory (not JSON)`, {
      subject,
      hint: 'pass the file `airlock cache inventory --out FILE` wrote on the offline side',
    });
  }
  return check(value, subject);
}
