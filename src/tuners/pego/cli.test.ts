/**
 * `peftkit train --method pego` end to end on the embedded model: the YAML keys and flags reach
 * the adapter config, metrics.jsonl logs the regulariser, the folder holds the group's tensors
 * and loads back; configFlag names the flags.
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
import { configFlag } from "../../train/methods.js";
import { PeftModel } from "../peft-model.js";

const tmp = tempDir("peftkit-pego-cli-");
const data = writeKindOfData(tmp);

describe("peftkit train --method pego", () => {
  test("YAML keys and flags reach the config; method_loss is logged; 2 modules of rank 2 per layer are saved and load back", async () => {
    const out = join(tmp, "pego");
    const yaml = join(tmp, "train.yaml");
    writeFileSync(yaml, ["method: pego", "pego_loras: 2", "pego_lambda: 0.01", "r: 2", "dropout: 0", "target: q_proj,v_proj"].join("\n"));
    const r = spawnSync(
      process.execPath,
      [
        CLI,
        "train",
        "--config",
        yaml,
        "--model",
        MODEL,
        "--data",
        data,
        "--batch-size",
        "4",
        "--eval-fraction",
        "0",
        "--max-steps",
        "2",
        "--save-steps",
        "0",
        "--output-dir",
        out,
      ],
      { encoding: "utf8" },
    );
    assert.equal(r.status, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.deepEqual(
      [cfg.peft_type, cfg.r, cfg.lora_nums, cfg.lora_alpha, cfg.orth_lambda, cfg.lora_dropout, [...cfg.target_modules].sort()],
      ["PEGO", 2, 2, 2, 0.01, 0, ["q_proj", "v_proj"]],
    );
    const f = SafetensorsFile.open(join(out, "adapter_model.safetensors"));
    const names = f.entries.map((e) => e.name);
    f.close();
    // wordnet-llama: 4 layers × (q, v) × 2 modules × (A, B).
    assert.equal(names.length, 4 * 2 * 2 * 2);
    assert.ok(
      names.every((n) => /\.pego_[AB]\.[01]\.weight$/.test(n)),
      names.join(", "),
    );
    const records = readFileSync(join(out, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((x) => x.loss !== undefined);
    assert.equal(records.length, 2);
    // B starts at zero: the regulariser is 0 before the first update and positive after it.
    assert.equal(records[0].method_loss, 0);
    assert.ok(records[1].method_loss > 0);
    const model = await AutoModelForCausalLM.fromPretrained(MODEL);
    const peft = PeftModel.fromPretrained(model, out);
    assert.equal(peft.adapter("default").tuner.peftType, "PEGO");
    await model.release();
    assert.deepEqual(
      [configFlag("peft_type", "PEGO"), configFlag("lora_nums", 2), configFlag("orth_lambda", 0.01)],
      ["--method pego", "--pego-loras 2", "--pego-lambda 0.01"],
    );
  });
});
