/**
 * Sliding-window attention (mistral, qwen2): which layers get a window, and cached decoding past
 * the window against the PyTorch golden and against full recomputation without a cache. The
 * forward logits are checked against the goldens by golden.test.ts (cases *_sliding_window).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { readSafetensors } from "../io/safetensors.js";
import { greedyByRecompute } from "../testing/greedy.js";
import { GOLDEN_MODELS } from "../testing/paths.js";
import { maxAbsDiff } from "../tuners/conformance.js";
import { PeftModel } from "../tuners/peft-model.js";
import { PROMPT_KEY } from "../tuners/prompt_tuning/index.js";
import { flatPrefix, keyValuesOf, rows } from "../tuners/prompt_tuning/testing.js";
import { Rng } from "../util/rng.js";
import { AutoModelForCausalLM } from "./auto.js";
import { LLAMA } from "./llama.js";
import type { PreTrainedModel } from "./pretrained.js";

const models: PreTrainedModel[] = [];
after(async () => {
  for (const m of models) await m.release();
});

async function load(name: string): Promise<PreTrainedModel> {
  const m = await AutoModelForCausalLM.fromPretrained(join(GOLDEN_MODELS, name));
  models.push(m);
  return m;
}

function prompt(len: number, vocab: number, rng: Rng): number[] {
  return Array.from({ length: len }, () => 3 + Math.floor(rng.next() * (vocab - 3)));
}

const base = {
  hidden_size: 16,
  num_attention_heads: 2,
  num_hidden_layers: 4,
  intermediate_size: 32,
  vocab_size: 10,
};
const windows = (raw: Record<string, unknown>) => LLAMA.parseConfig({ ...base, ...raw }, {}).windows;

describe("sliding window: which layers, how wide", () => {
  test("mistral windows every layer; a missing sliding_window is transformers' default 4096, null is none", () => {
    assert.deepEqual(windows({ model_type: "mistral", sliding_window: 4 }), [4, 4, 4, 4]);
    assert.deepEqual(windows({ model_type: "mistral" }), [4096, 4096, 4096, 4096]);
    assert.deepEqual(windows({ model_type: "mistral", sliding_window: null }), [null, null, null, null]);
    // MistralModel ignores layer_types (it only warns)
    assert.deepEqual(windows({ model_type: "mistral", sliding_window: 4, layer_types: Array(4).fill("full_attention") }), [4, 4, 4, 4]);
  });

  test("qwen2: only with use_sliding_window, on layers >= max_window_layers or as layer_types says", () => {
    assert.deepEqual(windows({ model_type: "qwen2", sliding_window: 8, max_window_layers: 1 }), [null, null, null, null]);
    assert.deepEqual(windows({ model_type: "qwen2", use_sliding_window: true, sliding_window: 8, max_window_layers: 2 }), [
      null,
      null,
      8,
      8,
    ]);
    // Qwen2Config's default max_window_layers is 28: no layer of a 4-layer model reaches it
    assert.deepEqual(windows({ model_type: "qwen2", use_sliding_window: true, sliding_window: 8 }), [null, null, null, null]);
    const types = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"];
    assert.deepEqual(windows({ model_type: "qwen2", use_sliding_window: true, sliding_window: 8, layer_types: types }), [8, null, 8, null]);
    assert.deepEqual(windows({ model_type: "llama", sliding_window: 4 }), [null, null, null, null]);
  });

  test("bad window fields fail naming the field", () => {
    assert.throws(() => windows({ model_type: "mistral", sliding_window: 0 }), /"sliding_window" must be a positive integer or null/);
    assert.throws(
      () => windows({ model_type: "qwen2", use_sliding_window: true, layer_types: ["full_attention"] }),
      /"layer_types" has 1 entries, num_hidden_layers is 4/,
    );
    assert.throws(
      () => windows({ model_type: "qwen2", layer_types: Array(4).fill("sliding_attention") }),
      /layer_types\[0\] is "sliding_attention" but there is no window/,
    );
    assert.throws(
      () => windows({ model_type: "qwen2", use_sliding_window: true, layer_types: Array(4).fill("chunked_attention") }),
      /layer_types\[0\] is "chunked_attention"/,
    );
  });
});

describe("sliding window: cached generation past the window", () => {
  test("mistral_sliding_window: greedy generation (15 tokens, window 4) equals the PyTorch golden", async () => {
    const model = await load("mistral_sliding_window");
    const g = readSafetensors(join(GOLDEN_MODELS, "mistral_sliding_window", "golden.safetensors")).tensors;
    const start = Array.from(g.generate_input_ids.data as BigInt64Array, Number);
    const want = Array.from(g.generate_output_ids.data as BigInt64Array, Number);
    const [got] = await model.generate([start], { maxNewTokens: want.length - start.length, eosTokenId: [] });
    assert.deepEqual(got, want);
  });

  for (const name of ["mistral_sliding_window", "qwen2_sliding_window"]) {
    test(`${name}: a left-padded cached batch equals each prompt recomputed alone without a cache`, async () => {
      const model = await load(name);
      const rng = new Rng(7);
      const vocab = model.config.vocab_size as number;
      // lengths 2..7 against windows 4 and 3: rows are padded by up to 5 slots, wider than the window
      const prompts = [2, 7, 4].map((n) => prompt(n, vocab, rng));
      const batch = await model.generate(prompts, { maxNewTokens: 9, eosTokenId: [] });
      for (let i = 0; i < prompts.length; i++) {
        const alone = await greedyByRecompute(model, prompts[i], 9);
        assert.deepEqual(batch[i], alone, `row ${i} (prompt length ${prompts[i].length})`);
      }
    });
  }
});

describe("sliding window: prompt-learning rows take slots like tokens", () => {
  // The window (4) is narrower than prompt (3) + input (5): later queries lose the prompt rows.
  test("prompt tuning with the embeddings of tokens p equals the base model on [p; ids], forward and generate", async () => {
    const model = await load("mistral_sliding_window");
    const rng = new Rng(11);
    const vocab = model.config.vocab_size as number;
    const p = prompt(3, vocab, rng);
    const ids = [prompt(5, vocab, rng), prompt(5, vocab, rng)];
    const base = await model.forward({ inputIds: ids.map((r) => [...p, ...r]) });
    const peft = PeftModel.create(model, {
      peftType: "PROMPT_TUNING",
      numVirtualTokens: p.length,
      promptTuningInit: "TEXT",
      promptTuningInitTokenIds: p,
    });
    const out = await peft.forward({ inputIds: ids });
    assert.deepEqual(out.logits?.shape, base.logits?.shape);
    const d = maxAbsDiff(out.logits?.data as Float32Array, base.logits?.data as Float32Array);
    assert.ok(d < 1e-5, `max |diff| ${d}`);
    const got = await peft.generate([ids[0]], { maxNewTokens: 6, eosTokenId: [] });
    const want = await peft.disableAdapter(() => model.generate([[...p, ...ids[0]]], { maxNewTokens: 6, eosTokenId: [] }));
    assert.deepEqual(got[0], want[0].slice(p.length));
  });

  test("prefix tuning holding the keys/values of tokens p equals the base model after p, forward and generate", async () => {
    const model = await load("mistral_sliding_window");
    const rng = new Rng(12);
    const vocab = model.config.vocab_size as number;
    const p = prompt(3, vocab, rng);
    const ids = [prompt(5, vocab, rng), prompt(5, vocab, rng)];
    const base = await model.forward({ inputIds: ids.map((r) => [...p, ...r]) });
    const prefix = flatPrefix(await keyValuesOf(model, p)); // before wrapping: the keys/values of the base model
    const peft = PeftModel.create(model, { peftType: "PREFIX_TUNING", numVirtualTokens: p.length });
    peft.setAdapterTensors("default", new Map([[PROMPT_KEY, prefix]]));
    const out = await peft.forward({ inputIds: ids });
    const d = maxAbsDiff(out.logits?.data as Float32Array, rows(base.logits?.data as Float32Array, 2, 8, vocab, 3, 8));
    assert.ok(d < 1e-5, `max |diff| ${d}`);
    const got = await peft.generate([ids[0]], { maxNewTokens: 6, eosTokenId: [] });
    const want = await peft.disableAdapter(() => model.generate([[...p, ...ids[0]]], { maxNewTokens: 6, eosTokenId: [] }));
    assert.deepEqual(got[0], want[0].slice(p.length));
  });
});
