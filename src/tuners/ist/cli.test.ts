/**
 * `peftkit train --method ist` end to end on the embedded model (4 layers): the flags reach the
 * run, importance rounds happen every --ist-interval steps (metrics.jsonl's ist_trial_loss), the
 * saved folder is plain PEFT LoRA and loads back as LoRA, and a run killed with SIGKILL between
 * rounds resumes to the adapter of an uninterrupted run (1e-6), with the same round losses.
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

const tmp = tempDir("peftkit-ist-cli-");
const data = writeKindOfData(tmp);
// Rounds after steps 3, 6, 9, 12 on importance batches of 3 (cycled over the 8 examples).
const ARGS = [
  ...kindOfTrainArgs(data),
  "--max-steps",
  "12",
  "--lr",
  "1e-2",
  "--method",
  "ist",
  "--target",
  "q_proj,v_proj,down_proj",
  "--ist-interval",
  "3",
  "--ist-batch-size",
  "3",
  "--ist-update-fraction",
  "0.5",
  // At this model's loss (~10) the rewards exp(−loss) differ by ~1e-6: a large step lets the
  // scores move the draws, so a resume that lost them would show.
  "--ist-score-lr",
  "1e6",
  "--seed",
  "3",
];

const train = trainWith(ARGS);

const trialLosses = (dir: string) =>
  readFileSync(join(dir, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))
    .filter((m) => typeof m.loss === "number")
    .map((m) => (m.ist_trial_loss as number | undefined) ?? null);

describe("peftkit train --method ist", () => {
  test("rounds every --ist-interval steps, a plain LoRA folder that loads back; SIGKILL + --resume is exact", async () => {
    const straight = join(tmp, "straight");
    const r = train(["--save-steps", "4", "--log-steps", "1"], straight);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /training IST on 8 examples/);
    const cfg = JSON.parse(readFileSync(join(straight, "adapter_config.json"), "utf8"));
    assert.equal(cfg.peft_type, "LORA");
    assert.ok(!Object.keys(cfg).some((k) => /fraction|interval|trials|score/.test(k)), Object.keys(cfg).join(", "));
    const losses = trialLosses(straight);
    assert.equal(losses.length, 12);
    // A round's mean trial loss shows from its step on and changes at the next round.
    assert.deepEqual(
      losses.map((l) => l === null),
      [true, true, false, false, false, false, false, false, false, false, false, false],
    );
    assert.ok(losses[2] !== losses[5] && losses[5] !== losses[8] && losses[8] !== losses[11]);
    const file = readSafetensors(join(straight, "adapter_model.safetensors")).tensors;
    const keys = Object.keys(file).sort();
    assert.ok(keys.length === 4 * 3 * 2 && keys.every((k) => /\.lora_[AB]\.weight$/.test(k)), keys.join(", "));
    await assertAdapterChangesOutputs(MODEL, straight, { inspect: (peft) => assert.equal(peft.adapter("default").tuner.peftType, "LORA") });

    // Killed at the start of step 7: checkpoint-4 holds the scores of the round after step 3.
    const killed = join(tmp, "killed");
    const k = train(["--save-steps", "4"], killed, { PEFTKIT_FAULT_AT: "train:step#7" });
    assert.equal(k.signal, "SIGKILL", k.stderr);
    const ctl = readSafetensors(join(killed, "checkpoint-4", "controller.safetensors"));
    const state = JSON.parse(ctl.metadata.state ?? "null");
    assert.equal(state.rounds, 1);
    assert.ok(state.scores.length === 4 && state.scores.some((s: number) => Math.abs(s) > 0.1), JSON.stringify(state.scores));
    assert.ok(!existsSync(join(killed, "adapter_config.json")));
    const again = train(["--save-steps", "4", "--resume"], killed);
    assert.equal(again.code, 0, again.stderr);
    assertSafetensorsClose(join(straight, "adapter_model.safetensors"), join(killed, "adapter_model.safetensors"), () => 1e-6);
    const resumed = trialLosses(killed);
    resumed.forEach((l, i) => {
      assert.ok(l === losses[i] || Math.abs((l as number) - (losses[i] as number)) <= 1e-6, `step ${i + 1}: ${l} vs ${losses[i]}`);
    });
  });

  test("bad settings are one line naming the flag", () => {
    for (const [flag, value] of [
      ["--ist-update-fraction", "1.5"],
      ["--ist-suppress-fraction", "0"],
      ["--ist-interval", "0"],
    ]) {
      const bad = train([flag, value], join(tmp, "bad"));
      assert.equal(bad.code, 2);
      assert.equal(bad.stderr.trim().split("\n").length, 1, bad.stderr);
      assert.match(bad.stderr, new RegExp(`${flag} must be`));
    }
  });
});
