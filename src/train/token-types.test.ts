/**
 * Token type ids of text pairs from the tokenizer to the training step and evaluation, on a tiny
 * random BERT (type_vocab_size 2): the first step's loss and the eval loss against the PyTorch
 * golden of scripts/goldens/make_pair_goldens.py (test/golden/pairs/bert_pair), which differs from
 * the loss with all-zero token types.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { AutoTokenizer } from "../io/tokenizer.js";
import { PreTrainedModel } from "../models/pretrained.js";
import { GOLDEN_MODELS, REPO_ROOT } from "../testing/paths.js";
import { PeftModel } from "../tuners/peft-model.js";
import { PeftTrainer } from "../tuners/train.js";
import { BatchStream, loadDataset } from "./data/index.js";
import { type EvalBatch, evaluate } from "./evaluate.js";
import { FullTrainer } from "./full-finetune.js";

const DIR = join(REPO_ROOT, "test/golden/pairs/bert_pair");
const BASE = join(GOLDEN_MODELS, "bert_seq_cls");
interface Golden {
  examples: { input_ids: number[]; token_type_ids: number[] }[];
  input_ids: number[][];
  token_type_ids: number[][];
  attention_mask: number[][];
  labels: number[];
  loss: number;
  loss_zero_token_types: number;
  atol: number;
}
const golden = JSON.parse(readFileSync(join(DIR, "golden.json"), "utf8")) as Golden;
const cacheDir = mkdtempSync(join(tmpdir(), "peftkit-ttype-"));
after(() => rmSync(cacheDir, { recursive: true, force: true }));

async function pairData() {
  const tokenizer = await AutoTokenizer.fromPretrained(DIR);
  return loadDataset(join(DIR, "train.jsonl"), { tokenizer, cacheDir, maxLength: 64 });
}

/** The golden's batch as BatchStream builds it (in file order). */
async function goldenBatch(): Promise<EvalBatch> {
  const data = await pairData();
  return new BatchStream(data.examples, { batchSize: 8, seed: 0, padId: 0, shuffle: false }).batch(0, 0) as EvalBatch;
}

function close(got: number, want: number, what: string): void {
  assert.ok(Math.abs(got - want) < golden.atol, `${what}: ${got}, golden ${want}`);
}

describe("token type ids of text pairs (BERT, type_vocab_size 2)", () => {
  test("examples, the cache and batches carry the tokenizer's type ids (0 on [CLS] A [SEP], 1 on B [SEP], 0 on padding)", async () => {
    const first = await pairData();
    assert.equal(first.format, "pair_classification");
    assert.deepEqual(
      first.examples.map((e) => ({ input_ids: e.inputIds, token_type_ids: e.tokenTypeIds })),
      golden.examples,
    );
    const cached = await pairData();
    assert.ok(cached.fromCache, "second load comes from the cache");
    assert.deepEqual(
      cached.examples.map((e) => e.tokenTypeIds),
      golden.examples.map((e) => e.token_type_ids),
    );
    const b = await goldenBatch();
    assert.deepEqual(b.inputIds, golden.input_ids);
    assert.deepEqual(b.tokenTypeIds, golden.token_type_ids);
    assert.deepEqual(b.attentionMask, golden.attention_mask);
    assert.deepEqual(
      b.labels.map((r) => r[0]),
      golden.labels,
    );
  });

  test("full fine-tuning: the first step's loss is the PyTorch golden, not the all-zero-types loss", async () => {
    assert.ok(Math.abs(golden.loss - golden.loss_zero_token_types) > 1e-2, "the golden tells the two apart");
    const model = await PreTrainedModel.load(BASE, "sequence_classification");
    assert.equal(model.usesTokenTypeIds, true);
    const b = await goldenBatch();
    const trainer = await FullTrainer.create(model, { optimizer: { kind: "sgd", momentum: 0, weightDecay: 0 } });
    try {
      // lr 0 keeps the weights: the second step sees the same model without the type ids.
      close((await trainer.train(b, { lr: 0 })).loss, golden.loss, "step loss with type ids");
      const { tokenTypeIds: _, ...untyped } = b;
      close((await trainer.train(untyped, { lr: 0 })).loss, golden.loss_zero_token_types, "step loss without type ids");
      // compare's full fine-tuning evaluates the trained PreTrainedModel with evaluate().
      const m = await evaluate(model, [b], { causal: false, classification: true });
      close(m.eval_loss, golden.loss, "eval loss of the base model");
    } finally {
      await trainer.release();
      await model.release();
    }
  });

  test("LoRA: the first step's loss and the eval loss (the adapter model's forward) are the golden", async () => {
    const model = await PreTrainedModel.load(BASE, "sequence_classification");
    const peft = PeftModel.create(
      model,
      { peftType: "LORA", taskType: "SEQ_CLS", r: 2, loraAlpha: 4, targetModules: ["query", "value"] },
      { seed: 3 },
    );
    assert.equal(peft.usesTokenTypeIds, true);
    const b = await goldenBatch();
    // LoRA's B starts at 0 and the classifier copy equals the base's: the model is the base model.
    const m = await evaluate(peft, [b], { causal: false, classification: true });
    close(m.eval_loss, golden.loss, "eval loss");
    const trainer = await PeftTrainer.create(peft, { optimizer: { kind: "adamw" } });
    try {
      close((await trainer.train(b, { lr: 1e-3 })).loss, golden.loss, "first step loss");
    } finally {
      await trainer.release();
      await model.release();
    }
  });

  test("a model without token types (RoBERTa, type_vocab_size 1) takes no token_type_ids: typed batches train as untyped", async () => {
    const config = JSON.parse(readFileSync(join(GOLDEN_MODELS, "roberta_seq_cls", "config.json"), "utf8"));
    assert.equal(config.type_vocab_size, 1);
    const model = PreTrainedModel.fromConfig(config, "sequence_classification", { seed: 4 });
    assert.equal(model.usesTokenTypeIds, false);
    const inputIds = [
      [0, 17, 42, 2, 2, 9, 2],
      [0, 5, 2, 2, 33, 2, 1],
    ];
    const tokenTypeIds = [
      [0, 0, 0, 0, 1, 1, 1],
      [0, 0, 0, 1, 1, 1, 0],
    ];
    const attentionMask = [
      [1, 1, 1, 1, 1, 1, 1],
      [1, 1, 1, 1, 1, 1, 0],
    ];
    const trainer = await FullTrainer.create(model, { optimizer: { kind: "sgd", momentum: 0, weightDecay: 0 } });
    try {
      // Type 1 would be out of range for its one-row type embedding: it must not reach the graph.
      const typed = (await trainer.train({ inputIds, attentionMask, tokenTypeIds, labels: [[1], [0]] }, { lr: 0 })).loss;
      const plain = (await trainer.train({ inputIds, attentionMask, labels: [[1], [0]] }, { lr: 0 })).loss;
      assert.equal(typed, plain);
      assert.ok(Number.isFinite(typed));
    } finally {
      await trainer.release();
      await model.release();
    }
  });
});
