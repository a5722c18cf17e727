/**
 * A real, loadable tiny Llama (config + safetensors weights + a WordLevel fast tokenizer), made
 * deterministically in TypeScript so the demo needs no download and no Python to build it.
 * transformers' LlamaForCausalLM loads it; the weights are small pseudo-random numbers.
 */

export interface SampleFile {
  path: string;
  data: Buffer;
}

const HIDDEN = 16;
const INTERMEDIATE = 32;
const LAYERS = 2;
const HEADS = 2;

const WORDS = (
  'the a an model weights carry across air gap signed verified offline bundle cache import export ' +
  'hub key trust hash file shard tensor layer token text data secure network bank hospital lab gpu ' +
  'fast safe atomic stream byte check load run forward pass hello world'
).split(' ');
const SPECIAL = ['<pad>', '<s>', '</s>', '<unk>'];

/** mulberry32: small, seedable, good enough for weights nobody trains. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function safetensors(tensors: Array<{ name: string; shape: number[] }>, seed: number): Buffer {
  const random = prng(seed);
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  const blobs: Buffer[] = [];
  let offset = 0;
  for (const t of tensors) {
    const count = t.shape.reduce((a, b) => a * b, 1);
    const data = Buffer.alloc(count * 4);
    const isNorm = t.name.endsWith('norm.weight');
    for (let i = 0; i < count; i++) data.writeFloatLE(isNorm ? 1 : (random() - 0.5) * 0.04, i * 4);
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + data.length] };
    offset += data.length;
    blobs.push(data);
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([length, Buffer.from(json), ...blobs]);
}

function json(value: unknown): Buffer {
  return Buffer.from(`${JSON.stringify(value, null, 2)}\n`);
}

/** The sample repo's files, byte-identical on every run. */
export function sampleModelFiles(): SampleFile[] {
  const vocabList = [...SPECIAL, ...WORDS];
  const vocab = Object.fromEntries(vocabList.map((w, i) => [w, i]));
  const V = vocabList.length;
  const tensors: Array<{ name: string; shape: number[] }> = [{ name: 'model.embed_tokens.weight', shape: [V, HIDDEN] }];
  for (let l = 0; l < LAYERS; l++) {
    const p = `model.layers.${l}`;
    for (const proj of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) tensors.push({ name: `${p}.self_attn.${proj}.weight`, shape: [HIDDEN, HIDDEN] });
    tensors.push({ name: `${p}.mlp.gate_proj.weight`, shape: [INTERMEDIATE, HIDDEN] });
    tensors.push({ name: `${p}.mlp.up_proj.weight`, shape: [INTERMEDIATE, HIDDEN] });
    tensors.push({ name: `${p}.mlp.down_proj.weight`, shape: [HIDDEN, INTERMEDIATE] });
    tensors.push({ name: `${p}.input_layernorm.weight`, shape: [HIDDEN] });
    tensors.push({ name: `${p}.post_attention_layernorm.weight`, shape: [HIDDEN] });
  }
  tensors.push({ name: 'model.norm.weight', shape: [HIDDEN] });
  tensors.push({ name: 'lm_head.weight', shape: [V, HIDDEN] });

  const addedTokens = SPECIAL.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }));
  return [
    { path: '.gitattributes', data: Buffer.from('*.safetensors filter=lfs diff=lfs merge=lfs -text\n') },
    {
      path: 'README.md',
      data: Buffer.from('# tiny-llm\n\nA tiny Llama with random weights: the model-airlock demo sample. It loads; it does not talk sense.\n'),
    },
    {
      path: 'config.json',
      data: json({
        architectures: ['LlamaForCausalLM'],
        model_type: 'llama',
        hidden_size: HIDDEN,
        intermediate_size: INTERMEDIATE,
        num_hidden_layers: LAYERS,
        num_attention_heads: HEADS,
        num_key_value_heads: HEADS,
        hidden_act: 'silu',
        vocab_size: V,
        max_position_embeddings: 128,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        tie_word_embeddings: false,
        torch_dtype: 'float32',
        pad_token_id: 0,
        bos_token_id: 1,
        eos_token_id: 2,
      }),
    },
    { path: 'generation_config.json', data: json({ bos_token_id: 1, eos_token_id: 2, pad_token_id: 0 }) },
    {
      path: 'tokenizer.json',
      data: json({
        version: '1.0',
        truncation: null,
        padding: null,
        added_tokens: addedTokens,
        normalizer: { type: 'Lowercase' },
        pre_tokenizer: { type: 'Whitespace' },
        post_processor: null,
        decoder: null,
        model: { type: 'WordLevel', vocab, unk_token: '<unk>' },
      }),
    },
    {
      path: 'tokenizer_config.json',
      data: json({
        tokenizer_class: 'PreTrainedTokenizerFast',
        model_max_length: 128,
        pad_token: '<pad>',
        bos_token: '<s>',
        eos_token: '</s>',
        unk_token: '<unk>',
      }),
    },
    { path: 'special_tokens_map.json', data: json({ pad_token: '<pad>', bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>' }) },
    { path: 'model.safetensors', data: safetensors(tensors, 20261124) },
  ];
}
