/**
 * `peftkit train --method corda --calibration-data FILE --calibration-samples N` end to end on the
 * embedded model: progress lines, PEFT's config fields, a resumed run that recomputes the same
 * initialisation (it ends with the weights of an uninterrupted run), and the calibration file's errors.
 */
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { readSafetensors } from "../io/safetensors.js";
import { runCli, writeJsonl } from "../testing/cli.js";
import { REPO_ROOT } from "../testing/paths.js";

const MODEL = join(REPO_ROOT, "models/wordnet-llama");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-calib-cli-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const WORDS = ["dog", "cat", "oak", "rose", "car", "boat", "apple", "pear"];
const data = writeJsonl(
  tmp,
  "train.jsonl",
  Array.from({ length: 24 }, (_, i) => ({ prompt: `a ${WORDS[i % 8]} is a kind of`, completion: ` ${WORDS[(i + 3) % 8]}` })),
);
const calib = writeJsonl(
  tmp,
  "calib.jsonl",
  Array.from({ length: 12 }, (_, i) => ({ text: `the ${WORDS[i % 8]} and the ${WORDS[(3 * i) % 8]} are near the river` })),
);
const TRAIN = [
  "--model",
  MODEL,
  "--data",
  data,
  "--method",
  "corda",
  "--target",
  "q_proj,v_proj",
  "--r",
  "4",
  "--batch-size",
  "4",
  "--eval-fraction",
  "0",
  "--seed",
  "3",
];

describe("peftkit train --method corda", () => {
  test("calibrates with progress, saves PEFT's corda fields, and --resume recomputes the same initialisation", () => {
    const straight = join(tmp, "straight");
    const args = [
      ...TRAIN,
      "--calibration-data",
      calib,
      "--calibration-samples",
      "8",
      "--corda-method",
      "kpm",
      "--max-steps",
      "4",
      "--save-steps",
      "2",
    ];
    const r = runCli(["train", ...args, "--output-dir", straight]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /calibration: input covariances of 8 layer\(s\) on the first 8 examples of .*calib\.jsonl \(2 batches\)/);
    assert.match(r.stdout, /calibration: batch 2\/2 \(8 examples, \d+ tokens\)/);
    const cfg = JSON.parse(readFileSync(join(straight, "adapter_config.json"), "utf8"));
    assert.equal(cfg.peft_type, "LORA");
    assert.equal(cfg.init_lora_weights, "corda");
    assert.equal(cfg.lora_alpha, 4);
    assert.equal(cfg.lora_dropout, 0);
    assert.deepEqual(cfg.corda_config, {
      cache_file: null,
      covariance_file: null,
      corda_method: "kpm",
      verbose: false,
      use_float16_for_covariance: false,
      prune_temporary_fields: true,
    });
    // The same update as plain LoRA for the original base (PEFT's path_initial_model_for_weight_conversion).
    const conv = JSON.parse(readFileSync(join(straight, "converted_lora", "adapter_config.json"), "utf8"));
    assert.equal(conv.r, 8);
    assert.equal(conv.lora_alpha, 8);
    assert.equal(conv.init_lora_weights, true);
    assert.match(r.stdout, /converted_lora\//);
    const args2 = JSON.parse(readFileSync(join(straight, "training_args.json"), "utf8"));
    assert.equal(args2.calibration_samples ?? args2.calibrationSamples, 8);

    // An interrupted copy: only checkpoint-2 is left; resuming recalibrates and must land on the same weights.
    const resumed = join(tmp, "resumed");
    cpSync(straight, resumed, { recursive: true });
    for (const f of ["adapter_config.json", "adapter_model.safetensors", "training_args.json", "checkpoint-4", "converted_lora"])
      rmSync(join(resumed, f), { recursive: true, force: true });
    assert.ok(existsSync(join(resumed, "checkpoint-2")));
    const again = runCli(["train", ...args, "--output-dir", resumed, "--resume"]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /resuming from .*checkpoint-2/);
    const want = readSafetensors(join(straight, "adapter_model.safetensors")).tensors;
    const got = readSafetensors(join(resumed, "adapter_model.safetensors")).tensors;
    for (const [k, t] of Object.entries(want)) assert.deepEqual(got[k].data, t.data, k);
    const wantConv = readSafetensors(join(straight, "converted_lora", "adapter_model.safetensors")).tensors;
    const gotConv = readSafetensors(join(resumed, "converted_lora", "adapter_model.safetensors")).tensors;
    for (const [k, t] of Object.entries(wantConv)) assert.deepEqual(gotConv[k].data, t.data, k);
  });

  test("calibration file errors: missing, too few examples, unreadable records, not given", () => {
    const out = join(tmp, "err");
    const base = [...TRAIN, "--max-steps", "1", "--output-dir", out];
    const missing = runCli(["train", ...base, "--calibration-data", join(tmp, "nope.jsonl")]);
    assert.equal(missing.code, 2);
    assert.equal(missing.stderr.trim(), `peftkit: --calibration-data ${join(tmp, "nope.jsonl")}: no such file or folder`);
    const few = runCli(["train", ...base, "--calibration-data", calib, "--calibration-samples", "50"]);
    assert.equal(few.code, 2);
    assert.equal(
      few.stderr.trim(),
      `peftkit: --calibration-data ${calib}: 12 usable example(s), fewer than the 50 --calibration-samples asks for`,
    );
    const bad = writeJsonl(tmp, "bad.jsonl", [{ foo: 1 }]);
    const wrong = runCli(["train", ...base, "--calibration-data", bad]);
    assert.equal(wrong.code, 1);
    assert.equal(wrong.stderr.trim().split("\n").length, 1);
    assert.match(wrong.stderr, new RegExp(`^peftkit: ${bad.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:1: cannot tell the record format`));
    const none = runCli(["train", ...base]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /--method corda initialises from data: give --calibration-data FILE/);
    // The default is 256 examples, more than the file holds.
    const dflt = runCli(["train", ...base, "--calibration-data", calib]);
    assert.match(dflt.stderr, /12 usable example\(s\), fewer than the 256 --calibration-samples asks for/);
  });
});
