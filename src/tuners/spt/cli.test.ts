/**
 * `peftkit train --method spt` on the embedded model: the calibration pass chooses LoRA modules and
 * single entries under the budget, the resolved choice is in adapter_config.json, and the folder
 * loads back without data; without --calibration-data the run stops with one line.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { CLI } from "../../testing/cli.js";
import { assertAdapterChangesOutputs, MODEL, tempDir, writeKindOfData } from "../../testing/train-cli.js";

const tmp = tempDir("peftkit-spt-cli-");
// Six examples in batches of 3.
const data = writeKindOfData(tmp, 6);
const ARGS = [
  "--model",
  MODEL,
  "--data",
  data,
  "--method",
  "spt",
  "--max-steps",
  "4",
  "--batch-size",
  "3",
  "--eval-fraction",
  "0",
  "--lr",
  "1e-2",
];
const run = (extra: string[], out: string) =>
  spawnSync(process.execPath, [CLI, "train", ...ARGS, ...extra, "--output-dir", out], {
    encoding: "utf8",
    env: { ...process.env, FORCE_COLOR: "0" },
  });

test("peftkit train --method spt: budget split between LoRA modules and entries, saved and reloaded", async () => {
  const out = join(tmp, "spt");
  const r = run(
    ["--calibration-data", data, "--calibration-samples", "6", "--num-tunable-weights", "30000", "--spt-alpha", "10", "--r", "4"],
    out,
  );
  assert.equal(r.status, 0, r.stderr);
  const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
  assert.equal(cfg.peft_type, "SPT");
  assert.equal(cfg.alpha, 10);
  assert.equal(cfg.r, 4);
  const lora = (cfg.structured_modules as string[]).length;
  const entries = Object.values(cfg.num_deltas as Record<string, number>).reduce((a, b) => a + b, 0);
  assert.ok(lora > 0 && entries > 0, `${lora} LoRA modules, ${entries} entries`);
  const args = JSON.parse(readFileSync(join(out, "training_args.json"), "utf8"));
  assert.ok(Math.abs(args.result.trainableParams - 30000) < 4 * 256 * 2, `${args.result.trainableParams} trainable for a 30,000 budget`);
  await assertAdapterChangesOutputs(MODEL, out);
  const bad = run([], join(tmp, "bad"));
  assert.equal(bad.status, 2);
  assert.match(bad.stderr.trim(), /^peftkit: --method spt initialises from data: give --calibration-data FILE/);
});
