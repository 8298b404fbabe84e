import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { PreTrainedModel } from "../models/pretrained.js";
import { GOLDEN_MODELS } from "../testing/paths.js";
import { FullTrainer } from "./full-finetune.js";

test("full fine-tuning memorises a short sequence and keeps tied weights tied", async () => {
  const config = JSON.parse(readFileSync(join(GOLDEN_MODELS, "llama_gqa_tied", "config.json"), "utf8"));
  const model = PreTrainedModel.fromConfig(config, "causal_lm", { seed: 1 });
  const trainer = await FullTrainer.create(model, { optimizer: { kind: "adamw" }, clipNorm: 1 });
  const seq = [[5, 17, 99, 3, 42, 7, 7, 120, 64, 1]];
  const first = (await trainer.train({ inputIds: seq, labels: seq }, { lr: 1e-2 })).loss;
  let last = first;
  for (let i = 0; i < 60; i++) last = (await trainer.train({ inputIds: seq, labels: seq }, { lr: 1e-2 })).loss;
  assert.ok(last < first * 0.2, `loss ${first} → ${last}`);
  assert.equal(model.weights.get("lm_head.weight"), model.weights.get("model.embed_tokens.weight"));
  const [gen] = await model.generate([seq[0].slice(0, 3)], { maxNewTokens: 7, eosTokenId: [] });
  assert.deepEqual(gen, seq[0]);
  await trainer.release();
  await model.release();
});
