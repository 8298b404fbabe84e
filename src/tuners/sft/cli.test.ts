/**
 * `peftkit train --method spiel` end to end on the embedded model: the flags reach the config,
 * the index sets move at each reselection (metrics.jsonl's sft_replaced), the saved folder holds
 * sorted int32 indices and their values and loads back, and a run killed with SIGKILL inside a
 * selection phase resumes to the adapter of an uninterrupted run (1e-6; indices exactly).
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

const tmp = tempDir("peftkit-spiel-cli-");
const data = writeKindOfData(tmp);
// Reselections after steps 2 (everything), 6 and 10; phases collect steps 1–2, 4–6, 8–10.
const ARGS = [
  ...kindOfTrainArgs(data),
  "--max-steps",
  "12",
  "--lr",
  "1e-3",
  "--method",
  "spiel",
  "--target",
  "q_proj,v_proj,down_proj",
  "--density",
  "0.002",
  "--reselection-steps",
  "4",
  "--selection-accumulation-steps",
  "2",
  "--seed",
  "3",
];

const train = trainWith(ARGS);

describe("peftkit train --method spiel", () => {
  test("flags → config, index sets move at reselections, the folder loads back; SIGKILL + --resume is exact", async () => {
    const straight = join(tmp, "straight");
    const r = train(["--save-steps", "4", "--log-steps", "1"], straight);
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(straight, "adapter_config.json"), "utf8"));
    assert.deepEqual(
      [cfg.peft_type, cfg.density, cfg.reselection_steps, cfg.selection_accumulation_steps, cfg.initial_reselection_rate],
      ["SFT", 0.002, 4, 2, 0.2],
    );
    const metrics = readFileSync(join(straight, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((m) => typeof m.loss === "number");
    const replaced = metrics.map((m) => m.sft_replaced as number);
    assert.equal(replaced[0], 0);
    assert.ok(replaced[1] > 0, "the first reselection moves indices");
    assert.match(r.stdout, /sft_replaced \d+/);
    const file = readSafetensors(join(straight, "adapter_model.safetensors")).tensors;
    const keys = Object.keys(file).sort();
    assert.ok(keys.length > 0 && keys.every((k) => /\.sft_delta\.(indices|values)$/.test(k)), keys.join(", "));
    for (const k of keys.filter((x) => x.endsWith(".indices"))) {
      const idx = file[k].data as Int32Array;
      assert.equal(file[k].dtype, "i32");
      for (let i = 1; i < idx.length; i++) assert.ok(idx[i] > idx[i - 1], `${k} is sorted`);
    }
    await assertAdapterChangesOutputs(MODEL, straight);

    // Killed at the start of step 7: checkpoint-4 holds an open phase (step 4 collected).
    const killed = join(tmp, "killed");
    const k = train(["--save-steps", "4"], killed, { PEFTKIT_FAULT_AT: "train:step#7" });
    assert.equal(k.signal, "SIGKILL", k.stderr);
    assert.ok(existsSync(join(killed, "checkpoint-4", "controller.safetensors")) && !existsSync(join(killed, "adapter_config.json")));
    const again = train(["--save-steps", "4", "--resume"], killed);
    assert.equal(again.code, 0, again.stderr);
    assertSafetensorsClose(join(straight, "adapter_model.safetensors"), join(killed, "adapter_model.safetensors"), (key) =>
      key.endsWith(".indices") ? 0 : 1e-6,
    );
  });

  test("bad settings are one line each", () => {
    const bad = train(["--density", "1.5"], join(tmp, "bad"));
    assert.equal(bad.code, 2);
    assert.match(bad.stderr.trim(), /--density/);
    assert.equal(bad.stderr.trim().split("\n").length, 1);
    const acc = train(["--selection-accumulation-steps", "3"], join(tmp, "bad2"));
    assert.equal(acc.code, 1);
    assert.match(
      acc.stderr.trim(),
      /^peftkit: adapter config: field "selection_accumulation_steps" \(3\) must be below reselection_steps − 1 \(3\)/,
    );
  });
});
