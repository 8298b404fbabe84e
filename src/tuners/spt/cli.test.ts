/**
 * `peftkit train --method spt` on the embedded model: the calibration pass chooses LoRA modules and
 * single entries under the budget, the resolved choice is in adapter_config.json, and the folder
 * loads back without data; without --calibration-data the run stops with one line.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { PeftModel } from "../peft-model.js";

const CLI = join(REPO_ROOT, "dist/src/cli/main.js");
const MODEL = join(REPO_ROOT, "models/wordnet-llama");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-spt-cli-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const data = join(tmp, "train.jsonl");
writeFileSync(
  data,
  `${["dog animal", "oak tree", "rose flower", "car vehicle", "pear fruit", "bus vehicle"]
    .map((s) => {
      const [w, k] = s.split(" ");
      return JSON.stringify({ prompt: `a ${w} is a kind of`, completion: ` ${k}` });
    })
    .join("\n")}\n`,
);
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
  const base = await AutoModelForCausalLM.fromPretrained(MODEL);
  try {
    const peft = PeftModel.fromPretrained(base, out);
    const ids = [[5, 17, 99, 300, 42, 7]];
    const on = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    const off = (await peft.disableAdapter(() => peft.forward({ inputIds: ids }))).logits?.data as Float32Array;
    assert.ok(
      on.some((v, i) => Math.abs(v - off[i]) > 1e-5),
      "the adapter changes the outputs",
    );
  } finally {
    await base.release();
  }
  const bad = run([], join(tmp, "bad"));
  assert.equal(bad.status, 2);
  assert.match(bad.stderr.trim(), /^peftkit: --method spt initialises from data: give --calibration-data FILE/);
});
