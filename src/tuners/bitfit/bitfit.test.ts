import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import * as F from "../../engine/trace/composites.js";
import { PeftConfigError } from "../config.js";
import { loadTestModel, randomIds, runConformance } from "../conformance.js";
import { linearJs, maxDiff, probe, randomTensor } from "../ia3/testing.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";

const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

describe("BitFit", () => {
  runConformance({
    name: "BitFit on qwen2 (the q/k/v biases of a llama-family model)",
    model: "qwen2",
    identityConfig: { peftType: "BITFIT" },
    config: { peftType: "BITFIT", initBitfitWeights: false },
  });
  runConformance({
    name: "BitFit on GPT-2: linear and LayerNorm biases",
    model: "gpt2",
    identityConfig: { peftType: "BITFIT", targetModules: ["ln_1", "ln_2", "ln_f", "c_attn", "c_fc", "c_proj"] },
    config: { peftType: "BITFIT", targetModules: ["ln_1", "ln_2", "ln_f", "c_attn", "c_fc", "c_proj"], initBitfitWeights: false },
  });
  runConformance({
    name: "BitFit on BERT classification with modules_to_save",
    model: "bert_seq_cls",
    // Not "key": a bias on the keys adds the same score to every key, so its gradient is exactly zero.
    config: { peftType: "BITFIT", targetModules: ["query", "value", "dense"], initBitfitWeights: false, modulesToSave: ["classifier"] },
    mixedBatch: false,
  });

  test("keys are <module>.bias copies of the base biases; heads and bias-less layers are left out", async () => {
    const model = await loadTestModel("qwen2");
    const t = PeftModel.create(model, { peftType: "BITFIT" }).adapter("default").tensors;
    assert.deepEqual(
      [...t.keys()].sort(),
      [0, 1].flatMap((i) => ["k_proj", "q_proj", "v_proj"].map((p) => `model.layers.${i}.self_attn.${p}.bias`)),
    );
    for (const [k, v] of t) assert.deepEqual(v.data, model.weights.get(k)?.data, k);
    const gpt2 = PeftModel.create(await loadTestModel("gpt2"), { peftType: "BITFIT" }).adapter("default").tensors;
    assert.equal(gpt2.size, 4 * 2);
    assert.ok(!gpt2.has("transformer.h.0.ln_1.bias"));
    const llama = await loadTestModel("llama_basic");
    assert.throws(
      () => PeftModel.create(llama, { peftType: "BITFIT" }),
      (e: Error) => e instanceof PeftConfigError && /no bias terms/.test(e.message),
    );
    await model.release();
  });

  test("a layer computes W·x + b' (and LayerNorm uses β'), per row in mixed batches", async () => {
    const model = await loadTestModel("gpt2");
    const cfg = { peftType: "BITFIT", targetModules: ["ln_2", "c_fc"], initBitfitWeights: false };
    const peft = PeftModel.create(model, cfg, { seed: 31 });
    const t = peft.adapter("default").tensors;
    const path = "transformer.h.0.mlp.c_fc";
    const w = model.weights.get(`${path}.weight`) as HostTensor;
    const [inF, out] = w.shape;
    const x = randomTensor([2, inF]);
    const want = linearJs(x.data as Float32Array, 2, w, t.get(`${path}.bias`) as HostTensor, true);
    const base = linearJs(x.data as Float32Array, 2, w, model.weights.get(`${path}.bias`) as HostTensor, true);
    assert.ok(
      maxDiff(
        probe(peft, "default", (ctx, xt) => ctx.linear(path, xt, { fanInFanOut: true }), x),
        want,
      ) < 1e-5,
    );
    const mixed = probe(peft, "default", (ctx, xt) => ctx.linear(path, xt, { fanInFanOut: true }), x, [0, 1]);
    assert.ok(maxDiff(mixed.subarray(0, out), base.subarray(0, out)) < 1e-5);
    assert.ok(maxDiff(mixed.subarray(out), want.subarray(out)) < 1e-5);

    // LayerNorm: γ·(x − μ)/σ + β' with the adapter's β'.
    const ln = "transformer.h.1.ln_2";
    const g = f32(model.weights.get(`${ln}.weight`));
    const beta = f32(t.get(`${ln}.bias`));
    const h = randomTensor([1, 3, 32]);
    const hd = h.data as Float32Array;
    const lnWant: number[] = [];
    for (let r = 0; r < 3; r++) {
      const row = hd.subarray(r * 32, (r + 1) * 32);
      const mu = row.reduce((a, b) => a + b, 0) / 32;
      const v = row.reduce((a, b) => a + (b - mu) ** 2, 0) / 32;
      for (let i = 0; i < 32; i++) lnWant.push(((row[i] - mu) / Math.sqrt(v + 1e-5)) * g[i] + beta[i]);
    }
    const lnGot = probe(peft, "default", (ctx, xt) => F.layerNorm(xt, ctx.weight(`${ln}.weight`), ctx.weight(`${ln}.bias`), 1e-5), h);
    assert.ok(maxDiff(lnGot, lnWant) < 1e-5, `${maxDiff(lnGot, lnWant)}`);
    await model.release();
  });

  test("after a training step only biases differ; merging copies them into the base", async () => {
    const model = await loadTestModel("gpt2");
    const orig = new Map([...model.weights].map(([k, v]) => [k, Float32Array.from(f32(v))]));
    const peft = PeftModel.create(model, { peftType: "BITFIT", targetModules: ["ln_1", "c_attn", "c_proj"] });
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
    const ids = randomIds(2, 6, 256);
    await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-2 });
    await trainer.release();
    const t = peft.adapter("default").tensors;
    for (const [k, v] of t) {
      assert.ok(k.endsWith(".bias"), k);
      assert.ok(maxDiff(f32(v), orig.get(k) as Float32Array) > 0, `${k} did not train`);
    }
    peft.mergeAdapter();
    for (const [k, v] of model.weights) {
      if (t.has(k)) assert.deepEqual(f32(v), f32(t.get(k)), k);
      else assert.deepEqual(f32(v), orig.get(k), `${k} changed`);
    }
    const changed = [...model.weights].filter(([k, v]) => maxDiff(f32(v), orig.get(k) as Float32Array) > 0).map(([k]) => k);
    assert.ok(changed.length > 0 && changed.every((k) => k.endsWith(".bias")));
    await model.release();
  });

  test("config: fields and defaults", async () => {
    const model = await loadTestModel("gpt2");
    const peft = PeftModel.create(model, { peftType: "BITFIT", targetModules: ["c_attn"], layersToTransform: 1 });
    const a = peft.adapter("default");
    assert.deepEqual([...a.tensors.keys()], ["transformer.h.1.attn.c_attn.bias"]);
    const json = a.tuner.toJson(a.config);
    assert.equal(json.peft_type, "BITFIT");
    assert.equal(json.init_bitfit_weights, true);
    assert.equal(json.layers_to_transform, 1);
    await model.release();
  });
});
