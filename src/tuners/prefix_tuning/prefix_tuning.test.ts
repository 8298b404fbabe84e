import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { readSafetensors } from "../../io/safetensors.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS } from "../format.js";
import { PeftModel } from "../peft-model.js";
import { PROMPT_KEY } from "../prompt_tuning/index.js";
import { adapterGradCheck, flatPrefix, keyValuesOf, rows, trainOneStep } from "../prompt_tuning/testing.js";
import { EMBEDDING, projectPrefix } from "./index.js";

const vocabOf = (m: { config: Record<string, unknown> }) => m.config.vocab_size as number;

describe("prefix tuning", () => {
  for (const name of ["llama_gqa_tied", "gpt2"] as const) {
    test(`${name}: a prefix holding real tokens' keys/values equals running the base model after those tokens`, async () => {
      const model = await loadTestModel(name);
      const n = 3;
      const p = randomIds(1, n, vocabOf(model))[0];
      const ids = randomIds(2, 4, vocabOf(model));
      const v = vocabOf(model);
      const base = await model.forward({ inputIds: ids.map((r) => [...p, ...r]) });
      const prefix = flatPrefix(await keyValuesOf(model, p));
      const peft = PeftModel.create(model, { peftType: "PREFIX_TUNING", numVirtualTokens: n });
      peft.setAdapterTensors("default", new Map([[PROMPT_KEY, prefix]]));
      const out = await peft.forward({ inputIds: ids });
      assert.deepEqual(out.logits?.shape, [2, 4, v]);
      const want = rows(base.logits?.data as Float32Array, 2, n + 4, v, n, n + 4);
      const d = maxAbsDiff(out.logits?.data as Float32Array, want);
      assert.ok(d < 1e-4, `max |diff| ${d}`);
      // Cached decoding sees the prefix too, with positions shifted by n.
      const gen = await peft.generate([ids[0]], { maxNewTokens: 4, eosTokenId: -1 });
      const wantGen = await peft.disableAdapter(() => model.generate([[...p, ...ids[0]]], { maxNewTokens: 4, eosTokenId: -1 }));
      assert.deepEqual(gen[0].slice(4), wantGen[0].slice(n + 4));
      await model.release();
    });
  }

  test("GQA: the prefix has the key/value heads and token_dim = head_dim · kv_heads (PEFT #1901)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "peftkit-prefix-"));
    try {
      const model = await loadTestModel("llama_gqa_tied");
      const peft = PeftModel.create(model, { peftType: "PREFIX_TUNING", numVirtualTokens: 5, taskType: "CAUSAL_LM" });
      assert.deepEqual([...(peft.adapter("default").tensors.get(PROMPT_KEY)?.shape ?? [])], [5, 2 * 2 * 16 * 2]);
      peft.savePretrained(dir);
      const cfg = JSON.parse(readFileSync(join(dir, ADAPTER_CONFIG), "utf8"));
      for (const [k, val] of Object.entries({
        peft_type: "PREFIX_TUNING",
        num_virtual_tokens: 5,
        token_dim: 32,
        num_attention_heads: 2,
        num_layers: 2,
        num_transformer_submodules: 1,
        encoder_hidden_size: 32,
        prefix_projection: false,
        init_weights: null,
      }))
        assert.deepEqual(cfg[k], val, k);
      await model.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("prefix_projection: trains embedding + MLP, saves the MLP output as prompt_embeddings (as PEFT), which loads for inference", async () => {
    const dir = mkdtempSync(join(tmpdir(), "peftkit-prefix-"));
    try {
      const model = await loadTestModel("gpt2");
      const peft = PeftModel.create(
        model,
        { peftType: "PREFIX_TUNING", numVirtualTokens: 3, prefixProjection: true, encoderHiddenSize: 8 },
        { seed: 2 },
      );
      const t = peft.adapter("default").tensors;
      assert.deepEqual([...t.keys()].sort(), [
        EMBEDDING,
        "transform.0.bias",
        "transform.0.weight",
        "transform.2.bias",
        "transform.2.weight",
      ]);
      assert.deepEqual([...(t.get("transform.2.weight")?.shape ?? [])], [2 * 2 * 32, 8]);
      const ids = randomIds(2, 5, vocabOf(model));
      const before = await peft.forward({ inputIds: ids });
      peft.savePretrained(dir);
      const file = readSafetensors(join(dir, ADAPTER_WEIGHTS));
      assert.deepEqual(Object.keys(file.tensors), [PROMPT_KEY]);
      assert.deepEqual(file.tensors[PROMPT_KEY].data, projectPrefix(t).data);
      const fresh = await loadTestModel("gpt2");
      const loaded = PeftModel.fromPretrained(fresh, dir);
      assert.equal(loaded.adapter("default").config.inferenceMode, true);
      const after = await loaded.forward({ inputIds: ids });
      const d = maxAbsDiff(after.logits?.data as Float32Array, before.logits?.data as Float32Array);
      assert.ok(d < 1e-5, `max |diff| ${d}`);
      await trainOneStep(peft, randomIds(2, 4, vocabOf(model)));
      adapterGradCheck(peft, randomIds(1, 3, vocabOf(model)), 4);
      await model.release();
      await fresh.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("init_weights zero gives a zero prefix; config errors name the problem", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "PREFIX_TUNING", numVirtualTokens: 2, initWeights: "zero" });
    assert.ok((peft.adapter("default").tensors.get(PROMPT_KEY) as { data: Float32Array }).data.every((x) => x === 0));
    assert.throws(() => peft.addAdapter("x", { peftType: "PREFIX_TUNING", numVirtualTokens: 2, numLayers: 5 }), /5 layers/);
    assert.throws(() => peft.addAdapter("y", { peftType: "PREFIX_TUNING", numVirtualTokens: 2, initWeights: "one" }), /init_weights/);
    await model.release();
  });

  runConformance({
    name: "prefix tuning on llama GQA",
    model: "llama_gqa_tied",
    config: { peftType: "PREFIX_TUNING", numVirtualTokens: 4 },
    mergeable: false,
    mixedBatch: false,
  });
  runConformance({
    name: "prefix tuning on GPT-2",
    model: "gpt2",
    config: { peftType: "PREFIX_TUNING", numVirtualTokens: 3 },
    mergeable: false,
    mixedBatch: false,
  });
  runConformance({
    name: "prefix tuning on RoBERTa classification",
    model: "roberta_seq_cls",
    config: { peftType: "PREFIX_TUNING", taskType: "SEQ_CLS", numVirtualTokens: 3 },
    mergeable: false,
    mixedBatch: false,
  });
});
