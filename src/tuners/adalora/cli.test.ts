/**
 * `peftkit train --method adalora` end to end on the embedded model: the flags reach the config,
 * total_step defaults to the run's steps, the budget and kept rank reach metrics.jsonl, the saved
 * folder is PEFT's (tensors cut to rank_pattern) and loads back with the trained outputs, and a run
 * killed with SIGKILL after a checkpoint resumes to the adapter of an uninterrupted run (1e-6).
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { readSafetensors } from "../../io/safetensors.js";
import { runCli } from "../../testing/cli.js";
import {
  assertAdapterChangesOutputs,
  assertSafetensorsClose,
  kindOfTrainArgs,
  MODEL,
  tempDir,
  trainWith,
  writeKindOfData,
} from "../../testing/train-cli.js";

const tmp = tempDir("peftkit-adalora-cli-");
const data = writeKindOfData(tmp);
// 12 steps: 2 warm-up, budget shrinking over steps 3..8 (every 2nd), the final pattern at 9, then fixed.
const ARGS = [
  ...kindOfTrainArgs(data),
  "--max-steps",
  "12",
  "--lr",
  "5e-3",
  "--method",
  "adalora",
  "--target-r",
  "2",
  "--init-r",
  "4",
  "--tinit",
  "2",
  "--tfinal",
  "3",
  "--delta-t",
  "2",
  "--dropout",
  "0.1",
  "--seed",
  "3",
];

const train = trainWith(ARGS);

describe("peftkit train --method adalora", () => {
  test("flags → config, total_step = the run's steps, budget in metrics, PEFT's pruned folder loads back; SIGKILL + --resume is exact", async () => {
    const straight = join(tmp, "straight");
    const r = train(["--save-steps", "4"], straight);
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(straight, "adapter_config.json"), "utf8"));
    assert.deepEqual(
      [cfg.peft_type, cfg.target_r, cfg.init_r, cfg.tinit, cfg.tfinal, cfg.deltaT, cfg.total_step, cfg.lora_alpha],
      ["ADALORA", 2, 4, 2, 3, 2, 12, 8],
    );
    // llama's default targets (q_proj, v_proj) over 4 layers: 8 layers, final budget 2 × 8.
    const pattern = cfg.rank_pattern as Record<string, boolean[]>;
    assert.equal(Object.keys(pattern).length, 8);
    assert.ok(Object.keys(pattern).every((k) => /^model\.layers\.\d\.self_attn\.[qv]_proj\.lora_E$/.test(k)));
    const kept = Object.values(pattern).reduce((n, b) => n + b.filter(Boolean).length, 0);
    assert.equal(kept, 16);
    const file = readSafetensors(join(straight, "adapter_model.safetensors")).tensors;
    for (const [k, bits] of Object.entries(pattern)) {
      const m = k.slice(0, -".lora_E".length);
      const n = bits.filter(Boolean).length;
      assert.deepEqual(file[`base_model.model.${m}.lora_A`].shape, [n, 256], m);
      assert.deepEqual(file[`base_model.model.${m}.lora_E`].shape, [n, 1], m);
    }
    const metrics = readFileSync(join(straight, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((m) => typeof m.loss === "number");
    // PEFT's global_step g = step − 1: 32 while g ≤ tinit = 2, ⌊16·(1 − (g − 2)/7)³ + 16⌋ up to
    // g = total_step − tfinal = 9, then target_bgt 16.
    assert.deepEqual(
      metrics.map((m) => m.adalora_budget),
      [32, 32, 32, 26, 21, 18, 17, 16, 16, 16, 16, 16],
    );
    assert.equal(metrics.at(-1).rank_total, 16);
    assert.ok(
      metrics.every((m) => typeof m.method_loss === "number" && m.method_loss > 0),
      "orthogonal regulariser logged",
    );

    // The folder loads (pruned tensors back among init_r) and gives the model the run ended with.
    await assertAdapterChangesOutputs(MODEL, straight, { moreThan: 1e-4 });

    // Killed at the start of step 11 (checkpoint-8 is the last one), resumed: steps 9-12 replay a
    // masking step (g = 8), the final pattern (g = 9) and two steps masked by it.
    const killed = join(tmp, "killed");
    const k = train(["--save-steps", "4"], killed, { PEFTKIT_FAULT_AT: "train:step#11" });
    assert.equal(k.signal, "SIGKILL", k.stderr);
    assert.ok(existsSync(join(killed, "checkpoint-8")) && !existsSync(join(killed, "adapter_config.json")));
    const again = train(["--save-steps", "4", "--resume"], killed);
    assert.equal(again.code, 0, again.stderr);
    assertSafetensorsClose(join(straight, "adapter_model.safetensors"), join(killed, "adapter_model.safetensors"), () => 1e-6);
    assert.deepEqual(JSON.parse(readFileSync(join(killed, "adapter_config.json"), "utf8")).rank_pattern, pattern);
  });

  test("YAML keys are the flag names (snake_case too): target_r, init_r, delta_t, orth_reg_weight, total_step", () => {
    const out = join(tmp, "yaml");
    const yaml = join(tmp, "adalora.yaml");
    writeFileSync(yaml, "method: adalora\ntarget_r: 3\ninit_r: 5\ndelta_t: 4\north_reg_weight: 0.2\ntotal_step: 40\ntinit: 1\n");
    const r = runCli([
      "train",
      "--config",
      yaml,
      "--model",
      MODEL,
      "--data",
      data,
      "--batch-size",
      "4",
      "--eval-fraction",
      "0",
      "--max-steps",
      "2",
      "--output-dir",
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.deepEqual(
      [cfg.target_r, cfg.init_r, cfg.deltaT, cfg.orth_reg_weight, cfg.total_step, cfg.tinit, cfg.lora_alpha],
      [3, 5, 4, 0.2, 40, 1, 10],
    );
  });
});
