import assert from "node:assert/strict";
import { test } from "node:test";
import { loadTestModel, runConformance } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import { parseSftConfig, type SftConfig } from "./config.js";
import { sftTargets, totalParameters } from "./layers.js";

const CONFIG = { peft_type: "SFT", target_modules: ["q_proj", "v_proj", "down_proj"], density: 0.02 };

runConformance({
  name: "SFT (SpIEL)",
  model: "llama_basic",
  identityConfig: CONFIG,
  config: { ...CONFIG, init_weights: false },
});

test("SFT: ⌊density·(all parameters)⌋ entries, spread over the targets by size; indices increasing and distinct", async () => {
  const model = await loadTestModel("llama_basic");
  const peft = PeftModel.create(model, CONFIG, { seed: 3 });
  const a = peft.adapter("default");
  const targets = sftTargets(peft.info, a.config as SftConfig);
  const total = Math.floor(totalParameters(peft.info) * 0.02);
  const sizes = targets.map((t) => t.shape[0] * t.shape[1]);
  const sum = sizes.reduce((x, y) => x + y, 0);
  // The counts are written into num_deltas (as the authors' SftModel does), for the saved config.
  assert.deepEqual((a.config as SftConfig).numDeltas, Object.fromEntries(targets.map((t) => [t.key, t.k])));
  targets.forEach((t, i) => {
    assert.equal(t.k, Math.floor((total * sizes[i]) / sum), t.key);
    const idx = a.tensors.get(`${t.key}.sft_delta.indices`)?.data as Int32Array;
    assert.equal(idx.length, t.k);
    for (let j = 1; j < idx.length; j++) assert.ok(idx[j] > idx[j - 1]);
    assert.ok(idx[idx.length - 1] < sizes[i]);
  });
  await model.release();
  const fresh = await loadTestModel("llama_basic");
  assert.throws(() => PeftModel.create(fresh, { ...CONFIG, density: 0 }), /field "density" must be in \(0, 1\], got 0/);
  assert.throws(() => PeftModel.create(fresh, { ...CONFIG, density: 1.5 }), /field "density" must be in \(0, 1\]/);
  assert.throws(
    () => PeftModel.create(fresh, { ...CONFIG, num_tunable_weights: 10 ** 9 }),
    /exceed the \d+ weights of the targeted layers/,
  );
  assert.throws(
    () => parseSftConfig({ ...CONFIG, num_deltas: { a: 0 } }, "cfg"),
    /cfg: field "num_deltas": "a" must map to an integer >= 1, got 0/,
  );
  await fresh.release();
});

test("SpIEL reselection: the first one moves every index to the top-k |∂L/∂W| of step 1, with moments from the phase's gradients", async () => {
  const { PeftTrainer } = await import("../train.js");
  const { fullFinetuneGradient } = await import("../increlora/testing.js");
  const { randomIds } = await import("../conformance.js");
  const model = await loadTestModel("llama_basic");
  // R = 4, A = 2: the first phase collects steps 1 and 2 and reselects after step 2 with p = 1.
  const cfg = { ...CONFIG, target_modules: ["v_proj"], density: 0.005, reselection_steps: 4, selection_accumulation_steps: 2 };
  const peft = PeftModel.create(model, cfg, { seed: 4 });
  const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" }, totalSteps: 10 });
  const [t0] = sftTargets(peft.info, peft.adapter("default").config as SftConfig);
  const ids = randomIds(2, 6, 100);
  const batch = { inputIds: ids, labels: ids };
  const g1 = await fullFinetuneGradient(model, peft, t0.weight, ids);
  await trainer.train(batch, { lr: 0.01 });
  const g2 = await fullFinetuneGradient(model, peft, t0.weight, ids);
  const before = Int32Array.from(peft.adapter("default").tensors.get(`${t0.key}.sft_delta.indices`)?.data as Int32Array);
  await trainer.train(batch, { lr: 0.01 });
  const a = peft.adapter("default");
  const idx = a.tensors.get(`${t0.key}.sft_delta.indices`)?.data as Int32Array;
  const val = a.tensors.get(`${t0.key}.sft_delta.values`)?.data as Float32Array;
  const want = Array.from(g1.keys())
    .sort((p, q) => Math.abs(g1[q]) - Math.abs(g1[p]) || p - q)
    .slice(0, t0.k)
    .sort((p, q) => p - q);
  assert.deepEqual([...idx], want);
  assert.ok(trainer.controllerMetrics().sft_replaced > 0);
  const state = trainer.step.parameterState(`${t0.key}.sft_delta.values`);
  const kept = new Set(before);
  idx.forEach((p, slot) => {
    if (kept.has(p)) return;
    assert.equal(val[slot], 0, `new slot ${slot} starts at 0`);
    assert.equal((state.update_count.data as Float32Array)[slot], 2);
    const mean = (g1[p] + g2[p]) / 2;
    const m = (state.exp_avg.data as Float32Array)[slot];
    assert.ok(Math.abs(m - mean * (1 - 0.9 ** 2)) < 1e-4 * Math.max(1e-3, Math.abs(mean)), `exp_avg at ${p}: ${m} vs ${mean * 0.19}`);
    const v = (state.exp_avg_sq.data as Float32Array)[slot];
    const meanSq = (g1[p] ** 2 + g2[p] ** 2) / 2;
    assert.ok(Math.abs(v - meanSq * (1 - 0.999 ** 2)) < 1e-3 * meanSq + 1e-12, `exp_avg_sq at ${p}`);
  });
  await trainer.release();
  await model.release();
});
