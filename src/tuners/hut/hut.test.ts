import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { grad } from "../../engine/autodiff/grad.js";
import { interpret } from "../../engine/exec/reference/interpreter.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { trace } from "../../engine/trace/trace.js";
import { WeightContext } from "../../nn/context.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { maxDiff, probe, randomTensor } from "../ia3/testing.js";
import { PeftModel } from "../peft-model.js";
import { hutLayers } from "./index.js";

const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

/** W' = W ⊙ (1 + s·B·A) as a logical [out, in] f64 array, from W in its stored layout. */
function closedForm(w: HostTensor, a: Float32Array, b: Float32Array, r: number, s: number, fif: boolean): Float64Array {
  const [d0, d1] = w.shape;
  const [inF, out] = fif ? [d0, d1] : [d1, d0];
  const wd = f32(w);
  const res = new Float64Array(out * inF);
  for (let o = 0; o < out; o++)
    for (let i = 0; i < inF; i++) {
      let ba = 0;
      for (let j = 0; j < r; j++) ba += b[o * r + j] * a[j * inF + i];
      res[o * inF + i] = wd[fif ? i * out + o : o * inF + i] * (1 + s * ba);
    }
  return res;
}

describe("HUT", () => {
  runConformance({
    name: "HUT on llama (q_proj, v_proj by default)",
    model: "llama_basic",
    identityConfig: { peftType: "HUT" },
    config: { peftType: "HUT", initHutWeights: false },
  });
  runConformance({
    name: "HUT on GPT-2 Conv1D (all-linear, r = 4, α = 2)",
    model: "gpt2",
    identityConfig: { peftType: "HUT", targetModules: "all-linear" },
    config: { peftType: "HUT", targetModules: "all-linear", r: 4, hutAlpha: 2, initHutWeights: false },
  });
  runConformance({
    name: "HUT on BERT classification with modules_to_save",
    model: "bert_seq_cls",
    config: { peftType: "HUT", targetModules: ["query", "value"], initHutWeights: false, modulesToSave: ["classifier"] },
    mixedBatch: false,
  });

  test("keys <module>.hut_A.weight [r, in] / hut_B.weight [out, r]; init B = 0 so W' = W exactly", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "HUT", r: 4 });
    const t = peft.adapter("default").tensors;
    assert.deepEqual([...t.keys()].filter((k) => k.startsWith("model.layers.0.")).sort(), [
      "model.layers.0.self_attn.q_proj.hut_A.weight",
      "model.layers.0.self_attn.q_proj.hut_B.weight",
      "model.layers.0.self_attn.v_proj.hut_A.weight",
      "model.layers.0.self_attn.v_proj.hut_B.weight",
    ]);
    assert.deepEqual(t.get("model.layers.0.self_attn.q_proj.hut_A.weight")?.shape, [4, 32]);
    assert.deepEqual(t.get("model.layers.0.self_attn.v_proj.hut_B.weight")?.shape, [32, 4]);
    for (const [k, v] of t)
      if (k.endsWith("hut_B.weight"))
        assert.ok(
          f32(v).every((x) => x === 0),
          k,
        );
    // The merged weight at init is W bit for bit.
    const before = f32(model.weights.get("model.layers.1.self_attn.q_proj.weight"));
    peft.mergeAdapter();
    assert.deepEqual(f32(model.weights.get("model.layers.1.self_attn.q_proj.weight")), before);
    await model.release();
  });

  test("a layer computes x·(W ⊙ (1 + s·B·A))ᵀ, and only on its rows in mixed batches", async () => {
    for (const [name, path] of [
      ["gpt2", "transformer.h.0.attn.c_attn"],
      ["llama_basic", "model.layers.1.self_attn.v_proj"],
    ] as const) {
      const model = await loadTestModel(name);
      const cfg = { peftType: "HUT", targetModules: "all-linear", r: 3, hutAlpha: 6, initHutWeights: false };
      const peft = PeftModel.create(model, cfg, { seed: 31 });
      const t = peft.adapter("default").tensors;
      const fif = peft.info.fanInFanOut;
      const w = model.weights.get(`${path}.weight`) as HostTensor;
      const b = model.weights.get(`${path}.bias`) ?? null;
      const [inF, out] = fif ? w.shape : [w.shape[1], w.shape[0]];
      const wp = closedForm(w, f32(t.get(`${path}.hut_A.weight`)), f32(t.get(`${path}.hut_B.weight`)), 3, 2, fif);
      const x = randomTensor([2, inF]);
      const xd = f32(x);
      const want = new Float64Array(2 * out);
      for (let r = 0; r < 2; r++)
        for (let o = 0; o < out; o++) {
          let s = b ? f32(b)[o] : 0;
          for (let i = 0; i < inF; i++) s += xd[r * inF + i] * wp[o * inF + i];
          want[r * out + o] = s;
        }
      const got = probe(peft, "default", (ctx, xt) => ctx.linear(path, xt, { fanInFanOut: fif }), x);
      assert.ok(maxDiff(got, want) < 1e-5, `${name}: ${maxDiff(got, want)}`);
      // Merging writes the same W' (stored layout).
      peft.mergeAdapter();
      const merged = f32(model.weights.get(`${path}.weight`));
      let worst = 0;
      for (let o = 0; o < out; o++)
        for (let i = 0; i < inF; i++) worst = Math.max(worst, Math.abs(merged[fif ? i * out + o : o * inF + i] - wp[o * inF + i]));
      assert.ok(worst < 1e-6, `${name} merged: ${worst}`);
      peft.unmergeAdapter();
      const mixed = probe(peft, "default", (ctx, xt) => ctx.linear(path, xt, { fanInFanOut: fif }), x, [0, 1]);
      assert.ok(maxDiff(mixed.subarray(out), want.subarray(out)) < 1e-5, `${name} adapter row`);
      await model.release();
    }
  });

  test("after one SGD step from B = 0: ∇B = s·(G ⊙ W)·Aᵀ, ∇A = 0, and W' = W ⊙ (1 + s·B₁·A₁)", async () => {
    // One layer, loss L = Σ c ⊙ y, so G = ∂L/∂W' = cᵀ·x (logical [out, in]) in closed form.
    const model = await loadTestModel("llama_basic");
    const path = "model.layers.0.self_attn.q_proj";
    const peft = PeftModel.create(model, { peftType: "HUT", r: 2, hutAlpha: 3 }, { seed: 32 });
    const l = hutLayers(peft.info, peft.adapter("default").config as never).find((x) => x.path === path);
    assert.ok(l);
    const { inFeatures: inF, outFeatures: out, scaling: s } = l;
    const w = model.weights.get(`${path}.weight`) as HostTensor;
    const a0 = f32(peft.adapter("default").tensors.get(`${path}.hut_A.weight`));
    const b0 = new Float32Array(out * 2);
    const x = randomTensor([3, inF]);
    const c = randomTensor([3, out]);
    const aT = hostTensor("f32", [2, inF], a0);
    const bT = hostTensor("f32", [out, 2], b0);
    const g = trace(
      (xt, ct, wt, at, bt) => {
        const loss = (a: Tensor, b: Tensor) => {
          const ctx = peft
            .adapter("default")
            .tuner.wrap(
              new WeightContext((n) => (n === `${path}.weight` ? wt : undefined), new Set([`${path}.weight`])),
              peft.info,
              peft.adapter("default").config,
              {
                adapterName: "default",
                tensor: (k) => (k.endsWith("hut_A.weight") ? a : b),
                rowMask: null,
                training: true,
                seed: null,
              },
            );
          return ctx.linear(path, xt).mul(ct).sum();
        };
        return grad(loss, [0, 1])(at, bt);
      },
      [x, c, w, aT, bT].map((t) => ({ dtype: t.dtype, shape: t.shape })),
    );
    const [gA, gB] = interpret(g, [x, c, w, aT, bT]).map((t) => t.data as Float32Array);
    const xd = f32(x);
    const cd = f32(c);
    const wd = f32(w);
    // G ⊙ W, logical [out, in].
    const gw = new Float64Array(out * inF);
    for (let o = 0; o < out; o++)
      for (let i = 0; i < inF; i++) {
        let gi = 0;
        for (let r = 0; r < 3; r++) gi += cd[r * out + o] * xd[r * inF + i];
        gw[o * inF + i] = gi * wd[o * inF + i];
      }
    const wantB = new Float64Array(out * 2);
    for (let o = 0; o < out; o++)
      for (let j = 0; j < 2; j++) {
        let v = 0;
        for (let i = 0; i < inF; i++) v += gw[o * inF + i] * a0[j * inF + i];
        wantB[o * 2 + j] = s * v;
      }
    assert.ok(maxDiff(gB, wantB) < 1e-4 * Math.max(1, ...Array.from(wantB, Math.abs)), `∇B ${maxDiff(gB, wantB)}`);
    assert.ok(
      gA.every((v) => v === 0),
      "∇A is zero while B = 0",
    );
    // The step: B₁ = −η·∇B (A unchanged); the adapter then computes W ⊙ (1 + s·B₁·A).
    const eta = 0.1;
    const b1 = Float32Array.from(gB, (v) => -eta * v);
    peft.setAdapterTensors("default", new Map([[`${path}.hut_B.weight`, hostTensor("f32", [out, 2], b1)]]));
    peft.mergeAdapter();
    const want = closedForm(w, a0, b1, 2, s, false);
    const merged = f32(model.weights.get(`${path}.weight`));
    assert.ok(maxDiff(merged, want) < 1e-6, `W' after the step ${maxDiff(merged, want)}`);
    assert.ok(maxDiff(merged, wd) > 1e-6, "the step changed nothing");
    await model.release();
  });

  test("config: defaults, JSON, bad input", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "HUT" });
    const a = peft.adapter("default");
    const json = a.tuner.toJson(a.config);
    assert.equal(json.peft_type, "HUT");
    assert.equal(json.r, 8);
    assert.equal(json.hut_alpha, 8);
    assert.equal(json.init_hut_weights, true);
    assert.throws(
      () => peft.addAdapter("x", { peftType: "HUT", r: 33 }),
      /HUT config: r = 33 exceeds min\(in, out\) = 32 of "model.layers.0.self_attn.q_proj"/,
    );
    assert.throws(() => peft.addAdapter("y", { peftType: "HUT", r: 0 }), /field "r"/);
    assert.throws(() => peft.addAdapter("z", { peftType: "HUT", hutAlpha: "big" }), /hut_alpha/);
    const ids = randomIds(1, 4, 256);
    const base = await peft.disableAdapter(async () => (await peft.forward({ inputIds: ids })).logits?.data as Float32Array);
    assert.ok(maxAbsDiff((await peft.forward({ inputIds: ids })).logits?.data as Float32Array, base) < 1e-6);
    await model.release();
  });
});
