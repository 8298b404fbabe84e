import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, test } from "node:test";
import { PACKAGE_ROOT } from "../util/paths.js";
import type { PlannedRun } from "./plan.js";
import { trainArgs } from "./runner.js";

const ENCODER = join(PACKAGE_ROOT, "models/wordnet-bert");
const DECODER = join(PACKAGE_ROOT, "models/wordnet-llama");

function run(method: string, model: string): PlannedRun {
  return {
    runId: "t.x",
    task: { name: "t", description: "", model, train: "train.jsonl", eval: "eval.jsonl", metric: "accuracy" },
    method,
    config: { knob: null, value: null },
    budget: null,
    seed: 0,
    settings: { lr: 1e-3, maxSteps: 10, runSeconds: null, batchSize: 4, maxLength: 64, warmup: 0.1 },
  };
}

const targetOf = (a: string[]) => (a.includes("--target") ? a[a.indexOf("--target") + 1] : null);

describe("compare's training arguments", () => {
  test("LN tuning on a RoBERTa (no PEFT default) tunes its LayerNorms; on llama it keeps PEFT's defaults", () => {
    assert.equal(targetOf(trainArgs(run("ln_tuning", ENCODER), { outputDir: "o" })), "LayerNorm");
    assert.equal(targetOf(trainArgs(run("ln_tuning", DECODER), { outputDir: "o" })), null);
    assert.equal(targetOf(trainArgs(run("lora", ENCODER), { outputDir: "o" })), null);
  });

  test("the warmup reaches peftkit train", () => {
    const a = trainArgs(run("lora", DECODER), { outputDir: "o" });
    assert.equal(a[a.indexOf("--warmup") + 1], "0.1");
  });

  test("corda calibrates on the task's training file unless --calibration-data names one; other methods get no calibration flags", () => {
    const flag = (a: string[], f: string) => (a.includes(f) ? a[a.indexOf(f) + 1] : null);
    const dflt = trainArgs(run("corda", DECODER), { outputDir: "o" });
    assert.equal(flag(dflt, "--calibration-data"), "train.jsonl");
    assert.equal(flag(dflt, "--calibration-samples"), null);
    const own = trainArgs(run("corda", DECODER), { outputDir: "o", calibrationData: "/data/qa.jsonl", calibrationSamples: 64 });
    assert.equal(flag(own, "--calibration-data"), "/data/qa.jsonl");
    assert.equal(flag(own, "--calibration-samples"), "64");
    assert.equal(flag(trainArgs(run("lora", DECODER), { outputDir: "o", calibrationData: "/data/qa.jsonl" }), "--calibration-data"), null);
  });
});
