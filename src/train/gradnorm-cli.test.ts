/**
 * `peftkit train --method gradnorm_lorp` end to end on the embedded model: projectors refresh every
 * T steps (metrics.jsonl), the saved tensors load onto the base, a run killed with SIGKILL after a
 * checkpoint and resumed across a refresh ends bit-identical to an uninterrupted one, and bad
 * ranks / gaps are one usage line.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { readSafetensors } from "../io/safetensors.js";
import { AutoModelForCausalLM } from "../models/auto.js";
import { kindOfTrainArgs, MODEL, tempDir, trainWith, writeKindOfData } from "../testing/train-cli.js";
import { applyTrainedTensors } from "./selective-run.js";

const tmp = tempDir("peftkit-gnlorp-cli-");
const data = writeKindOfData(tmp);
const ARGS = [...kindOfTrainArgs(data), "--max-steps", "6", "--lr", "1e-3", "--seed", "3"];
const GN = ["--method", "gradnorm_lorp", "--r", "4", "--gradnorm-update-gap", "3", "--target", "q_proj,down_proj", "--save-steps", "2"];

const train = trainWith(ARGS);

const metrics = (dir: string) =>
  readFileSync(join(dir, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { step: number; loss: number; refresh_svd_s?: number });

describe("peftkit train --method gradnorm_lorp", () => {
  test("refreshes every T steps; saved tensors load onto the base; SIGKILL + --resume across a refresh ends bit-identical", async () => {
    const straight = join(tmp, "straight");
    const r = train(GN, straight);
    assert.equal(r.code, 0, r.stderr);
    const m = metrics(straight);
    assert.deepEqual(
      m.filter((x) => x.refresh_svd_s !== undefined).map((x) => x.step),
      [1, 4],
    );
    const cfg = JSON.parse(readFileSync(join(straight, "selective_config.json"), "utf8"));
    assert.deepEqual(
      [cfg.method, cfg.gradnorm.rank, cfg.gradnorm.update_proj_gap, cfg.gradnorm.targets, cfg.steps],
      ["gradnorm_lorp", 4, 3, 8, 6],
    );
    const file = readSafetensors(join(straight, "trained_tensors.safetensors")).tensors;
    assert.deepEqual(
      Object.keys(file).sort(),
      [0, 1, 2, 3].flatMap((i) => [`model.layers.${i}.mlp.down_proj.weight`, `model.layers.${i}.self_attn.q_proj.weight`]).sort(),
    );
    const base = await AutoModelForCausalLM.fromPretrained(MODEL);
    try {
      const ids = [[5, 17, 99, 300, 42, 7]];
      const before = (await base.forward({ inputIds: ids })).logits?.data as Float32Array;
      applyTrainedTensors(base, straight);
      const afterLoad = (await base.forward({ inputIds: ids })).logits?.data as Float32Array;
      assert.ok(afterLoad.some((v, i) => Math.abs(v - before[i]) > 1e-4));
    } finally {
      await base.release();
    }

    // Killed at the start of step 5: checkpoint-4 is after the refresh at step 4 (0-based 3)...
    // and checkpoint-2 before it; resume from 4 must reuse the saved projector.
    for (const at of [3, 5]) {
      const killed = join(tmp, `killed-${at}`);
      const k = train(GN, killed, { PEFTKIT_FAULT_AT: `train:step#${at}` });
      assert.equal(k.signal, "SIGKILL", k.stderr);
      assert.ok(!existsSync(join(killed, "trained_tensors.safetensors")));
      const again = train([...GN, "--resume"], killed);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, new RegExp(`resuming from .*checkpoint-${at - 1 - ((at - 1) % 2)} `));
      assert.deepEqual(
        metrics(killed).map((x) => x.loss),
        m.map((x) => x.loss),
      );
      const got = readSafetensors(join(killed, "trained_tensors.safetensors")).tensors;
      for (const [key, t] of Object.entries(file)) assert.deepEqual(got[key].data, t.data, key);
    }
  });

  test("bad input: a rank above min(m, n) names the tensor; --gradnorm-update-gap 0 names the flag (exit 2, one line)", () => {
    const bad = train(["--method", "gradnorm_lorp", "--r", "129", "--max-steps", "1"], join(tmp, "bad-r"));
    assert.equal(bad.code, 2, bad.stderr);
    assert.equal(bad.stderr.trim().split("\n").length, 1, bad.stderr);
    assert.match(bad.stderr, /--r: rank 129 exceeds min\(128, 256\) of tensor "model\.layers\.0\.self_attn\.k_proj\.weight"/);
    const gap = train(["--method", "gradnorm_lorp", "--gradnorm-update-gap", "0"], join(tmp, "bad-gap"));
    assert.equal(gap.code, 2, gap.stderr);
    assert.equal(gap.stderr.trim().split("\n").length, 1, gap.stderr);
    assert.match(gap.stderr, /--gradnorm-update-gap/);
  });
});
