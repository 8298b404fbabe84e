/**
 * `peftkit train --method increlora` end to end on the embedded model: the flags reach the config,
 * rank_total grows round by round in metrics.jsonl up to the budget, the saved folder holds each
 * module's existing triplets and loads back with the trained outputs, and a run killed with
 * SIGKILL between rounds resumes to the adapter of an uninterrupted run (1e-6).
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { readSafetensors } from "../../io/safetensors.js";
import {
  assertAdapterChangesOutputs,
  assertSafetensorsClose,
  kindOfTrainArgs,
  MODEL,
  tempDir,
  trainWith,
  writeKindOfData,
} from "../../testing/train-cli.js";

const tmp = tempDir("peftkit-increlora-cli-");
const data = writeKindOfData(tmp);
// q_proj and v_proj of 4 layers: 8 modules from rank 1 to a budget of 2 × 8; rounds of 3 modules
// after the updates of steps 5, 7, 9 (global steps 4, 6, 8 > init_warmup 2, every 2nd).
const ARGS = [
  ...kindOfTrainArgs(data),
  "--max-steps",
  "12",
  "--lr",
  "2e-2",
  "--method",
  "increlora",
  "--target",
  "q_proj,v_proj",
  "--target-r",
  "2",
  "--init-r",
  "1",
  "--init-warmup",
  "2",
  "--incre-interval",
  "2",
  "--top-h",
  "3",
  "--dropout",
  "0.1",
  "--seed",
  "3",
];

const train = trainWith(ARGS);

describe("peftkit train --method increlora", () => {
  test("flags → config, rank_total grows to the budget, the folder holds existing triplets and loads back; SIGKILL + --resume is exact", async () => {
    const straight = join(tmp, "straight");
    const r = train(["--save-steps", "4", "--log-steps", "1"], straight);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /step 5\/12 loss \d+\.\d{4} method_loss \S+ rank_total 11 /);
    const cfg = JSON.parse(readFileSync(join(straight, "adapter_config.json"), "utf8"));
    assert.deepEqual(
      [cfg.peft_type, cfg.init_r, cfg.target_r, cfg.init_warmup, cfg.incre_interval, cfg.top_h, cfg.lora_alpha],
      ["INCRELORA", 1, 2, 2, 2, 3, 4],
    );
    const metrics = readFileSync(join(straight, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((m) => typeof m.loss === "number");
    assert.deepEqual(
      metrics.map((m) => m.rank_total),
      [8, 8, 8, 8, 11, 11, 14, 14, 16, 16, 16, 16],
    );
    const ranks = cfg.rank_pattern as Record<string, number>;
    const triplets = cfg.triplet_pattern as Record<string, number>;
    assert.equal(Object.keys(ranks).length, 8);
    assert.equal(
      Object.values(ranks).reduce((a, b) => a + b, 0),
      16,
    );
    const file = readSafetensors(join(straight, "adapter_model.safetensors")).tensors;
    for (const [m, n] of Object.entries(triplets)) {
      // Active ranks plus one reserved triplet (its E zeroed when the budget was reached).
      assert.equal(n, ranks[m] + 1, m);
      assert.deepEqual(file[`base_model.model.${m}.increlora_A.weight`].shape, [n, 256], m);
      assert.deepEqual(file[`base_model.model.${m}.increlora_B.weight`].shape[1], n, m);
      assert.equal((file[`base_model.model.${m}.increlora_E`].data as Float32Array)[n - 1], 0, m);
      assert.equal((file[`base_model.model.${m}.increlora_ranknum`].data as Float32Array)[0], ranks[m], m);
    }
    await assertAdapterChangesOutputs(MODEL, straight, { moreThan: 1e-4 });

    // Killed at the start of step 7 (checkpoint-4 is the last one): the resumed run replays the
    // rounds after steps 5 and 7 from the checkpointed importance averages.
    const killed = join(tmp, "killed");
    const k = train(["--save-steps", "4"], killed, { PEFTKIT_FAULT_AT: "train:step#7" });
    assert.equal(k.signal, "SIGKILL", k.stderr);
    assert.ok(existsSync(join(killed, "checkpoint-4", "controller.safetensors")) && !existsSync(join(killed, "adapter_config.json")));
    const again = train(["--save-steps", "4", "--resume"], killed);
    assert.equal(again.code, 0, again.stderr);
    assertSafetensorsClose(join(straight, "adapter_model.safetensors"), join(killed, "adapter_model.safetensors"), () => 1e-6);
    assert.deepEqual(JSON.parse(readFileSync(join(killed, "adapter_config.json"), "utf8")).rank_pattern, ranks);
  });

  test("bad settings are one line each", () => {
    const bad = train(["--target-r", "1", "--init-r", "1"], join(tmp, "bad"));
    assert.equal(bad.code, 1);
    assert.match(
      bad.stderr.trim(),
      /^peftkit: adapter config: field "target_r" \(1\) must exceed the initial rank init_r \(1\): IncreLoRA only grows ranks$/,
    );
    assert.equal(bad.stderr.trim().split("\n").length, 1);
  });
});
