import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import { matrix } from "../../util/linalg.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { maxDiff, probe, randomTensor } from "../ia3/testing.js";
import { PeftModel } from "../peft-model.js";
import type { SokaConfig } from "./config.js";
import { SOKA, sokaLayers } from "./index.js";
import { kpsvd, kronSum } from "./kron.js";

const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;
const terms = (t: HostTensor | undefined, r: number, size: number) =>
  Array.from({ length: r }, (_, k) => f32(t).subarray(k * size, (k + 1) * size));

/** The logical [out, in] weight as f64. */
function logical(w: HostTensor, fif: boolean) {
  const [d0, d1] = w.shape;
  const [inF, out] = fif ? [d0, d1] : [d1, d0];
  const m = matrix(out, inF);
  for (let o = 0; o < out; o++) for (let i = 0; i < inF; i++) m.data[o * inF + i] = f32(w)[fif ? i * out + o : o * inF + i];
  return m;
}

describe("SoKA", () => {
  runConformance({
    name: "SoKA on llama (q_proj, v_proj; r = 2, balanced factors)",
    model: "llama_basic",
    identityConfig: { peftType: "SOKA", r: 2 },
    config: { peftType: "SOKA", r: 2, initSokaWeights: false },
  });
  runConformance({
    name: "SoKA on GPT-2 Conv1D (all-linear, factors 4×8, rank by energy 0.9 + elbow)",
    model: "gpt2",
    identityConfig: { peftType: "SOKA", targetModules: "all-linear", r: 3, factorOut: 4, factorIn: 8 },
    config: {
      peftType: "SOKA",
      targetModules: "all-linear",
      r: 3,
      factorOut: 4,
      factorIn: 8,
      energyThreshold: 0.9,
      initSokaWeights: false,
    },
  });

  test("at the start: U = U⁰, V = V⁰, ΔW = 0 exactly, and W_res = W − Σ U⁰⊗V⁰ keeps only the tail of the Kronecker spectrum", async () => {
    const model = await loadTestModel("llama_basic");
    const path = "model.layers.1.self_attn.q_proj";
    const w = model.weights.get(`${path}.weight`) as HostTensor;
    const before = Float32Array.from(f32(w));
    const peft = PeftModel.create(model, { peftType: "SOKA", r: 3 });
    const cfg = peft.adapter("default").config as SokaConfig;
    const l = sokaLayers(peft.info, cfg).find((x) => x.path === path);
    assert.ok(l);
    assert.deepEqual([l.m, l.n, l.p, l.q, l.r], [4, 4, 8, 8, 3]);
    const t = peft.adapter("default").tensors;
    assert.deepEqual(f32(t.get(`${path}.soka_U`)), f32(t.get(`${path}.soka_U0`)));
    assert.deepEqual(t.get(`${path}.soka_V`)?.shape, [3, 8, 8]);
    // W_res's Kronecker spectrum is W's without its three leading values.
    const w0 = logical(w, false);
    const full = kpsvd(w0, l);
    const principal = kronSum(terms(t.get(`${path}.soka_U0`), 3, 16), terms(t.get(`${path}.soka_V0`), 3, 64), l);
    const res = matrix(
      32,
      32,
      Array.from(w0.data, (x, i) => x - principal.data[i]),
    );
    const tail = kpsvd(res, l).s;
    for (let k = 0; k < 13; k++)
      assert.ok(Math.abs(tail[k] - full.s[k + 3]) < 1e-5, `σ_${k + 1}(W_res) = ${tail[k]} vs σ_${k + 4}(W) = ${full.s[k + 3]}`);
    // Merging a fresh adapter leaves W bit for bit; outputs equal the base's.
    peft.mergeAdapter();
    assert.deepEqual(f32(model.weights.get(`${path}.weight`)), before);
    peft.unmergeAdapter();
    const ids = randomIds(2, 5, 256);
    const base = await peft.disableAdapter(async () => (await peft.forward({ inputIds: ids })).logits?.data as Float32Array);
    assert.equal(maxAbsDiff((await peft.forward({ inputIds: ids })).logits?.data as Float32Array, base), 0);
    await model.release();
  });

  test("a layer computes x·(W + Σ U_k⊗V_k − Σ U⁰_k⊗V⁰_k)ᵀ (GPT-2 and llama), and only on its rows in mixed batches", async () => {
    for (const [name, path, cfg] of [
      ["gpt2", "transformer.h.0.mlp.c_fc", { factorOut: 8, factorIn: 4 }],
      ["llama_basic", "model.layers.0.mlp.down_proj", {}],
    ] as const) {
      const model = await loadTestModel(name);
      const peft = PeftModel.create(
        model,
        { peftType: "SOKA", targetModules: "all-linear", r: 2, initSokaWeights: false, ...cfg },
        { seed: 41 },
      );
      const fif = peft.info.fanInFanOut;
      const l = sokaLayers(peft.info, peft.adapter("default").config as SokaConfig).find((x) => x.path === path);
      assert.ok(l);
      const t = peft.adapter("default").tensors;
      const w = logical(model.weights.get(`${path}.weight`) as HostTensor, fif);
      const now = kronSum(terms(t.get(`${path}.soka_U`), 2, l.m * l.n), terms(t.get(`${path}.soka_V`), 2, l.p * l.q), l);
      const start = kronSum(terms(t.get(`${path}.soka_U0`), 2, l.m * l.n), terms(t.get(`${path}.soka_V0`), 2, l.p * l.q), l);
      const b = model.weights.get(`${path}.bias`) ?? null;
      const x = randomTensor([2, l.inFeatures]);
      const want = new Float64Array(2 * l.outFeatures);
      for (let r = 0; r < 2; r++)
        for (let o = 0; o < l.outFeatures; o++) {
          let s = b ? f32(b)[o] : 0;
          for (let i = 0; i < l.inFeatures; i++) {
            const at = o * l.inFeatures + i;
            s += f32(x)[r * l.inFeatures + i] * (w.data[at] + now.data[at] - start.data[at]);
          }
          want[r * l.outFeatures + o] = s;
        }
      const got = probe(peft, "default", (ctx, xt) => ctx.linear(path, xt, { fanInFanOut: fif }), x);
      assert.ok(maxDiff(got, want) < 1e-4, `${name}: ${maxDiff(got, want)}`);
      const mixed = probe(peft, "default", (ctx, xt) => ctx.linear(path, xt, { fanInFanOut: fif }), x, [1, 0]);
      assert.ok(maxDiff(mixed.subarray(0, l.outFeatures), want.subarray(0, l.outFeatures)) < 1e-4, `${name} adapter row`);
      await model.release();
    }
  });

  test("energy_threshold picks each layer's rank from its Kronecker spectrum; load finds the same shapes", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "SOKA", r: 6, energyThreshold: 0.5 });
    const a = peft.adapter("default");
    for (const l of sokaLayers(peft.info, a.config as SokaConfig)) {
      const s = kpsvd(logical(model.weights.get(`${l.path}.weight`) as HostTensor, false), l).s;
      assert.ok(l.r >= 1 && l.r <= 6);
      let e = 0;
      let tot = 0;
      s.forEach((x, k) => {
        tot += x * x;
        if (k < l.r - 1) e += x * x;
      });
      // Fewer terms than chosen would not reach the threshold, unless the elbow cut first.
      assert.ok(e < 0.5 * tot || l.r < 6, `${l.key}: r = ${l.r}`);
      assert.deepEqual(a.tensors.get(`${l.key}.soka_U`)?.shape, [l.r, l.m, l.n]);
    }
    assert.deepEqual(
      [...SOKA.expectedTensors(peft.info, a.config as SokaConfig)].map(([k, s]) => [k, s.join("x")]),
      [...a.tensors].map(([k, t]) => [k, t.shape.join("x")]),
    );
    await model.release();
  });

  test("energy_threshold ranks are read from the adapter's tensors once made: merging another adapter into W first changes nothing", async () => {
    const model = await loadTestModel("llama_basic");
    const ids = randomIds(2, 5, 256);
    const peft = PeftModel.create(model, { peftType: "SOKA", r: 6, energyThreshold: 0.5, initSokaWeights: false }, { seed: 43 });
    peft.addAdapter("lora", { peftType: "LORA", r: 8, initLoraWeights: false, targetModules: ["q_proj", "v_proj"] }, { seed: 44 });
    peft.setAdapter(["lora", "default"]);
    const both = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    // LoRA's merge moves W, whose Kronecker spectrum (and so its energy/elbow rank) then differs.
    peft.mergeAdapter(["lora"]);
    assert.ok(maxAbsDiff((await peft.forward({ inputIds: ids })).logits?.data as Float32Array, both) < 1e-4);
    peft.mergeAdapter(["default"]);
    assert.ok(maxAbsDiff((await peft.forward({ inputIds: ids })).logits?.data as Float32Array, both) < 1e-4);
    await model.release();
  });

  test("U⁰, V⁰ are saved but not trainable; config JSON; bad factor shapes and ranks are one-line errors", async () => {
    const cfg = SOKA.parseConfig({ peft_type: "SOKA" }, "cfg");
    assert.equal(SOKA.trainable?.("model.layers.0.self_attn.q_proj.soka_U0", cfg), false);
    assert.equal(SOKA.trainable?.("model.layers.0.self_attn.q_proj.soka_V0", cfg), false);
    assert.equal(SOKA.trainable?.("model.layers.0.self_attn.q_proj.soka_U", cfg), true);
    const json = SOKA.toJson(cfg);
    assert.deepEqual(
      [json.peft_type, json.r, json.factor_out, json.factor_in, json.energy_threshold, json.init_soka_weights],
      ["SOKA", 8, null, null, null, true],
    );
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "SOKA", r: 2 });
    // q_proj and v_proj of 2 blocks (factors 4×4, 8×8): U and V count, U⁰ and V⁰ do not.
    assert.equal(peft.parameterCounts().trainable, 4 * 2 * (16 + 64));
    assert.throws(
      () => peft.addAdapter("a", { peftType: "SOKA", factorOut: 5 }),
      /^PeftConfigError: SoKA config: factor_out = 5 does not divide out_features = 32 of "model.layers.0.self_attn.q_proj"$/,
    );
    assert.throws(() => peft.addAdapter("b", { peftType: "SOKA", factorIn: 3 }), /factor_in = 3 does not divide in_features = 32/);
    assert.throws(
      () => peft.addAdapter("c", { peftType: "SOKA", r: 17 }),
      /SoKA config: r = 17 exceeds the 16 Kronecker terms of "model.layers.0.self_attn.q_proj"/,
    );
    assert.throws(() => peft.addAdapter("d", { peftType: "SOKA", energyThreshold: 1.5 }), /energy_threshold/);
    await model.release();
  });
});
