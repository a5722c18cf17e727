/**
 * What most registry tests start from: the sample model on a fresh test hub, a signing key made by
 * `airlock keys generate`, and the real `airlock export` of the model (never a hand-built bundle).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startHubServer, type AddedCommit, type HubServer } from './hub-server.ts';
import { runAirlock } from './cli.ts';
import { sampleModelFiles } from './sample-model.ts';

export interface SampleBundle {
  hub: HubServer;
  model: AddedCommit;
  /** Folder with signer.key.asc and signer.pub.asc. */
  keys: string;
  bundle: string;
}

export async function exportSampleBundle(dir: string): Promise<SampleBundle> {
  const hub = await startHubServer();
  const model = await hub.addRepo({ id: 'acme/tiny-llm', files: sampleModelFiles() });
  const keys = join(dir, 'keys');
  assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'ML Platform <mlops@example.org>', '--out-dir', keys])).code, 0);
  const bundle = join(dir, 'tiny.airlock.tar');
  const r = await runAirlock(['export', 'acme/tiny-llm', '--sign-key', join(keys, 'signer.key.asc'), '-o', bundle], { env: { HF_ENDPOINT: hub.endpoint } });
  assert.equal(r.code, 0, r.stderr);
  return { hub, model, keys, bundle };
}
