import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import { PeftConfigError } from "../config.js";
import { loadTestModel, runConformance } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import { linearJs, maxDiff, probe, randomTensor } from "./testing.js";

const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

describe("IA3", () => {
  runConformance({
    name: "IA3 on llama (k,v,down defaults)",
    model: "llama_basic",
    identityConfig: { peftType: "IA3" },
    config: { peftType: "IA3", initIa3Weights: false },
  });
  runConformance({
    name: "IA3 on GPT-2 Conv1D (c_attn, feed-forward mlp.c_proj)",
    model: "gpt2",
    identityConfig: { peftType: "IA3", fanInFanOut: true },
    config: { peftType: "IA3", fanInFanOut: true, initIa3Weights: false },
  });
  runConformance({
    name: "IA3 on BERT classification with modules_to_save",
    model: "bert_seq_cls",
    config: { peftType: "IA3", taskType: "SEQ_CLS", initIa3Weights: false, modulesToSave: ["classifier"] },
    mixedBatch: false,
  });

  test("keys and shapes follow PEFT: <module>.ia3_l, [out, 1] for outputs, [1, in] for feed-forward inputs", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "IA3" });
    const t = peft.adapter("default").tensors;
    assert.deepEqual([...t.keys()].sort(), [
      "model.layers.0.mlp.down_proj.ia3_l",
      "model.layers.0.self_attn.k_proj.ia3_l",
      "model.layers.0.self_attn.v_proj.ia3_l",
      "model.layers.1.mlp.down_proj.ia3_l",
      "model.layers.1.self_attn.k_proj.ia3_l",
      "model.layers.1.self_attn.v_proj.ia3_l",
    ]);
    assert.deepEqual(t.get("model.layers.0.self_attn.k_proj.ia3_l")?.shape, [32, 1]);
    assert.deepEqual(t.get("model.layers.0.mlp.down_proj.ia3_l")?.shape, [1, 64]);
    for (const v of t.values()) assert.ok(f32(v).every((x) => x === 1));
    const bert = PeftModel.create(await loadTestModel("bert_seq_cls"), { peftType: "IA3" });
    // PEFT matches "output.dense" as a suffix, so the attention output projection is feed-forward too.
    const bt = bert.adapter("default").tensors;
    assert.deepEqual(bt.get("bert.encoder.layer.0.attention.output.dense.ia3_l")?.shape, [1, 32]);
    assert.deepEqual(bt.get("bert.encoder.layer.0.output.dense.ia3_l")?.shape, [1, 64]);
    assert.deepEqual(bt.get("bert.encoder.layer.0.attention.self.key.ia3_l")?.shape, [32, 1]);
    await model.release();
  });

  test("a layer computes (W·x)⊙l on outputs and W·(x⊙l) on feed-forward inputs, per row in mixed batches", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "IA3", initIa3Weights: false }, { seed: 11 });
    const t = peft.adapter("default").tensors;
    for (const [path, ff] of [
      ["model.layers.1.self_attn.v_proj", false],
      ["model.layers.0.mlp.down_proj", true],
    ] as const) {
      const w = model.weights.get(`${path}.weight`) as HostTensor;
      const [out, inF] = w.shape;
      const l = f32(t.get(`${path}.ia3_l`));
      const x = randomTensor([2, inF]);
      const xd = x.data as Float32Array;
      const scaledX = ff ? Float32Array.from(xd, (v, k) => v * l[k % inF]) : xd;
      let want = linearJs(scaledX, 2, w, null, false);
      if (!ff) want = want.map((v, k) => v * l[k % out]);
      const got = probe(peft, "default", (ctx, xt) => ctx.linear(path, xt), x);
      assert.ok(maxDiff(got, want) < 1e-5, `${path}: ${maxDiff(got, want)}`);
      const base = linearJs(xd, 2, w, null, false);
      const mixed = probe(peft, "default", (ctx, xt) => ctx.linear(path, xt), x, [0, 1]);
      assert.ok(maxDiff(mixed.subarray(0, out), base.subarray(0, out)) < 1e-5, `${path} base row`);
      assert.ok(maxDiff(mixed.subarray(out), want.subarray(out)) < 1e-5, `${path} adapter row`);
    }
    await model.release();
  });

  test("GPT-2 Conv1D: c_attn output and bias are scaled, mlp.c_proj input is scaled", async () => {
    const model = await loadTestModel("gpt2");
    const peft = PeftModel.create(model, { peftType: "IA3", fanInFanOut: true, initIa3Weights: false }, { seed: 12 });
    const t = peft.adapter("default").tensors;
    for (const [path, ff] of [
      ["transformer.h.0.attn.c_attn", false],
      ["transformer.h.1.mlp.c_proj", true],
    ] as const) {
      const w = model.weights.get(`${path}.weight`) as HostTensor;
      const b = model.weights.get(`${path}.bias`) as HostTensor;
      const [inF, out] = w.shape;
      const l = f32(t.get(`${path}.ia3_l`));
      assert.deepEqual(t.get(`${path}.ia3_l`)?.shape, ff ? [1, inF] : [out, 1]);
      const x = randomTensor([3, inF]);
      const xd = x.data as Float32Array;
      let want = linearJs(ff ? Float32Array.from(xd, (v, k) => v * l[k % inF]) : xd, 3, w, b, true);
      if (!ff) want = want.map((v, k) => v * l[k % out]);
      const got = probe(peft, "default", (ctx, xt) => ctx.linear(path, xt, { fanInFanOut: true }), x);
      assert.ok(maxDiff(got, want) < 1e-5, `${path}: ${maxDiff(got, want)}`);

      // Merged: W ⊙ l on the matching axis of the [in, out] layout; bias scaled only for outputs.
      const merged = ia3Merged(peft, path);
      const wm = f32(merged?.get(`${path}.weight`));
      for (let i = 0; i < inF; i++)
        for (let o = 0; o < out; o++) {
          const want1 = f32(w)[i * out + o] * (ff ? l[i] : l[o]);
          assert.ok(Math.abs(wm[i * out + o] - want1) < 1e-6, `${path} W[${i},${o}]`);
        }
      const bm = merged?.get(`${path}.bias`);
      if (ff) assert.equal(bm, undefined);
      else
        assert.ok(
          maxDiff(
            f32(bm),
            Float32Array.from(f32(b), (v, o) => v * l[o]),
          ) < 1e-6,
        );
    }
    await model.release();
  });

  test("merging into llama gives W ⊙ l (rows for k/v, columns for down_proj) and unmerging restores W", async () => {
    const model = await loadTestModel("llama_basic");
    const orig = new Map([...model.weights].map(([k, v]) => [k, Float32Array.from(f32(v))]));
    const peft = PeftModel.create(model, { peftType: "IA3", initIa3Weights: false }, { seed: 13 });
    const t = peft.adapter("default").tensors;
    peft.mergeAdapter();
    for (const [path, ff] of [
      ["model.layers.0.self_attn.k_proj", false],
      ["model.layers.1.mlp.down_proj", true],
    ] as const) {
      const w = orig.get(`${path}.weight`) as Float32Array;
      const [out, inF] = (model.weights.get(`${path}.weight`) as HostTensor).shape;
      const l = f32(t.get(`${path}.ia3_l`));
      const want = Float32Array.from(w, (v, k) => v * (ff ? l[k % inF] : l[Math.floor(k / inF)]));
      assert.equal(want.length, out * inF);
      assert.ok(maxDiff(f32(model.weights.get(`${path}.weight`)), want) < 1e-7, path);
    }
    assert.deepEqual(f32(model.weights.get("model.layers.0.self_attn.q_proj.weight")), orig.get("model.layers.0.self_attn.q_proj.weight"));
    peft.unmergeAdapter();
    for (const [k, v] of model.weights) assert.deepEqual(f32(v), orig.get(k), k);
    await model.release();
  });

  test("config: PEFT's fields and defaults; feed-forward modules must be among the targets", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "IA3", targetModules: ["k_proj"] });
    const json = peft.adapter("default").tuner.toJson(peft.adapter("default").config);
    for (const k of ["target_modules", "exclude_modules", "feedforward_modules", "fan_in_fan_out", "modules_to_save", "init_ia3_weights"])
      assert.ok(k in json, k);
    assert.equal(json.init_ia3_weights, true);
    assert.equal(json.fan_in_fan_out, false);
    // k_proj alone is not feed-forward (the default feed-forward list names down_proj only).
    assert.deepEqual(peft.adapter("default").tensors.get("model.layers.0.self_attn.k_proj.ia3_l")?.shape, [32, 1]);
    assert.throws(
      () => peft.addAdapter("bad", { peftType: "IA3", targetModules: ["k_proj"], feedforwardModules: ["down_proj"] }),
      (e: Error) => e instanceof PeftConfigError && /subset of target_modules/.test(e.message),
    );
    assert.throws(() => peft.addAdapter("bad2", { peftType: "IA3", feedforwardModules: "(" }), PeftConfigError);
    const regex = peft.addAdapter("re", { peftType: "IA3", targetModules: ".*\\.(v_proj|up_proj)", feedforwardModules: ".*up_proj" });
    assert.deepEqual(regex.tensors.get("model.layers.1.mlp.up_proj.ia3_l")?.shape, [1, 32]);
    assert.deepEqual(regex.tensors.get("model.layers.1.self_attn.v_proj.ia3_l")?.shape, [32, 1]);
    await model.release();
  });
});

function ia3Merged(peft: PeftModel, path: string): Map<string, HostTensor> {
  const a = peft.adapter("default");
  const all = a.tuner.merge?.(peft.info, a.config, a.tensors) as Map<string, HostTensor>;
  return new Map([...all].filter(([k]) => k.startsWith(`${path}.`)));
}
