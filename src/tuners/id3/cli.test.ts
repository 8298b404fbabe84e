/**
 * `peftkit train --method id3` end to end on the embedded model: the flags reach the config
 * (max_steps from --max-steps), metrics.jsonl's id3_unmasked follows the budget schedule, the
 * saved folder holds sorted int32 positions and loads back, and a run killed with SIGKILL in the
 * middle of the schedule (its selection changes every step) resumes to the adapter of an
 * uninterrupted run (positions exactly, values 1e-6).
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
import { unmaskedAfter } from "./schedule.js";

const tmp = tempDir("peftkit-id3-cli-");
const data = writeKindOfData(tmp);
const ARGS = [
  ...kindOfTrainArgs(data),
  "--max-steps",
  "10",
  "--lr",
  "1e-3",
  "--method",
  "id3",
  "--target",
  "q_proj,v_proj",
  "--id3-budget",
  "333",
  "--id3-exp",
  "1",
  "--seed",
  "3",
];

const train = trainWith(ARGS);

describe("peftkit train --method id3", () => {
  test("flags → config, the unmasking schedule, the folder loads back; SIGKILL + --resume is exact", async () => {
    const straight = join(tmp, "straight");
    const r = train(["--save-steps", "4", "--log-steps", "1"], straight);
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(straight, "adapter_config.json"), "utf8"));
    assert.deepEqual([cfg.peft_type, cfg.budget, cfg.max_steps, cfg.eps, cfg.exp], ["ID3", 333, 10, 1e-3, 1]);
    const unmasked = readFileSync(join(straight, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((m) => typeof m.loss === "number")
      .map((m) => m.id3_unmasked as number);
    assert.deepEqual(
      unmasked,
      Array.from({ length: 10 }, (_, i) => unmaskedAfter(i + 1, 333, 10)),
    );
    assert.match(r.stdout, /id3_unmasked \d+/);
    const file = readSafetensors(join(straight, "adapter_model.safetensors")).tensors;
    const keys = Object.keys(file).sort();
    assert.ok(keys.length > 0 && keys.every((k) => /\.id3\.(indices|values)$/.test(k)), keys.join(", "));
    let nonzero = 0;
    for (const k of keys.filter((x) => x.endsWith(".indices"))) {
      const idx = file[k].data as Int32Array;
      assert.equal(file[k].dtype, "i32");
      for (let i = 1; i < idx.length; i++) assert.ok(idx[i] > idx[i - 1], `${k} is sorted`);
      nonzero += (file[k.replace(/indices$/, "values")].data as Float32Array).filter((v) => v !== 0).length;
    }
    // Entries unmasked after step 10 have not trained yet (the one-step offset).
    assert.equal(nonzero, unmaskedAfter(9, 333, 10));
    await assertAdapterChangesOutputs(MODEL, straight);

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
    const bad = train(["--id3-eps", "0"], join(tmp, "bad"));
    assert.equal(bad.code, 2);
    assert.match(bad.stderr.trim(), /--id3-eps/);
    assert.equal(bad.stderr.trim().split("\n").length, 1);
    const big = train(["--id3-budget", "100000000"], join(tmp, "bad2"));
    assert.equal(big.code, 1);
    assert.match(big.stderr.trim(), /^peftkit: .*budget 100000000 exceeds the \d+ weights of the targeted layers$/);
  });
});
