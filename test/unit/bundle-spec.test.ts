import * as assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { isAirlockError } from '../../src/errors.js';
import { checkBundleSpec, parseBundleSpec, parseSize, resolveSpecPaths } from '../../src/spec/bundle-spec.js';

const VALID = `# three repos, one bundle
version: 1
output: out/models.airlock
signingKey: keys/release.asc
splitSize: 2GiB
repos:
  - id: Qwen/Qwen2.5-0.5B-Instruct
    source: modelscope
    include: ["*.json", "*.safetensors", "merges.txt"]
  - id: acme/embedder
    revision: v1.2
    exclude: "*.bin, *.onnx"
  - id: acme/eval-set
    type: dataset
    include:
      - data/*.parquet
`;

function problems(text: string): string[] {
  return checkBundleSpec(text).problems.map((p) => `${p.line}:${p.column} ${p.path} ${p.message}`);
}

describe('bundle spec', () => {
  it('parses a valid spec with defaults filled in', () => {
    const spec = parseBundleSpec(VALID);
    assert.equal(spec.output, 'out/models.airlock');
    assert.equal(spec.signingKey, 'keys/release.asc');
    assert.equal(spec.splitSize, 2 * 2 ** 30);
    assert.deepEqual(spec.repos, [
      { source: 'modelscope', type: 'model', id: 'Qwen/Qwen2.5-0.5B-Instruct', revision: 'master', include: ['*.json', '*.safetensors', 'merges.txt'], exclude: [], line: 7 },
      { source: 'huggingface', type: 'model', id: 'acme/embedder', revision: 'v1.2', include: [], exclude: ['*.bin', '*.onnx'], line: 10 },
      { source: 'huggingface', type: 'dataset', id: 'acme/eval-set', revision: 'main', include: ['data/*.parquet'], exclude: [], line: 13 },
    ]);
    const resolved = resolveSpecPaths(spec, '/work/specs/airlock.yaml');
    assert.equal(resolved.output, '/work/specs/out/models.airlock');
    assert.equal(resolved.signingKey, '/work/specs/keys/release.asc');
  });

  it('accepts the example in docs/bundle-spec.md', async () => {
    const doc = await readFile(new URL('../../docs/bundle-spec.md', import.meta.url), 'utf8');
    const example = /```yaml\n([\s\S]*?)```/.exec(doc)?.[1];
    assert.ok(example !== undefined, 'the doc has a yaml example');
    assert.ok(parseBundleSpec(example).repos.length >= 3);
  });

  it('reports every schema error at once, each with line:column', () => {
    const text = `output: 42
colour: blue
splitSize: lots
repos:
  - id: acme/a
    source: gitlab
    type: space
  - source: modelscope
  - id: acme/b
    include: 7
    revsion: main
`;
    assert.deepEqual(problems(text), [
      '1:9 /output must be string',
      '2:1 /colour unknown key "colour"',
      '3:12 /splitSize must be a byte count (at least 1048576) or a size like "2GiB"',
      '6:13 /repos/0/source must be one of "huggingface", "modelscope", "hf-cache"',
      '7:11 /repos/0/type must be one of "model", "dataset"',
      '8:5 /repos/1 missing required key "id"',
      '10:14 /repos/2/include must be a pattern or a list of patterns',
      '11:5 /repos/2/revsion unknown key "revsion"',
    ]);
  });

  it('reports what the schema cannot say: unsafe ids and revisions, duplicates, small splits', () => {
    const text = `splitSize: 10KB
repos:
  - id: acme/a--b
  - id: acme/ok
    revision: "bad..rev"
  - id: acme/same
  - id: acme/same
    revision: main
  - id: gpt2
    source: modelscope
`;
    assert.deepEqual(problems(text), [
      '1:12 /splitSize must be at least 1 MiB',
      '3:9 /repos/0/id a repo id cannot contain "--"',
      '5:15 /repos/1/revision revision contains ".."',
      '7:5 /repos/3 model acme/same@main from huggingface is already listed at line 6',
      '9:9 /repos/4/id a ModelScope id is owner/name',
    ]);
  });

  it('reports YAML syntax errors (all of them) with their position', () => {
    const p = checkBundleSpec('repos:\n  - id: a/b\n  - id: [unclosed\nx: 1\nx: 2\n').problems;
    assert.ok(p.length >= 1);
    for (const e of p) assert.ok(e.line >= 1 && e.column >= 1);
    assert.deepEqual(problems('repos:\n  - id: a/b\nrepos: []\n').map((s) => s.split(' ')[0]), ['3:1']);
  });

  it('refuses empty specs and throws one E_USAGE listing every problem', () => {
    assert.deepEqual(problems(''), ['1:1  the spec is empty: it needs a "repos" list']);
    assert.deepEqual(problems('repos: []\n'), ['1:8 /repos must NOT have fewer than 1 items']);
    assert.throws(
      () => parseBundleSpec('colour: 1\nrepos:\n  - idd: x\n', 'specs/airlock.yaml'),
      (e) => isAirlockError(e, 'E_USAGE') && /3 problems/.test(e.message) && e.message.includes('specs/airlock.yaml:1:1:') && e.message.includes('specs/airlock.yaml:3:5:'),
    );
  });

  it('parses sizes', () => {
    assert.equal(parseSize('500 MB'), 500e6);
    assert.equal(parseSize('1.5GiB'), 1.5 * 2 ** 30);
    assert.equal(parseSize(1048576), 1048576);
    assert.equal(parseSize('2XB'), undefined);
  });
});
