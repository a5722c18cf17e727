/**
 * The `airlock serve` page in a real browser (Debian's chromium, headless): the index lists what was
 * imported, its links lead to the repo page, which shows revisions, refs, files and sizes and the
 * evidence import recorded — signer fingerprint and user id, signature time, bundle, source commit,
 * imported and last re-verified. A screenshot is written in the test run.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHubServer, type AddedCommit, type HubServer } from '../support/hub-server.ts';
import { run, runAirlock } from '../support/cli.ts';
import { sampleModelFiles } from '../support/sample-model.ts';
import { startServe, type ServeProcess } from '../support/serve-process.ts';

let hub: HubServer;
let dir: string;
let serve: ServeProcess;
let added: AddedCommit;
let fingerprint: string;
let evidence: { importedAt: string; lastVerifiedAt: string };

/** chromium, headless, with a fresh profile each time (nothing from the machine leaks in). */
async function chromium(args: string[], profile: string): Promise<string> {
  const r = await run('chromium', [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    `--user-data-dir=${join(dir, profile)}`,
    ...args,
  ]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-serve-page-'));
  hub = await startHubServer();
  added = await hub.addRepo({ id: 'acme/tiny-llm', files: sampleModelFiles() });
  const keys = join(dir, 'keys');
  const generated = await runAirlock(['keys', 'generate', '--user-id', 'Release Desk <release@example.org>', '--out-dir', keys, '--json']);
  assert.equal(generated.code, 0, generated.stderr);
  fingerprint = (JSON.parse(generated.stdout) as { fingerprint: string }).fingerprint;
  const bundle = join(dir, 'tiny.airlock.tar');
  assert.equal((await runAirlock(['export', 'acme/tiny-llm', '--sign-key', join(keys, 'signer.key.asc'), '-o', bundle], { env: { HF_ENDPOINT: hub.endpoint } })).code, 0);
  const cache = join(dir, 'hub');
  const imp = await runAirlock(['import', bundle, '--trusted-keys', join(keys, 'signer.pub.asc')], { env: { HF_HUB_CACHE: cache } });
  assert.equal(imp.code, 0, imp.stderr);
  // no place for the record (a file where its folder goes): the import still succeeds, with a warning
  const blocked = join(dir, 'hub2');
  await writeFile(`${blocked}.airlock`, 'not a folder\n');
  const imp2 = await runAirlock(['import', bundle, '--trusted-keys', join(keys, 'signer.pub.asc')], { env: { HF_HUB_CACHE: blocked } });
  assert.equal(imp2.code, 0, imp2.stderr);
  assert.match(imp2.stderr, /warning: could not write the evidence record of model acme\/tiny-llm@[0-9a-f]{40}/);
  await stat(join(blocked, 'models--acme--tiny-llm', 'snapshots', added.commit, 'config.json'));
  // a later full re-hash of the cache is recorded as the revision's last re-verification
  const verified = await runAirlock(['cache', 'verify', '--cache-dir', cache]);
  assert.equal(verified.code, 0, verified.stderr);
  assert.match(verified.stdout, /1 evidence record\(s\) marked re-verified/);
  evidence = JSON.parse(await readFile(join(`${cache}.airlock`, 'evidence', 'hf', 'models--acme--tiny-llm', `${added.commit}.json`), 'utf8'));
  assert.ok(evidence.lastVerifiedAt > evidence.importedAt, JSON.stringify(evidence));
  serve = await startServe(['--cache-dir', cache]);
});

after(async () => {
  await serve?.stop();
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

test('the index renders in chromium and its link leads to the repo page with the evidence', { timeout: 180_000 }, async () => {
  const index = await chromium(['--dump-dom', `${serve.url}/`], 'profile-index');
  assert.match(index, /Verified models and datasets/);
  const href = /<a href="(\/acme\/tiny-llm)">acme\/tiny-llm<\/a>/.exec(index);
  assert.ok(href, index);
  assert.match(index, /Release Desk &lt;release@example\.org&gt;/);

  const page = await chromium(['--dump-dom', `${serve.url}${href[1]}`], 'profile-repo');
  assert.match(page, new RegExp(`Revision <code>${added.commit}</code>`));
  assert.match(page, /Refs: <code>main<\/code>/);
  assert.ok(page.includes(fingerprint), `fingerprint ${fingerprint} on the page`);
  assert.match(page, /signed \d{4}-\d\d-\d\dT/);
  assert.match(page, /tiny\.airlock\.tar/);
  assert.match(page, new RegExp(`commit <code>${added.commit}</code>`));
  assert.ok(page.includes(`Imported</th><td>${evidence.importedAt}<`), 'imported time shown');
  assert.ok(page.includes(`Last re-verified</th><td>${evidence.lastVerifiedAt}<`), 're-verification time shown');
  for (const f of added.files) assert.ok(page.includes(`>${f.path}</a>`), f.path);
  // a file link on the page downloads the verified file
  const fileHref = new RegExp(`href="(/acme/tiny-llm/resolve/${added.commit}/config\\.json)"`).exec(page);
  assert.ok(fileHref);
  const res = await fetch(`${serve.url}${fileHref[1]}`);
  assert.equal(res.status, 200);
  assert.deepEqual(Buffer.from(await res.arrayBuffer()), sampleModelFiles().find((f) => f.path === 'config.json')!.data);

  const shot = join(dir, 'serve-page.png');
  await chromium([`--screenshot=${shot}`, '--window-size=1280,900', `${serve.url}${href[1]}`], 'profile-shot');
  const png = await readFile(shot);
  assert.equal(png.subarray(1, 4).toString('latin1'), 'PNG');
  assert.ok((await stat(shot)).size > 10_000);
  // unknown repos are a plain 404 page
  const missing = await fetch(`${serve.url}/acme/nothing`);
  assert.equal(missing.status, 404);
});
