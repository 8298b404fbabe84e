/**
 * `peftkit train --method loha|lokr` with their flags writes a PEFT LOHA/LOKR adapter folder whose
 * config carries the flags' values; the folder loads back; configFlag names the flags.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { runCli, writeJsonl } from "../../testing/cli.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { configFlag } from "../../train/methods.js";
import { ADAPTER_CONFIG } from "../format.js";
import { PeftModel } from "../peft-model.js";

const LLAMA = join(REPO_ROOT, "models/wordnet-llama");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-lycoris-cli-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const DATA = writeJsonl(tmp, "d.jsonl", [
  { prompt: "a dog is a kind of", completion: " animal" },
  { prompt: "an oak is a kind of", completion: " tree" },
]);
const common = ["--model", LLAMA, "--data", DATA, "--max-steps", "1", "--batch-size", "2", "--threads", "1", "--eval-fraction", "0"];

test("train --method lokr with --decompose-both --decompose-factor --rank-dropout(-scale) --module-dropout", async () => {
  const out = join(tmp, "lokr");
  const args = [
    "--method",
    "lokr",
    "--r",
    "2",
    "--decompose-both",
    "--decompose-factor",
    "8",
    "--rank-dropout",
    "0.1",
    "--rank-dropout-scale",
  ];
  const r = runCli(["train", ...common, ...args, "--module-dropout", "0.2", "--output-dir", out]);
  assert.equal(r.code, 0, r.stderr);
  const cfg = JSON.parse(readFileSync(join(out, ADAPTER_CONFIG), "utf8"));
  assert.deepEqual(
    [
      cfg.peft_type,
      cfg.r,
      cfg.alpha,
      cfg.decompose_both,
      cfg.decompose_factor,
      cfg.rank_dropout,
      cfg.rank_dropout_scale,
      cfg.module_dropout,
    ],
    ["LOKR", 2, 2, true, 8, 0.1, true, 0.2],
  );
  assert.equal(cfg.target_modules, "all-linear");
  const model = await AutoModelForCausalLM.fromPretrained(LLAMA);
  const keys = [...PeftModel.fromPretrained(model, out).adapter("default").tensors.keys()];
  // factorization(256, 8) = (8, 32): r = 2 < 32/2, so both factors are rank-2 products.
  assert.ok(keys.includes("model.layers.0.self_attn.q_proj.lokr_w1_a") && keys.includes("model.layers.0.self_attn.q_proj.lokr_w2_b"));
  await model.release();
});

test("train --method loha --alpha; flags named for config fields", () => {
  const out = join(tmp, "loha");
  const r = runCli(["train", ...common, "--method", "loha", "--r", "2", "--alpha", "6", "--target", "q_proj,v_proj", "--output-dir", out]);
  assert.equal(r.code, 0, r.stderr);
  const cfg = JSON.parse(readFileSync(join(out, ADAPTER_CONFIG), "utf8"));
  assert.deepEqual([cfg.peft_type, cfg.r, cfg.alpha, cfg.rank_dropout, cfg.init_weights], ["LOHA", 2, 6, 0, true]);
  assert.deepEqual(
    [
      configFlag("peft_type", "LOHA"),
      configFlag("peft_type", "LOKR"),
      configFlag("alpha", 6),
      configFlag("decompose_both", true),
      configFlag("decompose_factor", 8),
      configFlag("rank_dropout", 0.1),
      configFlag("module_dropout", 0.2),
      configFlag("rank_dropout_scale", true),
    ],
    [
      "--method loha",
      "--method lokr",
      "--alpha 6",
      "--decompose-both",
      "--decompose-factor 8",
      "--rank-dropout 0.1",
      "--module-dropout 0.2",
      "--rank-dropout-scale",
    ],
  );
});
