import assert from "node:assert/strict";
import { test } from "node:test";
import { loadTestModel, runConformance } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import { sftTargets, totalParameters } from "./layers.js";
import type { SftConfig } from "./config.js";

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
  assert.throws(() => PeftModel.create(fresh, { ...CONFIG, num_tunable_weights: 10 ** 9 }), /exceed the \d+ weights of the targeted layers/);
  await fresh.release();
});
