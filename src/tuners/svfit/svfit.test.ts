import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import { readSafetensors, writeSafetensors } from "../../io/safetensors.js";
import { matrix, svd } from "../../util/linalg.js";
import { loadTestModel, randomIds, runConformance } from "../conformance.js";
import { ADAPTER_WEIGHTS } from "../format.js";
import { linearJs, maxDiff, probe, randomTensor } from "../ia3/testing.js";
import { logicalWeight } from "../lora/layers.js";
import { PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import { energyRank, SVFIT, svfitKeys, svfitLayers } from "./index.js";

const f32 = (t: HostTensor | undefined) => t?.data as Float32Array;

describe("SVFit", () => {
  runConformance({
    name: "SVFit on llama (q_proj, v_proj; exact at init)",
    model: "llama_basic",
    identityConfig: { peftType: "SVFIT" },
    config: { peftType: "SVFIT", initWeights: false },
  });
  runConformance({
    name: "SVFit on GPT-2 Conv1D (all-linear, r = 4)",
    model: "gpt2",
    identityConfig: { peftType: "SVFIT", targetModules: "all-linear", r: 4 },
    config: { peftType: "SVFIT", targetModules: "all-linear", r: 4, initWeights: false },
  });

  test("keys, shapes, r trainable values per layer; σ₀ = the top-r singular values, U_r and V_r orthonormal", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "SVFIT", r: 5 });
    const a = peft.adapter("default");
    const layers = svfitLayers(peft.info, a.config as never);
    assert.equal(layers.length, 4);
    let trainable = 0;
    for (const [k, t] of a.tensors) if (SVFIT.trainable?.(k, a.config as never)) trainable += t.data.length;
    assert.equal(trainable, 5 * layers.length);
    assert.equal(peft.parameterCounts().trainable, 5 * layers.length);
    for (const l of layers) {
      const k = svfitKeys(l.key);
      assert.deepEqual(a.tensors.get(k.u)?.shape, [l.outFeatures, 5]);
      assert.deepEqual(a.tensors.get(k.v)?.shape, [5, l.inFeatures]);
      assert.deepEqual(f32(a.tensors.get(k.sigma)), f32(a.tensors.get(k.sigma0)));
      const s = svd(logicalWeight(peft.info, l)).s;
      assert.ok(maxDiff(f32(a.tensors.get(k.sigma0)), s.subarray(0, 5)) < 1e-5);
      // Eckart–Young: ‖W − U_r·diag(σ₀)·V_rᵀ‖_F² = Σ_{i>r} σ_i².
      const w = logicalWeight(peft.info, l);
      const u = f32(a.tensors.get(k.u));
      const v = f32(a.tensors.get(k.v));
      const sg = f32(a.tensors.get(k.sigma0));
      let resid = 0;
      for (let o = 0; o < l.outFeatures; o++)
        for (let i = 0; i < l.inFeatures; i++) {
          let x = w.data[o * l.inFeatures + i];
          for (let j = 0; j < 5; j++) x -= u[o * 5 + j] * sg[j] * v[j * l.inFeatures + i];
          resid += x * x;
        }
      let tail = 0;
      for (let i = 5; i < s.length; i++) tail += s[i] * s[i];
      assert.ok(Math.abs(resid - tail) < 1e-4 * Math.max(1, tail), `${l.key}: ${resid} vs ${tail}`);
      for (let p = 0; p < 5; p++)
        for (let q = 0; q < 5; q++) {
          let du = 0;
          let dv = 0;
          for (let o = 0; o < l.outFeatures; o++) du += u[o * 5 + p] * u[o * 5 + q];
          for (let i = 0; i < l.inFeatures; i++) dv += v[p * l.inFeatures + i] * v[q * l.inFeatures + i];
          assert.ok(Math.abs(du - (p === q ? 1 : 0)) < 1e-5 && Math.abs(dv - (p === q ? 1 : 0)) < 1e-5);
        }
    }
    await model.release();
  });

  test("a layer computes W·x + U_r·diag(σ − σ₀)·V_rᵀ·x; merging at init leaves W bit-identical", async () => {
    const model = await loadTestModel("gpt2");
    const path = "transformer.h.0.attn.c_attn";
    const w0 = Float32Array.from(f32(model.weights.get(`${path}.weight`)));
    const peft = PeftModel.create(model, { peftType: "SVFIT", r: 3 });
    peft.mergeAdapter();
    assert.deepEqual(f32(model.weights.get(`${path}.weight`)), w0, "exact at init");
    peft.unmergeAdapter();
    const peft2 = PeftModel.create(await loadTestModel("gpt2"), { peftType: "SVFIT", r: 3, initWeights: false }, { seed: 3 });
    const t = peft2.adapter("default").tensors;
    const k = svfitKeys(path);
    const w = peft2.base.weights.get(`${path}.weight`) as HostTensor;
    const b = peft2.base.weights.get(`${path}.bias`) ?? null;
    const [inF, out] = w.shape;
    const x = randomTensor([2, inF]);
    const xs = x.data as Float32Array;
    const base = linearJs(xs, 2, w, b, true);
    const u = f32(t.get(k.u));
    const v = f32(t.get(k.v));
    const c = f32(t.get(k.sigma)).map((s, j) => s - f32(t.get(k.sigma0))[j]);
    const want = Float64Array.from(base);
    for (let row = 0; row < 2; row++)
      for (let j = 0; j < 3; j++) {
        let p = 0;
        for (let i = 0; i < inF; i++) p += v[j * inF + i] * xs[row * inF + i];
        for (let o = 0; o < out; o++) want[row * out + o] += u[o * 3 + j] * c[j] * p;
      }
    const got = probe(peft2, "default", (ctx, xt) => ctx.linear(path, xt, { fanInFanOut: true }), x);
    assert.ok(maxDiff(got, want) < 1e-5, `${maxDiff(got, want)}`);
    await model.release();
    await peft2.base.release();
  });

  test("energy_threshold: the smallest r keeping that share of Σσ², per layer", async () => {
    assert.equal(energyRank([3, 2, 1], 0.5), 1); // 9/14
    assert.equal(energyRank([3, 2, 1], 0.9), 2); // 13/14
    assert.equal(energyRank([3, 2, 1], 0.93), 3);
    assert.equal(energyRank([3, 2, 1], 1), 3);
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "SVFIT", energyThreshold: 0.9 });
    const a = peft.adapter("default");
    assert.equal(a.tuner.toJson(a.config).r, null);
    for (const l of svfitLayers(peft.info, a.config as never)) {
      const s = svd(logicalWeight(peft.info, l)).s;
      assert.equal(a.tensors.get(svfitKeys(l.key).sigma)?.shape[0], energyRank(s, 0.9));
    }
    // A rank-2 matrix keeps all of its energy in 2 values.
    const m = matrix(3, 3, [1, 2, 3, 2, 4, 6, 0, 1, 1]);
    assert.equal(energyRank(svd(m).s, 0.999999), 2);
    await model.release();
  });

  test("SVFit, KaSA and LoLDU train modules_to_save copies (only their own fixed factors are fixed)", async () => {
    for (const peftType of ["SVFIT", "KASA", "LOLDU"]) {
      const model = await loadTestModel("bert_seq_cls");
      const peft = PeftModel.create(model, { peftType, r: 2, targetModules: ["query"], modulesToSave: ["classifier"] }, { seed: 1 });
      const a = peft.adapter("default");
      const copies = [...a.tensors.keys()].filter((k) => k.includes("classifier"));
      assert.ok(copies.length > 0, peftType);
      for (const k of copies) assert.notEqual(a.tuner.trainable?.(k, a.config), false, `${peftType}: ${k}`);
      const before = new Map(copies.map((k) => [k, Float32Array.from(f32(a.tensors.get(k)))]));
      const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
      const ids = randomIds(2, 5, 100);
      await trainer.train({ inputIds: ids, labels: [[0], [2]] }, { lr: 1e-2 });
      for (const k of copies)
        assert.ok(
          maxDiff(f32(peft.adapter("default").tensors.get(k)), before.get(k) as Float32Array) > 0,
          `${peftType}: ${k} did not train`,
        );
      await trainer.release();
      await model.release();
    }
  });

  test("an energy_threshold adapter reloads with its per-layer ranks; a saved folder missing a fixed factor is refused, naming it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "peftkit-svfit-"));
    try {
      const model = await loadTestModel("llama_basic");
      const peft = PeftModel.create(model, { peftType: "SVFIT", energyThreshold: 0.8, initWeights: false }, { seed: 2 });
      const ids = randomIds(2, 5, 256);
      const before = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
      peft.savePretrained(dir);
      const fresh = await loadTestModel("llama_basic");
      const loaded = PeftModel.fromPretrained(fresh, dir);
      const after = (await loaded.forward({ inputIds: ids })).logits?.data as Float32Array;
      assert.ok(maxDiff(after, before) < 1e-6);
      const path = join(dir, ADAPTER_WEIGHTS);
      const { tensors } = readSafetensors(path);
      const gone = "base_model.model.model.layers.1.self_attn.v_proj.svfit_V.weight";
      assert.ok(tensors[gone]);
      delete tensors[gone];
      writeSafetensors(path, tensors);
      const third = await loadTestModel("llama_basic");
      assert.throws(() => PeftModel.fromPretrained(third, dir), /model\.layers\.1\.self_attn\.v_proj\.svfit_V\.weight/);
      await third.release();
      await fresh.release();
      await model.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("errors: r larger than the layer, r together with energy_threshold, a threshold outside (0, 1]", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "SVFIT" });
    assert.throws(
      () => peft.addAdapter("a", { peftType: "SVFIT", r: 33 }),
      /SVFit: r = 33 exceeds min\(out, in\) = 32 of "model.layers.0.self_attn.q_proj"/,
    );
    assert.throws(() => peft.addAdapter("b", { peftType: "SVFIT", r: 4, energyThreshold: 0.99 }), /either "r" or "energy_threshold"/);
    assert.throws(() => peft.addAdapter("c", { peftType: "SVFIT", energyThreshold: 1.5 }), /energy_threshold.*\(0, 1\]/);
    await model.release();
  });
});
