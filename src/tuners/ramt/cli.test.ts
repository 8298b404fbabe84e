/**
 * `peftkit train --method ramt` end to end on the embedded model: the flags reach the config, the
 * folder holds U8 bit-packed masks that load back, masks flip during the run, and a run killed
 * with SIGKILL resumes to the scores (and Adam state) of an uninterrupted run, bit for bit.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { readSafetensors, SafetensorsFile } from "../../io/safetensors.js";
import { assertAdapterChangesOutputs, kindOfTrainArgs, MODEL, tempDir, trainWith, writeKindOfData } from "../../testing/train-cli.js";

const tmp = tempDir("peftkit-ramt-cli-");
const data = writeKindOfData(tmp);
// lr 1e-2: Adam moves a score by ~lr per step, so entries cross τ = 5e-3 within the run.
const ARGS = [
  ...kindOfTrainArgs(data),
  "--max-steps",
  "6",
  "--lr",
  "1e-2",
  "--method",
  "ramt",
  "--target",
  "q_proj,o_proj",
  "--ramt-lambda",
  "0.5",
  "--seed",
  "3",
];

const train = trainWith(ARGS);

describe("peftkit train --method ramt", () => {
  test("flags → config, U8 packed masks that load back; SIGKILL + --resume is exact", async () => {
    const straight = join(tmp, "straight");
    const r = train(["--save-steps", "3"], straight);
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(straight, "adapter_config.json"), "utf8"));
    assert.deepEqual(
      [cfg.peft_type, cfg.threshold, cfg.mask_scale, cfg.grad_drop_lambda, cfg.mask_loss_weight, cfg.save_scores],
      ["RAMT", 5e-3, 1e-2, 0.5, 1e-4, false],
    );
    const f = SafetensorsFile.open(join(straight, "adapter_model.safetensors"));
    const entries = f.entries.map((e) => [e.name, e.dtype, e.shape.join("x")]);
    f.close();
    // wordnet-llama: q_proj [256, 256] → 8192 bytes, o_proj the same; 4 layers.
    assert.equal(entries.length, 8);
    for (const [name, dtype, shape] of entries) {
      assert.match(name, /\.(q_proj|o_proj)\.ramt_mask$/);
      assert.deepEqual([dtype, shape], ["U8", "8192"]);
    }
    const scores = readSafetensors(join(straight, "checkpoint-6", "adapter_state.safetensors")).tensors;
    let off = 0;
    for (const t of Object.values(scores)) for (const v of t.data as Float32Array) if (!(v > 5e-3)) off++;
    assert.ok(off > 0, "some masks switched off");
    await assertAdapterChangesOutputs(MODEL, straight, { message: "the masks change the outputs" });

    // Killed at the start of step 5: checkpoint-3 holds the scores and the Adam state.
    const killed = join(tmp, "killed");
    const k = train(["--save-steps", "3"], killed, { PEFTKIT_FAULT_AT: "train:step#5" });
    assert.equal(k.signal, "SIGKILL", k.stderr);
    assert.ok(existsSync(join(killed, "checkpoint-3", "adapter_state.safetensors")) && !existsSync(join(killed, "adapter_config.json")));
    const again = train(["--save-steps", "3", "--resume"], killed);
    assert.equal(again.code, 0, again.stderr);
    for (const file of [
      "adapter_model.safetensors",
      join("checkpoint-6", "adapter_state.safetensors"),
      join("checkpoint-6", "optimizer.safetensors"),
    ]) {
      const want = readSafetensors(join(straight, file)).tensors;
      const got = readSafetensors(join(killed, file)).tensors;
      assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort(), file);
      for (const [key, t] of Object.entries(want)) assert.deepEqual(got[key].data, t.data, `${file}: ${key}`);
    }
  });

  test("bad settings are one line each", () => {
    const tau = train(["--ramt-threshold", "0.02"], join(tmp, "bad"));
    assert.equal(tau.code, 1);
    assert.match(
      tau.stderr.trim(),
      /^peftkit: adapter config: field "threshold" must be below mask_scale \(0\.01\), or every mask starts off, got 0\.02$/,
    );
    const lambda = train(["--ramt-lambda", "1.5"], join(tmp, "bad2"));
    assert.equal(lambda.code, 2);
    assert.equal(lambda.stderr.trim(), "peftkit: peftkit train: --ramt-lambda must be in [0, 1], got 1.5");
  });
});
