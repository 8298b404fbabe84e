/**
 * `peftkit train --method fourierft` end to end on the embedded model: flags and YAML keys reach the
 * adapter config, the folder holds only the spectra, the trainable count is n per layer, the folder
 * loads back, and an n_frequency larger than a layer is refused in one line.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { SafetensorsFile } from "../../io/safetensors.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { CLI } from "../../testing/cli.js";
import { MODEL, tempDir, writeKindOfData } from "../../testing/train-cli.js";
import { PeftModel } from "../peft-model.js";

const tmp = tempDir("peftkit-fourierft-cli-");
const data = writeKindOfData(tmp);
const COMMON = ["--model", MODEL, "--data", data, "--batch-size", "4", "--eval-fraction", "0", "--max-steps", "2", "--save-steps", "0"];

function run(args: string[]) {
  return spawnSync(process.execPath, [CLI, "train", ...COMMON, ...args], { encoding: "utf8" });
}

function savedNames(dir: string): string[] {
  const f = SafetensorsFile.open(join(dir, "adapter_model.safetensors"));
  try {
    return f.entries.map((e) => e.name);
  } finally {
    f.close();
  }
}

describe("peftkit train --method fourierft", () => {
  test("n_frequency, scaling and random_loc_seed from flags; spectra-only folder; n trainable per layer; loads back", async () => {
    const out = join(tmp, "flags");
    const r = run([
      "--method",
      "fourierft",
      "--n-frequency",
      "64",
      "--fourier-scaling",
      "30",
      "--random-loc-seed",
      "5",
      "--lr",
      "1e-2",
      "--output-dir",
      out,
    ]);
    assert.equal(r.status, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.deepEqual(
      [cfg.peft_type, cfg.n_frequency, cfg.scaling, cfg.random_loc_seed, cfg.init_weights, cfg.target_modules],
      ["FOURIERFT", 64, 30, 5, false, "all-linear"],
    );
    const names = savedNames(out);
    assert.equal(names.length, 4 * 7);
    assert.ok(names.every((n) => n.endsWith(".fourierft_spectrum")));
    const args = JSON.parse(readFileSync(join(out, "training_args.json"), "utf8"));
    assert.equal(args.result.trainableParams, 4 * 7 * 64);
    const model = await AutoModelForCausalLM.fromPretrained(MODEL);
    const peft = PeftModel.fromPretrained(model, out);
    assert.deepEqual(peft.adapter("default").tensors.get("model.layers.3.mlp.down_proj.fourierft_spectrum")?.shape, [64]);
    await model.release();
  });

  test("YAML keys n_frequency / fourier_scaling / random_loc_seed; an n_frequency larger than a layer is one line naming it", () => {
    const yaml = join(tmp, "train.yaml");
    writeFileSync(yaml, "method: fourierft\nn_frequency: 32\nfourier_scaling: 12.5\nrandom_loc_seed: 9\ntarget: [q_proj, v_proj]\n");
    const out = join(tmp, "yaml");
    const r = run(["--config", yaml, "--output-dir", out]);
    assert.equal(r.status, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.deepEqual(
      [cfg.n_frequency, cfg.scaling, cfg.random_loc_seed, [...cfg.target_modules].sort()],
      [32, 12.5, 9, ["q_proj", "v_proj"]],
    );
    // wordnet-llama's v_proj is [128, 256]: 32768 entries.
    const big = run(["--method", "fourierft", "--n-frequency", "40000", "--target", "v_proj", "--output-dir", join(tmp, "big")]);
    assert.equal(big.status, 1);
    assert.match(big.stderr, /n_frequency = 40000 exceeds the 128x256 = 32768 entries of "model\.layers\.0\.self_attn\.v_proj"/);
    assert.equal(big.stderr.trim().split("\n").length, 1, big.stderr);
  });
});
