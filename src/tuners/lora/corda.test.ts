/**
 * CorDA against its closed form: W = U·S·V̂ᵀ exactly; IPM's adapter is the part of W along the r
 * largest singular directions of W·C̃, KPM's along the r smallest; the residual base plus the
 * adapter reproduces W, so the model's output is unchanged at initialisation.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { runCalibration } from "../../calibration/index.js";
import type { HostTensor } from "../../engine/ir/host.js";
import { type Matrix, matmul, matrix, svd, transpose } from "../../util/linalg.js";
import { Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { loadTestModel, maxAbsDiff, randomIds } from "../conformance.js";
import { modelInfo } from "../model-info.js";
import { calibrationRequest, PeftModel } from "../peft-model.js";
import { PeftTrainer } from "../train.js";
import type { CalibrationStats } from "../tuner.js";
import type { LoraConfig } from "./config.js";
import { cordaDecompose, dampCovariance } from "./corda.js";
import { LORA } from "./index.js";

function randomMatrix(rows: number, cols: number, rng: Rng): Matrix {
  return matrix(
    rows,
    cols,
    Float64Array.from({ length: rows * cols }, () => rng.next() * 2 - 1),
  );
}

/** XᵀX of n random rows with unequal column scales: a covariance with a spread spectrum. */
function covariance(d: number, n: number, rng: Rng): Matrix {
  const x = randomMatrix(n, d, rng);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) x.data[i * d + j] *= 1 + 3 * (j % 4);
  return matmul(transpose(x), x);
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

test("CorDA: W = U·S·V̂ᵀ exactly, for tall and wide weights and a rank-deficient covariance", () => {
  const rng = new Rng(3);
  for (const [out, inF, n] of [
    [6, 10, 40],
    [10, 6, 40],
    [8, 8, 5],
  ]) {
    const w = randomMatrix(out, inF, rng);
    const { u, s, vHat, damp } = cordaDecompose(w, covariance(inF, n, rng), "test");
    const k = Math.min(out, inF);
    const us = matrix(out, k, u.data);
    for (let o = 0; o < out; o++) for (let j = 0; j < k; j++) us.data[o * k + j] *= s[j];
    assert.ok(maxDiff(matmul(us, transpose(vHat)).data, w.data) < 1e-10, `${out}x${inF}`);
    for (let j = 1; j < k; j++) assert.ok(s[j] <= s[j - 1]);
    assert.equal(damp, 0.01, "λ stays at PEFT's start value in float64");
  }
});

test("CorDA damping: C̃ = C + λ·mean(diag C)·I with λ = 0.01; C̃ = L·Lᵀ; V̂ = C̃⁻¹·V by the factor", () => {
  const c = covariance(5, 3, new Rng(9)); // rank 3 of 5: singular before damping
  const { damped, factor, damp } = dampCovariance(c, "test");
  assert.equal(damp, 0.01);
  const mean = [0, 1, 2, 3, 4].reduce((t, i) => t + c.data[i * 5 + i], 0) / 5;
  for (let i = 0; i < 5; i++)
    for (let j = 0; j < 5; j++) assert.equal(damped.data[i * 5 + j], c.data[i * 5 + j] + (i === j ? damp * mean : 0));
  assert.ok(maxDiff(matmul(factor, transpose(factor)).data, damped.data) < 1e-12 * mean);
  // With W = I the decomposition solves C̃·V̂ = V for V of SVD(C̃): the solve stands in for C̃⁻¹.
  const eye = matrix(5, 5);
  for (let i = 0; i < 5; i++) eye.data[i * 6] = 1;
  const { vHat } = cordaDecompose(eye, c, "test");
  const { v } = svd(damped);
  const solved = matmul(damped, vHat);
  let err = 0;
  for (let i = 0; i < 25; i++) err += (solved.data[i] - v.data[i]) ** 2;
  assert.ok(Math.sqrt(err) < 1e-10, `‖C̃·V̂ − V‖ = ${Math.sqrt(err)}`);
  assert.throws(() => dampCovariance(matrix(3, 3), "layer.x"), /input covariance of "layer.x" is zero/);
});

/** Synthetic calibration stats for the layers a request names (random covariances). */
function stats(layers: readonly string[], width: (p: string) => number, rng: Rng): CalibrationStats {
  const inputCovariance = new Map(layers.map((p) => [p, covariance(width(p), 3 * width(p), rng)]));
  return { samples: 1, batches: 1, tokens: 1, inputCovariance, gradientSum: new Map(), gradientSquareSum: new Map() };
}

for (const mode of ["ipm", "kpm"] as const) {
  test(`CorDA ${mode}: s·B·A·C̃ carries the r ${mode === "ipm" ? "largest" : "smallest"} singular values of W·C̃; residual + s·B·A = W`, async () => {
    const model = await loadTestModel("llama_basic");
    try {
      const info = modelInfo(model);
      const raw = {
        peft_type: "LORA",
        r: 3,
        lora_alpha: 6,
        target_modules: ["q_proj", "down_proj"],
        init_lora_weights: "corda",
        corda_config: { corda_method: mode },
      };
      const c = LORA.parseConfig(raw, "test") as LoraConfig;
      const req = LORA.calibration?.(info, c);
      assert.ok(req?.inputCovariance && req.inputScaling === "exampleMax");
      assert.deepEqual(
        req.layers,
        info.linearLayers.filter((p) => /q_proj|down_proj/.test(p)),
      );
      const st = stats(req.layers, (p) => info.weight(`${p}.weight`).shape[1], new Rng(1));
      const created = LORA.create(info, c, new Rng(0), { calibration: st });
      for (const p of req.layers) {
        const key = info.peftName(p);
        const a = created.tensors.get(`${key}.lora_A.weight`) as HostTensor;
        const b = created.tensors.get(`${key}.lora_B.weight`) as HostTensor;
        const [out, inF] = info.weight(`${p}.weight`).shape;
        const delta = matmul(matrix(out, 3, b.data as Float32Array), matrix(3, inF, a.data as Float32Array));
        for (let i = 0; i < delta.data.length; i++) delta.data[i] *= 2; // s = α/r = 2
        const w = matrix(out, inF, info.weight(`${p}.weight`).data as Float32Array);
        const res = created.baseEdits?.get(`${p}.weight`) as HostTensor;
        const back = Float64Array.from(res.data as Float32Array, (v, i) => v + delta.data[i]);
        assert.ok(maxDiff(back, w.data) < 1e-6, `${p}: residual + s·B·A = W`);
        const { damped } = dampCovariance(st.inputCovariance.get(p) as Matrix, p);
        const all = svd(matmul(w, damped)).s;
        const got = svd(matmul(delta, damped)).s.slice(0, 3);
        const want = mode === "ipm" ? all.slice(0, 3) : all.slice(all.length - 3);
        assert.ok(maxDiff(got, want) < 1e-4 * all[0], `${p}: ${[...got]} vs ${[...want]}`);
        // The other side: the residual holds exactly the components the adapter left.
        const rest = svd(matmul(matrix(out, inF, res.data as Float32Array), damped)).s;
        const left = mode === "ipm" ? all.slice(3) : all.slice(0, all.length - 3);
        assert.ok(maxDiff(rest.slice(0, left.length), left) < 1e-4 * all[0], `${p}: residual spectrum`);
      }
    } finally {
      await model.release();
    }
  });
}

test("CorDA end to end: calibration pass → PeftModel.create; output unchanged at init; trains, merges; config as PEFT writes it", async () => {
  const model = await loadTestModel("llama_basic");
  try {
    const config = { peft_type: "LORA", r: 4, lora_alpha: 4, target_modules: "all-linear", init_lora_weights: "corda", lora_dropout: 0 };
    const req = calibrationRequest(model, config);
    assert.ok(req);
    const ids = randomIds(3, 7, 256);
    const calibration = await runCalibration(model, [{ inputIds: ids }], req);
    const ref = (await model.forward({ inputIds: ids })).logits?.data as Float32Array;
    assert.throws(() => PeftModel.create(model, config), /LORA: this initialisation needs calibration data/);
    const peft = PeftModel.create(model, config, { calibration });
    const got = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    assert.ok(maxAbsDiff(got, ref) < 1e-4, `logits moved by ${maxAbsDiff(got, ref)}`);
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
    await trainer.train({ inputIds: ids, labels: ids }, { lr: 1e-2 });
    await trainer.release();
    const trained = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    assert.ok(maxAbsDiff(trained, ref) > 1e-3, "training changed nothing");
    peft.mergeAdapter();
    const merged = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    assert.ok(maxAbsDiff(merged, trained) < 1e-4, `merged vs unmerged ${maxAbsDiff(merged, trained)}`);
    const json = peft.adapter("default").tuner.toJson(peft.adapter("default").config);
    assert.equal(json.init_lora_weights, "corda");
    assert.deepEqual(json.corda_config, {
      cache_file: null,
      covariance_file: null,
      corda_method: "ipm",
      verbose: false,
      use_float16_for_covariance: false,
      prune_temporary_fields: true,
    });
    assert.deepEqual(LORA.toJson(LORA.parseConfig(json, "again")), json);
  } finally {
    await model.release();
  }
});

test("CorDA refuses a rank above min(in, out), a missing covariance and a bad corda_config, in one line", async () => {
  const model = await loadTestModel("llama_basic");
  try {
    const info = modelInfo(model);
    const parse = (over: Record<string, unknown>) =>
      LORA.parseConfig({ peft_type: "LORA", target_modules: ["q_proj"], init_lora_weights: "corda", ...over }, "cfg") as LoraConfig;
    const layers = info.linearLayers.filter((p) => p.endsWith("q_proj"));
    const st = stats(layers, () => 32, new Rng(2));
    assert.throws(() => LORA.create(info, parse({ r: 33 }), new Rng(0), { calibration: st }), {
      name: "PeftConfigError",
      message: 'CorDA: r = 33 exceeds min(in, out) = 32 of "model.layers.0.self_attn.q_proj"',
    });
    assert.throws(() => LORA.create(info, parse({ r: 2 }), new Rng(0)), /CorDA: no input covariance for "model.layers.0.self_attn.q_proj"/);
    assert.throws(() => parse({ corda_config: { corda_method: "xyz" } }), /corda_method" must be one of "ipm", "kpm"/);
    assert.throws(() => parse({ corda_config: { corda_mode: "kpm" } }), /corda_config has unknown field\(s\) "corda_mode"/);
    assert.throws(() => parse({ corda_config: 3 }), PeftConfigError);
    assert.equal(LORA.calibration?.(info, parse({ init_lora_weights: true })), null);
  } finally {
    await model.release();
  }
});
