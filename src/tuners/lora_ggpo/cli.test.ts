/**
 * `peftkit train --method lora_ggpo` end to end on the embedded model: the flags reach the adapter
 * config, the folder holds LoRA's tensors only, metrics.jsonl logs the perturbation's mean std,
 * the perturbation changes training, and a run resumed from checkpoint 1 of 3 (the scales come back from
 * adapter_state.safetensors) ends byte-identical to the straight run.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { SafetensorsFile } from "../../io/safetensors.js";
import { CLI } from "../../testing/cli.js";
import { MODEL, tempDir, writeKindOfData } from "../../testing/train-cli.js";
import { configFlag } from "../../train/methods.js";

const tmp = tempDir("peftkit-ggpo-cli-");
const data = writeKindOfData(tmp);
const COMMON = ["--model", MODEL, "--data", data, "--batch-size", "4", "--eval-fraction", "0", "--max-steps", "3", "--lr", "5e-2"];

function train(args: string[], out: string): { stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, "train", ...COMMON, ...args, "--output-dir", out], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return r;
}

describe("peftkit train --method lora_ggpo", () => {
  test("flags reach the config; LoRA tensors only; ggpo_std logged; differs from LoRA; resume from checkpoint-1 ends byte-identical", () => {
    const flags = ["--method", "lora_ggpo", "--r", "4", "--ggpo-sigma", "0.5", "--ggpo-beta", "2", "--target", "q_proj,v_proj"];
    const out = join(tmp, "ggpo");
    train([...flags, "--save-steps", "1", "--save-total-limit", "3"], out);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.deepEqual([cfg.peft_type, cfg.r, cfg.ggpo_sigma, cfg.ggpo_beta], ["LORA_GGPO", 4, 0.5, 2]);
    const f = SafetensorsFile.open(join(out, "adapter_model.safetensors"));
    const names = f.entries.map((e) => e.name);
    f.close();
    assert.equal(names.length, 4 * 2 * 2);
    assert.ok(
      names.every((n) => /\.lora_[AB]\.weight$/.test(n)),
      names.join(", "),
    );
    const records = readFileSync(join(out, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((x) => x.loss !== undefined);
    assert.equal(records.length, 3);
    assert.ok(
      records.every((x) => x.ggpo_std > 0),
      JSON.stringify(records),
    );
    const straight = readFileSync(join(out, "adapter_model.safetensors"));

    // The same run as plain LoRA: the first step matches (σ starts at 0), the end does not.
    const lora = join(tmp, "lora");
    train(["--method", "lora", "--r", "4", "--target", "q_proj,v_proj", "--save-steps", "0"], lora);
    assert.notDeepEqual(readFileSync(join(lora, "adapter_model.safetensors")), straight);

    // As after a SIGKILL during step 2: no final adapter, only checkpoint-1. Steps 2 and 3 both
    // run after the resume, so step 3's σ comes from the resumed controller.
    rmSync(join(out, "checkpoint-3"), { recursive: true, force: true });
    rmSync(join(out, "checkpoint-2"), { recursive: true, force: true });
    rmSync(join(out, "adapter_model.safetensors"));
    const again = train([...flags, "--save-steps", "1", "--save-total-limit", "3", "--resume"], out);
    assert.match(again.stdout + again.stderr, /checkpoint-1/);
    assert.deepEqual(readFileSync(join(out, "adapter_model.safetensors")), straight);
    assert.deepEqual(
      [configFlag("peft_type", "LORA_GGPO"), configFlag("ggpo_sigma", 0.5), configFlag("ggpo_beta", 2)],
      ["--method lora_ggpo", "--ggpo-sigma 0.5", "--ggpo-beta 2"],
    );
  });
});
