/**
 * `peftkit train --method vera / hra` end to end on the embedded model: the flags reach the
 * adapter config, VeRA's folder without save_projection holds only the λ vectors, the run's
 * trainable count leaves out the frozen projections, and the folder loads back.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { SafetensorsFile } from "../../io/safetensors.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { CLI } from "../../testing/cli.js";
import { MODEL, tempDir, writeKindOfData } from "../../testing/train-cli.js";
import { PeftModel } from "../peft-model.js";

const tmp = tempDir("peftkit-verahra-cli-");
const data = writeKindOfData(tmp);
const COMMON = ["--model", MODEL, "--data", data, "--batch-size", "4", "--eval-fraction", "0", "--max-steps", "2", "--save-steps", "0"];

function train(args: string[], out: string): void {
  const r = spawnSync(process.execPath, [CLI, "train", ...COMMON, ...args, "--output-dir", out], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
}

function savedNames(dir: string): string[] {
  const f = SafetensorsFile.open(join(dir, "adapter_model.safetensors"));
  try {
    return f.entries.map((e) => e.name);
  } finally {
    f.close();
  }
}

describe("peftkit train --method vera / hra", () => {
  test("vera: r, key, d_initial and save_projection from flags; λ-only folder; trainable count without the projections", async () => {
    const out = join(tmp, "vera");
    train(["--method", "vera", "--r", "16", "--projection-prng-key", "5", "--d-initial", "0.2", "--save-projection", "false"], out);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.deepEqual(
      [cfg.peft_type, cfg.r, cfg.projection_prng_key, cfg.d_initial, cfg.save_projection, cfg.target_modules],
      ["VERA", 16, 5, 0.2, false, "all-linear"],
    );
    assert.ok(savedNames(out).every((n) => n.includes(".vera_lambda_")));
    // wordnet-llama: 4 layers × (λ_b: q 256 + k 128 + v 128 + o 256 + gate 688 + up 688 + down 256, λ_d: 7 × 16).
    const args = JSON.parse(readFileSync(join(out, "training_args.json"), "utf8"));
    assert.equal(args.result.trainableParams, 4 * (2400 + 7 * 16));
    const model = await AutoModelForCausalLM.fromPretrained(MODEL);
    const peft = PeftModel.fromPretrained(model, out);
    assert.deepEqual(peft.adapter("default").tensors.get("base_model.vera_A")?.shape, [16, 688]);
    await model.release();
  });

  test("vera without saved projections resumes from a checkpoint (the projections are rebuilt, not trained)", async () => {
    const out = join(tmp, "vera-resume");
    const flags = ["--method", "vera", "--r", "8", "--save-projection", "false", "--lr", "5e-2"];
    const first = spawnSync(
      process.execPath,
      [CLI, "train", ...COMMON.slice(0, -4), "--max-steps", "3", "--save-steps", "1", ...flags, "--output-dir", out],
      {
        encoding: "utf8",
      },
    );
    assert.equal(first.status, 0, first.stderr);
    const straight = readFileSync(join(out, "adapter_model.safetensors"));
    // Drop the final adapter and the last checkpoint, then resume from step 2.
    rmSync(join(out, "checkpoint-3"), { recursive: true, force: true });
    rmSync(join(out, "adapter_model.safetensors"));
    const again = spawnSync(
      process.execPath,
      [CLI, "train", ...COMMON.slice(0, -4), "--max-steps", "3", "--save-steps", "1", ...flags, "--output-dir", out, "--resume"],
      {
        encoding: "utf8",
      },
    );
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stdout + again.stderr, /checkpoint-2/);
    assert.deepEqual(readFileSync(join(out, "adapter_model.safetensors")), straight);
  });

  test("hra: r and apply_GS from flags", () => {
    const out = join(tmp, "hra");
    train(["--method", "hra", "--r", "2", "--apply-gs", "--target", "q_proj,v_proj"], out);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.deepEqual([cfg.peft_type, cfg.r, cfg.apply_GS, [...cfg.target_modules].sort()], ["HRA", 2, true, ["q_proj", "v_proj"]]);
    assert.ok(savedNames(out).every((n) => n.endsWith(".hra_u")));
  });
});
