import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { matrix } from "../../util/linalg.js";
import { loadTestModel, runConformance } from "../conformance.js";
import { linearJs, maxDiff, probe, randomTensor } from "../ia3/testing.js";
import { logicalWeight } from "../lora/layers.js";
import { PeftModel } from "../peft-model.js";
import type { LolduConfig } from "./config.js";
import { LOLDU, ldu, lolduKeys, lolduLayers } from "./index.js";

const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

describe("LoLDU", () => {
  runConformance({
    name: "LoLDU on llama (q_proj, v_proj; exact at init)",
    model: "llama_basic",
    identityConfig: { peftType: "LOLDU" },
    config: { peftType: "LOLDU", initWeights: false },
  });
  runConformance({
    name: "LoLDU on GPT-2 Conv1D (all-linear, r = 4, α = 2)",
    model: "gpt2",
    identityConfig: { peftType: "LOLDU", targetModules: "all-linear", r: 4, loraAlpha: 2 },
    config: { peftType: "LOLDU", targetModules: "all-linear", r: 4, loraAlpha: 2, initWeights: false },
  });

  test("r + 1 trainable parameters per layer; W reproduced at init (merge leaves W bit-identical)", async () => {
    const model = await loadTestModel("llama_basic");
    const w0 = new Map([...model.weights].map(([k, t]) => [k, Float32Array.from(f32(t))]));
    const peft = PeftModel.create(model, { peftType: "LOLDU", targetModules: "all-linear", r: 6 });
    const a = peft.adapter("default");
    const layers = lolduLayers(peft.info, a.config as LolduConfig);
    assert.equal(layers.length, 14);
    assert.equal(peft.parameterCounts().trainable, 14 * (6 + 1));
    for (const l of layers) {
      let trainable = 0;
      for (const [k, t] of a.tensors)
        if (k.startsWith(`${l.key}.`) && LOLDU.trainable?.(k, a.config as LolduConfig)) trainable += t.data.length;
      assert.equal(trainable, 6 + 1, l.key);
      const k = lolduKeys(l.key);
      assert.deepEqual(f32(a.tensors.get(k.s)), Float32Array.of(1 / 6));
      assert.deepEqual(f32(a.tensors.get(k.z)), f32(a.tensors.get(k.z0)));
    }
    peft.mergeAdapter();
    for (const [k, t] of model.weights) assert.deepEqual(f32(t), w0.get(k), k);
    await model.release();
  });

  test("the factors: P·L·diag(z₀)·U = W at full rank, U unit upper, L unit lower in pivot order, first r in pivot order", async () => {
    const w = matrix(4, 3, [1, 2, 3, 8, 1, 0, -2, 5, 1, 4, 4, 9]);
    const full = ldu(w, 3, "test");
    // Rebuild W from all 3 components.
    for (let o = 0; o < 4; o++)
      for (let i = 0; i < 3; i++) {
        let v = 0;
        for (let j = 0; j < 3; j++) v += full.l[o * 3 + j] * full.z0[j] * full.u[j * 3 + i];
        assert.ok(Math.abs(v - w.data[o * 3 + i]) < 1e-5, `${o},${i}: ${v}`);
      }
    for (let j = 0; j < 3; j++) {
      assert.ok(Math.abs(full.u[j * 3 + j] - 1) < 1e-7);
      for (let i = 0; i < j; i++) assert.equal(full.u[j * 3 + i], 0);
    }
    // Partial pivoting: the first pivot is the largest |entry| of column 0 (8, row 1), so z₀[0] = 8
    // and row 1 of P·L is (1, 0, 0); every multiplier is at most 1 in magnitude.
    assert.equal(full.z0[0], 8);
    assert.deepEqual([...full.l.subarray(3, 6)], [1, 0, 0]);
    assert.ok(full.l.every((v) => Math.abs(v) <= 1));
    // r = 2 keeps the first two pivots' components, whatever their magnitude.
    const two = ldu(w, 2, "test");
    assert.deepEqual([...two.z0], [...full.z0.subarray(0, 2)]);
  });

  test("a layer computes W·x + P·L_r·diag(s·z − s₀·z₀)·U_r·x", async () => {
    const model = await loadTestModel("gpt2");
    const path = "transformer.h.1.mlp.c_proj";
    const peft = PeftModel.create(model, { peftType: "LOLDU", targetModules: ["c_proj"], r: 3, initWeights: false }, { seed: 9 });
    const k = lolduKeys(path);
    peft.setAdapterTensors("default", new Map([[k.s, hostTensor("f32", [1], [0.7])]]));
    const t = peft.adapter("default").tensors;
    const w = model.weights.get(`${path}.weight`) as HostTensor;
    const [inF, out] = w.shape;
    const x = randomTensor([2, inF]);
    const xs = x.data as Float32Array;
    const want = Float64Array.from(linearJs(xs, 2, w, model.weights.get(`${path}.bias`) ?? null, true));
    const z = f32(t.get(k.z));
    const z0 = f32(t.get(k.z0));
    const s0 = f32(t.get(k.s0))[0];
    const lf = f32(t.get(k.l));
    const uf = f32(t.get(k.u));
    for (let row = 0; row < 2; row++)
      for (let j = 0; j < 3; j++) {
        let p = 0;
        for (let i = 0; i < inF; i++) p += uf[j * inF + i] * xs[row * inF + i];
        for (let o = 0; o < out; o++) want[row * out + o] += lf[o * 3 + j] * (0.7 * z[j] - s0 * z0[j]) * p;
      }
    const got = probe(peft, "default", (ctx, xt) => ctx.linear(path, xt, { fanInFanOut: true }), x);
    assert.ok(maxDiff(got, want) < 1e-4, `${maxDiff(got, want)}`);
    // The stored U_r·x and P·L_r are those of W's LDU.
    const layer = lolduLayers(peft.info, peft.adapter("default").config as LolduConfig).find((l) => l.path === path);
    assert.ok(layer);
    const f = ldu(logicalWeight(peft.info, layer), 3, "w");
    assert.deepEqual(f.l, lf);
    await model.release();
  });

  test("errors: r larger than the layer; a zero pivot among the first r", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "LOLDU" });
    assert.throws(
      () => peft.addAdapter("a", { peftType: "LOLDU", r: 33 }),
      /LoLDU: r = 33 exceeds min\(out, in\) = 32 of "model.layers.0.self_attn.q_proj"/,
    );
    const name = "model.layers.1.self_attn.o_proj.weight";
    const w = model.weights.get(name) as HostTensor;
    model.weights.set(name, hostTensor("f32", w.shape, new Float32Array(w.data.length)));
    assert.throws(
      () => peft.addAdapter("b", { peftType: "LOLDU", targetModules: ["o_proj"] }),
      /LoLDU: "model.layers.1.self_attn.o_proj" has a zero pivot at position 0/,
    );
    model.weights.set(name, w);
    await model.release();
  });
});
