import { describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { isAirlockError } from '../../src/errors.ts';
import { formatManifest, parseManifest, payloadEntries, type Manifest } from '../../src/bundle/manifest.ts';
import { makeManifest, serializeManifest } from '../support/bundle-builder.ts';

function sample(): Manifest {
  return makeManifest([
    {
      id: 'acme/tiny',
      files: [
        { path: 'config.json', data: '{}\n' },
        { path: 'sub/vocab.txt', data: 'a\nb\n' },
        { path: 'model.safetensors', data: Buffer.alloc(100, 1), lfs: true },
      ],
    },
    { type: 'dataset', id: 'acme/ds', revision: '0123456789abcdef0123456789abcdef01234567', files: [{ path: 'data.csv', data: 'x,y\n' }] },
  ]).manifest;
}

function messageOf(value: unknown): string {
  try {
    parseManifest(Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)));
  } catch (error) {
    assert.ok(isAirlockError(error, 'E_MANIFEST_INVALID'), `expected E_MANIFEST_INVALID, got ${String(error)}`);
    return error.message;
  }
  assert.fail('parsed without error');
}

describe('parseManifest', () => {
  test('accepts what the exporter writes, and formatManifest is canonical', () => {
    const manifest = sample();
    assert.deepEqual(parseManifest(serializeManifest(manifest)), manifest);
    const shuffled: Manifest = { ...manifest, repos: [...manifest.repos].reverse().map((r) => ({ ...r, files: [...r.files].reverse() })) };
    assert.deepEqual(Buffer.from(formatManifest(shuffled)), serializeManifest(manifest));
  });

  test('not JSON, not UTF-8', () => {
    assert.match(messageOf('{"format": '), /not valid UTF-8 JSON/);
    assert.throws(() => parseManifest(Buffer.from([0x7b, 0xff, 0x7d])), (e) => isAirlockError(e, 'E_MANIFEST_INVALID'));
  });

  test('reports every schema problem at once', () => {
    const manifest = sample() as unknown as Record<string, unknown>;
    delete manifest['createdAt'];
    manifest['extra'] = 1;
    const repos = manifest['repos'] as Array<Record<string, unknown>>;
    repos[0]!['commit'] = 'ABC';
    (repos[0]!['files'] as Array<Record<string, unknown>>)[0]!['size'] = -1;
    const message = messageOf(manifest);
    assert.match(message, /createdAt/);
    assert.match(message, /additional properties/);
    assert.match(message, /\/repos\/0\/commit/);
    assert.match(message, /\/repos\/0\/files\/0\/size/);
  });

  test('reports every semantic problem at once', () => {
    const manifest = sample();
    const repo = manifest.repos[1]!; // model acme/tiny (sorted after datasets/)
    assert.equal(repo.id, 'acme/tiny');
    repo.files[0]!.path = '../escape';
    repo.files.push({ ...repo.files[2]!, path: repo.files[2]!.path.toUpperCase() });
    repo.files.push({ ...repo.files[2]! });
    repo.revision = '1111111111111111111111111111111111111111';
    manifest.repos.push({ ...manifest.repos[0]! });
    manifest.repos.push({ ...manifest.repos[0]!, id: 'bad--id' });
    const message = messageOf(manifest);
    assert.match(message, /"\.\.\/escape": "\.\." path segment/);
    assert.match(message, /differs from .* only in case/);
    assert.match(message, /appears twice/);
    assert.match(message, /revision is a commit/);
    assert.match(message, /cannot contain "--"/);
  });

  test('an LFS file is named by its sha256, a git file by its blob id', () => {
    const lfs = sample();
    const lfsFile = lfs.repos[1]!.files.find((f) => f.lfs)!;
    lfsFile.etag = lfsFile.blobId;
    assert.match(messageOf(lfs), /LFS file's etag must be its sha256/);
    const git = sample();
    const gitFile = git.repos[1]!.files.find((f) => !f.lfs)!;
    gitFile.etag = gitFile.sha256;
    assert.match(messageOf(git), /git file's etag must be its git blob id/);
  });

  test('an unsafe revision', () => {
    const manifest = sample();
    manifest.repos[1]!.revision = '../../etc';
    assert.match(messageOf(manifest), /revision/);
  });

  test('a newer format version is refused with an upgrade hint', () => {
    const manifest = sample();
    manifest.formatVersion = 2;
    try {
      parseManifest(serializeManifest(manifest));
      assert.fail('parsed');
    } catch (error) {
      assert.ok(isAirlockError(error, 'E_MANIFEST_INVALID'));
      assert.match(error.hint ?? '', /upgrade/);
    }
  });
});

describe('payloadEntries', () => {
  test('names every file payload/<type>s/<id>/<commit>/<path>', () => {
    const manifest = sample();
    const names = [...payloadEntries(manifest).keys()].sort();
    const tiny = manifest.repos[1]!.commit;
    assert.deepEqual(names, [
      'payload/datasets/acme/ds/0123456789abcdef0123456789abcdef01234567/data.csv',
      `payload/models/acme/tiny/${tiny}/config.json`,
      `payload/models/acme/tiny/${tiny}/model.safetensors`,
      `payload/models/acme/tiny/${tiny}/sub/vocab.txt`,
    ]);
  });
});

describe('manifest fields for more sources (issue 5)', () => {
  test('accepts modelscope / hf-cache kinds, lastCommit, createdAt, tensor info and a mirror path prefix', () => {
    const m = sample();
    const repo = m.repos[0]!;
    repo.source = { kind: 'modelscope', endpoint: 'https://mirror.example:8443/ms/api', createdAt: 1730000000 };
    repo.files[0]!.lastCommit = 'fedcba9876543210fedcba9876543210fedcba98';
    repo.files[0]!.safetensors = { tensors: 3, dtypes: { BF16: 2, F32: 1 } };
    assert.deepEqual(parseManifest(serializeManifest(m)), m);
    m.repos[1]!.source = { kind: 'hf-cache', endpoint: 'file:///home/ml/.cache/huggingface/hub' };
    assert.deepEqual(parseManifest(serializeManifest(m)), m);
  });

  test('still refuses credentials, queries, fragments, unknown kinds and malformed new fields', () => {
    const with_ = (edit: (m: Manifest) => void): unknown => {
      const m = sample();
      edit(m);
      return m;
    };
    for (const endpoint of ['https://user:pw@hub.example', 'https://hub.example/x?token=1', 'https://hub.example/#x', 'ftp://hub.example', 'https://hub.example/a b']) {
      assert.match(messageOf(with_((m) => (m.repos[0]!.source.endpoint = endpoint))), /source\/endpoint/, endpoint);
    }
    assert.match(messageOf(with_((m) => ((m.repos[0]!.source as { kind: string }).kind = 'gitlab'))), /source\/kind/);
    assert.match(messageOf(with_((m) => (m.repos[0]!.source.createdAt = -1))), /createdAt/);
    assert.match(messageOf(with_((m) => (m.repos[0]!.files[0]!.lastCommit = 'main'))), /lastCommit/);
    assert.match(messageOf(with_((m) => ((m.repos[0]!.files[0] as { safetensors?: unknown }).safetensors = { tensors: 1 }))), /safetensors/);
  });
});
