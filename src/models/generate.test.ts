import assert from "node:assert/strict";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { readSafetensors } from "../io/safetensors.js";
import { greedyByRecompute } from "../testing/greedy.js";
import { GOLDEN_MODELS } from "../testing/paths.js";
import { Rng } from "../util/rng.js";
import { AutoModelForCausalLM } from "./auto.js";
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

const promptRng = new Rng(20261129);
function randomPrompt(len: number, vocab: number): number[] {
  return Array.from({ length: len }, () => Math.floor(promptRng.next() * vocab));
}

describe("generation with a KV cache", () => {
  test("llama_gqa_tied: greedy generation equals the PyTorch golden", async () => {
    const model = await load("llama_gqa_tied");
    const g = readSafetensors(join(GOLDEN_MODELS, "llama_gqa_tied", "golden.safetensors")).tensors;
    const prompt = Array.from(g.generate_input_ids.data as BigInt64Array, Number);
    const want = Array.from(g.generate_output_ids.data as BigInt64Array, Number);
    const [got] = await model.generate([prompt], { maxNewTokens: want.length - prompt.length, eosTokenId: [] });
    assert.deepEqual(got, want);
  });

  for (const name of ["llama_basic", "llama_gqa_tied", "qwen2", "gpt2"]) {
    test(`${name}: cached greedy decoding equals step-by-step full recomputation`, async () => {
      const model = await load(name);
      const vocab = (model.config.vocab_size as number) ?? 100;
      const prompt = randomPrompt(3 + Math.floor(Math.random() * 5), vocab);
      const [cached] = await model.generate([prompt], { maxNewTokens: 8, eosTokenId: [] });
      const full = await greedyByRecompute(model, prompt, 8);
      assert.deepEqual(cached, full);
    });
  }

  test("a left-padded batch generates what each prompt generates alone", async () => {
    const model = await load("llama_basic");
    const prompts = [randomPrompt(2, 200), randomPrompt(7, 200), randomPrompt(4, 200)];
    const batch = await model.generate(prompts, { maxNewTokens: 6, eosTokenId: [] });
    for (let i = 0; i < prompts.length; i++) {
      const [alone] = await model.generate([prompts[i]], { maxNewTokens: 6, eosTokenId: [] });
      assert.deepEqual(batch[i], alone, `row ${i}`);
    }
  });

  test("left-padded forward logits equal unpadded single runs at real positions", async () => {
    const model = await load("llama_gqa_tied");
    const short = randomPrompt(3, 200);
    const long = randomPrompt(6, 200);
    const pad = 0;
    const ids = [[pad, pad, pad, ...short], long];
    const mask = [
      [0, 0, 0, 1, 1, 1],
      [1, 1, 1, 1, 1, 1],
    ];
    const positions = [
      [1, 1, 1, 0, 1, 2],
      [0, 1, 2, 3, 4, 5],
    ];
    const { logits: batched } = await model.forward({ inputIds: ids, attentionMask: mask, positionIds: positions });
    const { logits: alone } = await model.forward({ inputIds: [short] });
    assert.ok(batched && alone);
    const v = alone.shape[2];
    for (let t = 0; t < 3; t++) {
      for (let j = 0; j < v; j++) {
        const a = batched.data[(3 + t) * v + j];
        const b = alone.data[t * v + j];
        assert.ok(Math.abs(a - b) < 1e-4, `position ${t} vocab ${j}: ${a} vs ${b}`);
      }
    }
  });

  test("sampling is deterministic under a seed and differs across seeds", async () => {
    const model = await load("llama_basic");
    const prompt = randomPrompt(4, 200);
    const opts = { maxNewTokens: 12, temperature: 1.5, topK: 50, topP: 0.95, eosTokenId: [] as number[] };
    const a = await model.generate([prompt], { ...opts, seed: 1 });
    const b = await model.generate([prompt], { ...opts, seed: 1 });
    const c = await model.generate([prompt], { ...opts, seed: 2 });
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
  });

  test("generation stops at eos and at stop sequences", async () => {
    const model = await load("llama_basic");
    const prompt = randomPrompt(4, 200);
    const [free] = await model.generate([prompt], { maxNewTokens: 6, eosTokenId: [] });
    const firstNew = free[prompt.length];
    const [eos] = await model.generate([prompt], { maxNewTokens: 6, eosTokenId: firstNew });
    assert.deepEqual(eos, [...prompt, firstNew]);
    const [stopped] = await model.generate([prompt], {
      maxNewTokens: 6,
      eosTokenId: [],
      stop: [free.slice(prompt.length, prompt.length + 2)],
    });
    assert.deepEqual(stopped, free.slice(0, prompt.length + 2));
    // A stop sequence that spans the end of the prompt (its last token, then the first new one)
    // must not match: only new tokens count.
    const span = [prompt[prompt.length - 1], firstNew];
    const [across] = await model.generate([prompt], { maxNewTokens: 6, eosTokenId: [], stop: [span] });
    const fresh = free.slice(prompt.length);
    const at = fresh.findIndex((t, i) => i > 0 && t === span[1] && fresh[i - 1] === span[0]);
    assert.deepEqual(across, free.slice(0, prompt.length + (at < 0 ? 6 : at + 1)));
  });
});
