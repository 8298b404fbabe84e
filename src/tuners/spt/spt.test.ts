import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { configFlag } from "../../train/methods.js";
import { loadTestModel, runConformance } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import type { SptConfig } from "./config.js";
import { allocate } from "./select.js";
import { sptStats } from "./testing.js";

describe("SPT's allocation", () => {
  test("a matrix with n_s ≥ n_struct/α sensitive entries gets LoRA, the others their entries; τ brings the total closest to the budget", () => {
    // a: 10 entries all highly sensitive (LoRA costs 4, α = 2: structured from 2 entries);
    // b: one high entry among small ones (LoRA costs 40).
    const a = { key: "a", scores: Array.from({ length: 10 }, (_, i) => 10 + i), structuredSize: 4 };
    const b = { key: "b", scores: [0.1, 9, 0.2, 0.3, 5, 0.05], structuredSize: 40 };
    // Budget 6: τ = 2 gives a → LoRA (4) + nothing of b; τ = 3..: a LoRA (4) + b's 9 (1) = 5 … closest: b's 9 and 5 → 6.
    const al = allocate([a, b], 6, 2);
    assert.deepEqual(al.structured, ["a"]);
    assert.deepEqual([...(al.entries.get("b") ?? [])], [1, 4]);
    assert.equal(al.total, 6);
    // A budget below any LoRA: only single entries, the largest scores first.
    const small = allocate([a, b], 1, 0.5);
    assert.deepEqual(small.structured, []);
    assert.deepEqual([...(small.entries.get("a") ?? [])], [9]);
    assert.equal(small.total, 1);
  });
});

// α = 0.5: LoRA only where at least twice its size is sensitive, which only the hot matrix reaches.
const CONFIG = { peft_type: "SPT", target_modules: ["q_proj", "v_proj", "down_proj"], r: 2, alpha: 0.5, num_tunable_weights: 700 };
const model0 = await loadTestModel("llama_basic");
const calib = sptStats(model0, CONFIG, ["layers.0.self_attn.q_proj"], 7);
await model0.release();

runConformance({
  name: "SPT",
  model: "llama_basic",
  identityConfig: CONFIG,
  config: { ...CONFIG, init_weights: false },
  calibration: calib,
});

test("SPT: the hot matrix gets LoRA, the rest single entries; the resolved choice is saved and reloads without data", async () => {
  const model = await loadTestModel("llama_basic");
  const peft = PeftModel.create(model, CONFIG, { seed: 1, calibration: calib });
  const c = peft.adapter("default").config as SptConfig;
  assert.deepEqual(c.structuredModules, ["model.layers.0.self_attn.q_proj"]);
  const entries = Object.values(c.numDeltas ?? {}).reduce((a, b) => a + b, 0);
  // q_proj 32×32 at r = 2: 128 LoRA parameters; the rest of the 700 as entries (± one tie).
  assert.ok(Math.abs(128 + entries - 700) <= 1, `${128 + entries}`);
  assert.ok(!Object.hasOwn(c.numDeltas ?? {}, "model.layers.0.self_attn.q_proj"));
  assert.throws(() => peft.addAdapter("again", CONFIG, { seed: 1 }), /--calibration-data/);
  const { mkdtempSync, rmSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const dir = mkdtempSync(join(tmpdir(), "peftkit-spt-"));
  const trained = PeftModel.create(await loadTestModel("llama_basic"), { ...CONFIG, init_weights: false }, { seed: 2, calibration: calib });
  trained.savePretrained(dir);
  const ids = [[3, 9, 27, 81, 4, 12]];
  const want = (await trained.forward({ inputIds: ids })).logits?.data as Float32Array;
  const base2 = await loadTestModel("llama_basic");
  const loaded = PeftModel.fromPretrained(base2, dir);
  const got = (await loaded.forward({ inputIds: ids })).logits?.data as Float32Array;
  assert.ok(
    want.every((v, i) => Math.abs(v - got[i]) < 1e-5),
    "reloaded without calibration data, same outputs",
  );
  rmSync(dir, { recursive: true, force: true });
  await model.release();
  await base2.release();
});

test("SPT: a checkpoint's alpha is named as --spt-alpha in resume messages, LyCORIS's as --alpha", () => {
  assert.equal(configFlag("alpha", 16, "SPT"), "--spt-alpha 16");
  assert.equal(configFlag("alpha", 6, "LOHA"), "--alpha 6");
});
