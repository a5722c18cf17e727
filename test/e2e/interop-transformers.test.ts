/**
 * The promise to users, end to end with the real clients they load models with: transformers builds a
 * tiny Llama (model + tokenizer), the project's hub serves it, airlock exports, verifies and imports
 * it, and then — with HF_HUB_OFFLINE=1 — huggingface_hub finds it, scan_cache_dir() sees no problem,
 * and AutoTokenizer + AutoModelForCausalLM load it and run a forward pass.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { startHubServer, type HubServer } from '../support/hub-server.ts';
import { runAirlock } from '../support/cli.ts';
import { runPython } from '../support/python.ts';

let hub: HubServer;
let dir: string;

async function listFiles(root: string, at = root): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(at, { withFileTypes: true })) {
    const path = join(at, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(root, path)));
    else out.push(relative(root, path));
  }
  return out;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'airlock-interop-'));
  hub = await startHubServer();
});
after(async () => {
  await hub?.close();
  await rm(dir, { recursive: true, force: true });
});

test('a transformers-built Llama loads offline from the imported cache, the first time', { timeout: 300_000 }, async () => {
  const modelDir = join(dir, 'built');
  const build = await runPython(
    `
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from tokenizers import Tokenizer, models, pre_tokenizers
words = ["<pad>", "<s>", "</s>", "<unk>"] + "the model crosses the air gap signed and verified hello world".split()
vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
model = LlamaForCausalLM(cfg)
model.save_pretrained(${JSON.stringify(modelDir)}, safe_serialization=True)
fast.save_pretrained(${JSON.stringify(modelDir)})
`,
    {},
  );
  assert.equal(build.code, 0, build.stderr);
  const files = await listFiles(modelDir);
  assert.ok(files.includes('model.safetensors') && files.includes('tokenizer.json'), files.join(','));
  const added = await hub.addRepo({
    id: 'acme/tiny-llm',
    files: await Promise.all(files.map(async (path) => ({ path, data: await readFile(join(modelDir, path)) }))),
  });

  const keys = join(dir, 'keys');
  assert.equal((await runAirlock(['keys', 'generate', '--user-id', 'ML Platform <mlops@example.org>', '--out-dir', keys])).code, 0);
  const bundle = join(dir, 'tiny-llm.airlock.tar');
  const exp = await runAirlock(['export', 'acme/tiny-llm', '--revision', 'main', '--sign-key', join(keys, 'signer.key.asc'), '-o', bundle], {
    env: { HF_ENDPOINT: hub.endpoint },
  });
  assert.equal(exp.code, 0, exp.stderr);
  const cache = join(dir, 'offline-cache');
  const pub = join(keys, 'signer.pub.asc');
  assert.equal((await runAirlock(['verify', bundle, '--trusted-keys', pub])).code, 0);
  const imp = await runAirlock(['import', bundle, '--trusted-keys', pub], { env: { HF_HUB_CACHE: cache } });
  assert.equal(imp.code, 0, imp.stderr);

  // the offline side: no endpoint at all, offline mode, only the cache
  const load = await runPython(
    `
import json, os
from huggingface_hub import snapshot_download, hf_hub_download, scan_cache_dir
from transformers import AutoTokenizer, AutoModelForCausalLM
import torch
path = snapshot_download("acme/tiny-llm", local_files_only=True)
cfg = hf_hub_download("acme/tiny-llm", "config.json", local_files_only=True)
info = scan_cache_dir()
tok = AutoTokenizer.from_pretrained("acme/tiny-llm")
model = AutoModelForCausalLM.from_pretrained("acme/tiny-llm")
ids = tok("hello world the model", return_tensors="pt")
with torch.no_grad():
    logits = model(**ids).logits
print(json.dumps({
  "snapshot": path, "config": cfg,
  "warnings": [str(w) for w in info.warnings],
  "repos": [[r.repo_id, r.repo_type, sorted(rev.commit_hash for rev in r.revisions), sorted(ref for rev in r.revisions for ref in rev.refs)] for r in info.repos],
  "shape": list(logits.shape), "vocab": model.config.vocab_size, "finite": bool(torch.isfinite(logits).all()),
}))
`,
    { HF_HUB_OFFLINE: '1', HF_HUB_CACHE: cache, HF_ENDPOINT: 'http://127.0.0.1:9' },
    { timeoutMs: 240_000 },
  );
  assert.equal(load.code, 0, load.stderr);
  const result = JSON.parse(load.stdout.trim().split('\n').pop()!);
  assert.equal(result.snapshot, join(cache, 'models--acme--tiny-llm', 'snapshots', added.commit));
  assert.deepEqual(result.warnings, []);
  assert.deepEqual(result.repos, [['acme/tiny-llm', 'model', [added.commit], ['main']]]);
  assert.equal(result.shape[0], 1);
  assert.equal(result.shape[2], result.vocab);
  assert.equal(result.vocab, 14);
  assert.equal(result.finite, true);
});
