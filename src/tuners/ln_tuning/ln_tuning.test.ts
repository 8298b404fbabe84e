import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import * as F from "../../engine/trace/composites.js";
import { PeftConfigError } from "../config.js";
import { loadTestModel, runConformance } from "../conformance.js";
import { linearJs, maxDiff, probe, randomTensor } from "../ia3/testing.js";
import { PeftModel } from "../peft-model.js";

const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

describe("LN tuning", () => {
  runConformance({
    name: "LN tuning on llama (PEFT's default norms)",
    model: "llama_basic",
    identityConfig: { peftType: "LN_TUNING" },
    config: { peftType: "LN_TUNING", initLnTuningWeights: false },
  });
  runConformance({
    name: "LN tuning on GPT-2 (ln_1, ln_2, ln_f weights and biases)",
    model: "gpt2",
    identityConfig: { peftType: "LN_TUNING" },
    config: { peftType: "LN_TUNING", initLnTuningWeights: false },
  });
  runConformance({
    name: "LN tuning of linear layers and norms on llama",
    model: "llama_basic",
    identityConfig: { peftType: "LN_TUNING", targetModules: ["o_proj", "up_proj", "norm"] },
    config: { peftType: "LN_TUNING", targetModules: ["o_proj", "up_proj", "norm"], initLnTuningWeights: false },
  });
  runConformance({
    name: "LN tuning of the embeddings on llama (no mixed batches: a per-row table cannot be expressed)",
    model: "llama_basic",
    identityConfig: { peftType: "LN_TUNING", targetModules: ["embed_tokens"] },
    config: { peftType: "LN_TUNING", targetModules: ["embed_tokens"], initLnTuningWeights: false },
    mixedBatch: false,
  });
  runConformance({
    name: "LN tuning on BERT classification with modules_to_save",
    model: "bert_seq_cls",
    config: { peftType: "LN_TUNING", targetModules: ["LayerNorm"], initLnTuningWeights: false, modulesToSave: ["classifier"] },
    mixedBatch: false,
  });

  test("keys are <module>.ln_tuning_layers.<param>, copies of the base; defaults follow PEFT per model type", async () => {
    const model = await loadTestModel("gpt2");
    const t = PeftModel.create(model, { peftType: "LN_TUNING" }).adapter("default").tensors;
    assert.equal(t.size, (2 * 2 + 1) * 2);
    for (const key of [
      "transformer.h.0.ln_1.ln_tuning_layers.weight",
      "transformer.h.1.ln_2.ln_tuning_layers.bias",
      "transformer.ln_f.ln_tuning_layers.weight",
    ]) {
      assert.deepEqual(t.get(key)?.data, model.weights.get(key.replace(".ln_tuning_layers", ""))?.data, key);
    }
    const qwen = PeftModel.create(await loadTestModel("qwen2"), { peftType: "LN_TUNING" }).adapter("default").tensors;
    assert.deepEqual([...qwen.keys()].sort(), [
      "model.layers.0.post_attention_layernorm.ln_tuning_layers.weight",
      "model.layers.1.post_attention_layernorm.ln_tuning_layers.weight",
    ]);
    const llama = PeftModel.create(await loadTestModel("llama_basic"), { peftType: "LN_TUNING" }).adapter("default").tensors;
    assert.ok(llama.has("model.norm.ln_tuning_layers.weight"));
    assert.equal(llama.size, 5);
    const bert = await loadTestModel("bert_seq_cls");
    assert.throws(
      () => PeftModel.create(bert, { peftType: "LN_TUNING" }),
      (e: Error) => e instanceof PeftConfigError && /target_modules is required/.test(e.message),
    );
    await model.release();
  });

  test("the copies are used in place of the base: RMSNorm with w', a linear layer with W' and b'", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "LN_TUNING", initLnTuningWeights: false }, { seed: 41 });
    const w = f32(peft.adapter("default").tensors.get("model.layers.1.input_layernorm.ln_tuning_layers.weight"));
    const h = randomTensor([2, 3, 32]);
    const hd = h.data as Float32Array;
    const want: number[] = [];
    for (let r = 0; r < 6; r++) {
      const row = hd.subarray(r * 32, (r + 1) * 32);
      const rms = Math.sqrt(row.reduce((a, b) => a + b * b, 0) / 32 + 1e-6);
      for (let i = 0; i < 32; i++) want.push((row[i] / rms) * w[i]);
    }
    const got = probe(peft, "default", (ctx, x) => F.rmsNorm(x, ctx.weight("model.layers.1.input_layernorm.weight"), 1e-6), h);
    assert.ok(maxDiff(got, want) < 1e-5, `${maxDiff(got, want)}`);
    const mixed = probe(peft, "default", (ctx, x) => F.rmsNorm(x, ctx.weight("model.layers.1.input_layernorm.weight"), 1e-6), h, [0, 1]);
    assert.ok(maxDiff(mixed.subarray(96), want.slice(96)) < 1e-5);
    const g0 = f32(model.weights.get("model.layers.1.input_layernorm.weight"));
    const base0 = want.slice(0, 96).map((v, k) => (v / w[k % 32]) * g0[k % 32]);
    assert.ok(maxDiff(mixed.subarray(0, 96), base0) < 1e-5);
    await model.release();

    const gpt2 = await loadTestModel("gpt2");
    const path = "transformer.h.0.mlp.c_fc";
    const p2 = PeftModel.create(gpt2, { peftType: "LN_TUNING", targetModules: ["c_fc"], initLnTuningWeights: false }, { seed: 42 });
    const t = p2.adapter("default").tensors;
    const wt = t.get(`${path}.ln_tuning_layers.weight`) as HostTensor;
    const x = randomTensor([2, 32]);
    const lin = linearJs(x.data as Float32Array, 2, wt, t.get(`${path}.ln_tuning_layers.bias`) as HostTensor, true);
    const out = probe(p2, "default", (ctx, xt) => ctx.linear(path, xt, { fanInFanOut: true }), x);
    assert.ok(maxDiff(out, lin) < 1e-5, `${maxDiff(out, lin)}`);
    await gpt2.release();
  });

  test("merging copies the tuned parameters in; unmerging restores the base", async () => {
    const model = await loadTestModel("gpt2");
    const orig = new Map([...model.weights].map(([k, v]) => [k, f32(v)]));
    const peft = PeftModel.create(model, { peftType: "LN_TUNING", initLnTuningWeights: false }, { seed: 43 });
    const t = peft.adapter("default").tensors;
    peft.mergeAdapter();
    for (const [k, v] of model.weights) {
      const key = k.replace(/\.(weight|bias)$/, ".ln_tuning_layers.$1");
      if (t.has(key)) assert.deepEqual(f32(v), f32(t.get(key)), k);
      else assert.equal(f32(v), orig.get(k), k);
    }
    peft.unmergeAdapter();
    for (const [k, v] of model.weights) assert.equal(f32(v), orig.get(k), k);
    await model.release();
  });

  test("config: PEFT's fields; the peftkit-only init field is written only when false", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "LN_TUNING", excludeModules: ["norm"] });
    const a = peft.adapter("default");
    assert.equal(a.tensors.size, 4);
    const json = a.tuner.toJson(a.config);
    assert.deepEqual(Object.keys(json).sort(), [
      "auto_mapping",
      "base_model_name_or_path",
      "exclude_modules",
      "inference_mode",
      "modules_to_save",
      "peft_type",
      "peft_version",
      "revision",
      "target_modules",
      "task_type",
    ]);
    const b = peft.addAdapter("b", { peftType: "LN_TUNING", initLnTuningWeights: false });
    assert.ok(!("init_ln_tuning_weights" in b.tuner.toJson(b.config)), "peftkit's init knob is not a PEFT field");
    await model.release();
  });
});
