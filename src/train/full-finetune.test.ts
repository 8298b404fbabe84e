import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { HostTensor } from "../engine/ir/host.js";
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

test("masked-LM training: the loss is the cross-entropy at labelled positions only (no shift), and the decoder stays tied", async () => {
  const config = JSON.parse(readFileSync(join(GOLDEN_MODELS, "roberta_mlm", "config.json"), "utf8"));
  const model = PreTrainedModel.fromConfig(config, "masked_lm", { seed: 2 });
  const ids = [
    [0, 17, 4, 99, 4, 42, 2],
    [0, 4, 64, 120, 7, 2, 1],
  ];
  const labels = [
    [-100, -100, 33, -100, 81, -100, -100],
    [-100, 12, -100, -100, -100, -100, -100],
  ];
  // Reference: mean of -log softmax(logits)[label] over the three labelled positions, from a forward pass.
  const logits = (await model.forward({ inputIds: ids })).logits!;
  const v = logits.shape[2];
  let nll = 0;
  let n = 0;
  labels.forEach((row, b) => {
    row.forEach((label, t) => {
      if (label === -100) return;
      const z = Array.from(logits.data.subarray((b * 7 + t) * v, (b * 7 + t + 1) * v));
      const max = Math.max(...z);
      nll += Math.log(z.reduce((s, x) => s + Math.exp(x - max), 0)) + max - z[label];
      n++;
    });
  });
  const trainer = await FullTrainer.create(model, { optimizer: { kind: "adamw" } });
  const first = (await trainer.train({ inputIds: ids, labels }, { lr: 1e-2 })).loss;
  assert.ok(Math.abs(first - nll / n) < 1e-4, `step loss ${first}, reference ${nll / n}`);
  let last = first;
  for (let i = 0; i < 30; i++) last = (await trainer.train({ inputIds: ids, labels }, { lr: 1e-2 })).loss;
  assert.ok(last < first * 0.2, `loss ${first} → ${last}`);
  assert.equal(model.weights.get("lm_head.decoder.weight"), model.weights.get("roberta.embeddings.word_embeddings.weight"));
  assert.equal(model.weights.get("lm_head.decoder.bias"), model.weights.get("lm_head.bias"));
  await trainer.release();
  await model.release();
});

test("full fine-tuning with `trains`: only the chosen weights change, the others (tied ones too) stay the same tensors", async () => {
  const config = JSON.parse(readFileSync(join(GOLDEN_MODELS, "llama_gqa_tied", "config.json"), "utf8"));
  const model = PreTrainedModel.fromConfig(config, "causal_lm", { seed: 3 });
  const before = new Map(model.weights);
  const trains = (n: string) => n.endsWith("_proj.weight");
  const trainer = await FullTrainer.create(model, { optimizer: { kind: "adamw" }, trains });
  const seq = [[5, 17, 99, 3, 42, 7, 7, 120, 64, 1]];
  for (let i = 0; i < 3; i++) await trainer.train({ inputIds: seq, labels: seq }, { lr: 1e-2 });
  let changed = 0;
  for (const [n, t] of before) {
    const now = model.weights.get(n);
    if (!trains(n)) assert.equal(now, t, `${n} is not trained`);
    else if ((now as HostTensor).data.some((v, i) => v !== t.data[i])) changed++;
  }
  assert.equal(changed, [...before.keys()].filter(trains).length, "every chosen weight moved");
  assert.equal(model.weights.get("lm_head.weight"), model.weights.get("model.embed_tokens.weight"));
  await trainer.release();
  await model.release();
});
