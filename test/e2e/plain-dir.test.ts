/**
 * `--layout dir`: plain files plus huggingface_hub's local_dir metadata, checked with the real
 * huggingface_hub of the project venv: offline `hf_hub_download(repo, f, local_dir=DIR, revision=<commit>)`
 * returns the file with no warning, and `read_download_metadata` trusts every metadata file.
 */
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ManifestRepo } from '../../src/bundle/manifest.js';
import { CACHEDIR_TAG_CONTENT, commitToPlainDir, formatDownloadMetadata } from '../../src/cache/plain-dir.js';
import { isAirlockError } from '../../src/errors.js';
import { randomSuffix } from '../../src/fs/atomic.js';
import { runPython } from '../support/python.js';

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const gitSha1 = (b: Buffer): string => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const COMMIT = '0123456789abcdef0123456789abcdef01234567';

const FILES: Record<string, Buffer> = {
  'config.json': Buffer.from('{"model_type":"llama"}\n'),
  'sub/dir/vocab.txt': Buffer.from('[PAD]\n'),
  'model.safetensors': Buffer.alloc(4096, 3),
};

function repoOf(files: Record<string, Buffer>): ManifestRepo {
  return {
    type: 'model',
    id: 'acme/tiny',
    revision: 'main',
    commit: COMMIT,
    source: { kind: 'huggingface', endpoint: 'https://huggingface.co' },
    files: Object.entries(files).map(([path, data]) => {
      const lfs = path.endsWith('.safetensors');
      return { path, size: data.length, sha256: sha256(data), etag: lfs ? sha256(data) : gitSha1(data), blobId: gitSha1(data), lfs };
    }),
  };
}

async function commitDir(localDir: string, files: Record<string, Buffer>, work: string) {
  const staging = join(work, `staging-${randomSuffix()}`);
  await mkdir(staging, { recursive: true });
  let n = 0;
  const repo = repoOf(files);
  const staged = [];
  for (const file of repo.files) {
    const path = join(staging, `blob-${n++}`);
    await writeFile(path, files[file.path]!);
    staged.push({ file, source: { kind: 'staged' as const, path } });
  }
  try {
    return await commitToPlainDir({ localDir, repos: [{ repo, files: staged }], tempPath: (l) => join(staging, `${n++}-${l}`), asideDir: staging });
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

const PY = `
import json, logging, os, sys, warnings
from huggingface_hub import hf_hub_download
from huggingface_hub._local_folder import read_download_metadata
from pathlib import Path
records = []
class H(logging.Handler):
    def emit(self, r): records.append(f"{r.levelname}: {r.getMessage()}")
h = H(level=logging.DEBUG)
for name in ('huggingface_hub', ''):
    logging.getLogger(name).addHandler(h)
logging.getLogger('huggingface_hub').setLevel(logging.DEBUG)
warnings.simplefilter('always')
local = os.environ['LOCAL']
out = {}
with warnings.catch_warnings(record=True) as caught:
    for f in json.loads(os.environ['FILES']):
        md = read_download_metadata(Path(local), f)
        p = hf_hub_download('acme/tiny', f, local_dir=local, revision=os.environ['REV'])
        out[f] = {'path': p, 'metadata': None if md is None else [md.commit_hash, md.etag]}
out['_logs'] = [r for r in records if not r.startswith('DEBUG')]
out['_warnings'] = [str(w.message) for w in caught]
print(json.dumps(out))
`;

describe('commitToPlainDir', () => {
  let work: string;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'airlock-plain-'));
  });
  after(async () => {
    if (work !== undefined) await rm(work, { recursive: true, force: true });
  });

  it('writes plain files and 3-line metadata, after the files', async () => {
    const dir = join(work, 'd1');
    const [outcome] = await commitDir(dir, FILES, work);
    assert.equal(outcome!.filesWritten, 3);
    for (const [path, data] of Object.entries(FILES)) {
      assert.deepEqual(await readFile(join(dir, path)), data);
      assert.ok((await lstat(join(dir, path))).isFile());
      const meta = await readFile(join(dir, '.cache', 'huggingface', 'download', `${path}.metadata`), 'utf8');
      const [commit, etag, time, end] = meta.split('\n');
      assert.equal(commit, COMMIT);
      assert.equal(etag, repoOf(FILES).files.find((f) => f.path === path)!.etag);
      assert.match(time!, /^\d+\.\d+$/);
      assert.equal(end, '');
      assert.ok(Number(time) >= (await lstat(join(dir, path))).mtimeMs / 1000 - 1, 'metadata newer than the file');
    }
    assert.equal(await readFile(join(dir, '.cache', 'huggingface', '.gitignore'), 'utf8'), '*');
    assert.equal(await readFile(join(dir, '.cache', 'huggingface', 'CACHEDIR.TAG'), 'utf8'), CACHEDIR_TAG_CONTENT);
    assert.equal(formatDownloadMetadata(COMMIT, 'e', 1700000000), `${COMMIT}\ne\n1700000000.0\n`);
  });

  it('is fresh for huggingface_hub offline: hf_hub_download(local_dir=…, revision=<commit>) returns it silently', async () => {
    const dir = join(work, 'd2');
    await commitDir(dir, FILES, work);
    const env = { LOCAL: dir, FILES: JSON.stringify(Object.keys(FILES)), REV: COMMIT, HF_HUB_OFFLINE: '1', HF_HUB_CACHE: join(work, 'hf-cache') };
    const result = await runPython(PY, env);
    assert.equal(result.code, 0, result.stderr);
    const out = JSON.parse(result.stdout) as Record<string, unknown> & { _logs: string[]; _warnings: string[] };
    for (const path of Object.keys(FILES)) {
      const entry = out[path] as { path: string; metadata: [string, string] | null };
      assert.equal(entry.path, join(dir, ...path.split('/')));
      assert.deepEqual(entry.metadata, [COMMIT, repoOf(FILES).files.find((f) => f.path === path)!.etag], `${path}: metadata trusted`);
    }
    assert.deepEqual(out._logs, [], `no warning: ${out._logs.join(' | ')}`);
    assert.deepEqual(out._warnings, []);

    // by branch name, huggingface_hub always says it could not check the Hub (with or without metadata)
    const byBranch = await runPython(PY, { ...env, REV: 'main' });
    assert.equal(byBranch.code, 0, byBranch.stderr);
    const logs = (JSON.parse(byBranch.stdout) as { _logs: string[] })._logs;
    assert.ok(logs.some((l) => l.startsWith("WARNING: Couldn't access the Hub")), logs.join(' | '));
  });

  it('without the metadata the same call warns (the control)', async () => {
    const dir = join(work, 'd3');
    await commitDir(dir, FILES, work);
    await rm(join(dir, '.cache'), { recursive: true });
    const result = await runPython(PY, { LOCAL: dir, FILES: JSON.stringify(['config.json']), REV: COMMIT, HF_HUB_OFFLINE: '1', HF_HUB_CACHE: join(work, 'hf-cache') });
    assert.equal(result.code, 0, result.stderr);
    const logs = (JSON.parse(result.stdout) as { _logs: string[] })._logs;
    assert.ok(logs.some((l) => l.startsWith('WARNING:')), logs.join(' | '));
  });

  it('refuses several repos, symlinked directories, and rolls back', async () => {
    const dir = join(work, 'd4');
    await assert.rejects(commitToPlainDir({ localDir: dir, repos: [], tempPath: () => '', asideDir: work }), (e) => isAirlockError(e, 'E_USAGE'));
    const outside = join(work, 'outside');
    await mkdir(outside, { recursive: true });
    await mkdir(dir, { recursive: true });
    await symlink(outside, join(dir, 'sub'));
    await assert.rejects(commitDir(dir, FILES, work), (e) => isAirlockError(e, 'E_CACHE_CONFLICT'));
    assert.deepEqual(await readdir(outside), []);
    assert.deepEqual((await readdir(dir)).sort(), ['sub'], 'everything written was undone');
  });
});
