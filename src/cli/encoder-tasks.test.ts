/**
 * The encoder tasks end to end through the peftkit command: text-pair classification and token
 * classification records train a sequence / token classification head (task_type SEQ_CLS /
 * TOKEN_CLS, the head in modules_to_save), eval reports the metric, and a merged model predicts
 * as base + adapter. On a small BERT and RoBERTa built here with the bert-base-uncased tokenizer.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AutoTokenizer } from "../io/tokenizer.js";
import { PreTrainedModel } from "../models/pretrained.js";
import { printedMetric as metric, runCli as run, writeJsonl } from "../testing/cli.js";
import { REPO_ROOT } from "../testing/paths.js";
import { loadModelAndAdapter } from "./load.js";

const TOKENIZER = join(REPO_ROOT, "test/fixtures/tokenizers/bert-base-uncased");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-encoder-tasks-"));
const jsonl = (name: string, rows: Record<string, unknown>[]) => writeJsonl(tmp, name, rows);
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A small encoder (no task head) with the bert-base-uncased tokenizer. */
function encoder(name: string, modelType: "bert" | "roberta"): string {
  const dir = join(tmp, name);
  const config = {
    architectures: [modelType === "bert" ? "BertModel" : "RobertaModel"],
    model_type: modelType,
    vocab_size: 30522,
    hidden_size: 32,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    intermediate_size: 64,
    max_position_embeddings: 64,
    type_vocab_size: 2,
    // The tokenizer pads with [PAD] = 0 (RoBERTa counts positions from pad_token_id + 1).
    pad_token_id: 0,
    hidden_act: "gelu",
    layer_norm_eps: 1e-12,
    // Wider than BERT's 0.02, so that a random 2-layer encoder's first token already depends
    // on the others and a sequence task is learnt in a few steps.
    initializer_range: 0.5,
  };
  PreTrainedModel.fromConfig(config, "base", { seed: 7 }).savePretrained(dir);
  for (const f of ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]) copyFileSync(join(TOKENIZER, f), join(dir, f));
  return dir;
}

const KIND: Record<string, string> = { dog: "animal", cat: "animal", horse: "animal", oak: "tree", maple: "tree", pine: "tree" };
const WORDS = Object.keys(KIND);
const KINDS = ["animal", "tree"];
// No dropout and 120 steps: these check the task pipeline, which must not hinge on which features
// a dropout mask drops (at 40 steps with dropout, changing the masks' seeds broke them).
const TRAIN = [
  "--batch-size",
  "8",
  "--lr",
  "3e-2",
  "--max-steps",
  "120",
  "--seed",
  "3",
  "--save-steps",
  "0",
  "--dropout",
  "0",
  "--target",
  "query,value",
];

/** Max |a - b| over the logits of base + adapter and of the merged folder, for some token rows. */
async function mergedLogitGap(model: string, adapter: string, merged: string, rows: number[][]): Promise<number> {
  const a = await loadModelAndAdapter(model, { adapter });
  const b = await loadModelAndAdapter(merged);
  assert.equal(b.model.head, a.model.head);
  let gap = 0;
  for (const row of rows) {
    const za = (await a.peft!.forward({ inputIds: [row] })).logits!.data;
    const zb = (await b.model.forward({ inputIds: [row] })).logits!.data;
    assert.equal(za.length, zb.length);
    for (let j = 0; j < za.length; j++) gap = Math.max(gap, Math.abs(za[j] - zb[j]));
  }
  await a.model.release();
  await b.model.release();
  return gap;
}

describe("encoder tasks through the CLI", () => {
  let bert = "";
  let roberta = "";
  before(() => {
    bert = encoder("tiny-bert", "bert");
    roberta = encoder("tiny-roberta", "roberta");
  });

  test("pair_classification on RoBERTa: SEQ_CLS adapter, accuracy and macro-F1, merged model predicts the same", async () => {
    // "is the second word the kind of the first?"
    const rows = WORDS.flatMap((w) =>
      KINDS.map((k) => ({ text: `a ${w}`, text_pair: `a kind of ${k}`, label: KIND[w] === k ? "yes" : "no" })),
    );
    const train = jsonl("pair-train.jsonl", [...rows, ...rows]);
    const evalData = jsonl("pair-eval.jsonl", rows);
    const out = join(tmp, "pair");
    const t = run(["train", "--model", roberta, "--data", train, "--eval-data", evalData, "--output-dir", out, ...TRAIN]);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /eval accuracy/);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.equal(cfg.task_type, "SEQ_CLS");
    assert.deepEqual(cfg.modules_to_save, ["classifier"]);
    assert.deepEqual(JSON.parse(readFileSync(join(out, "label_config.json"), "utf8")).id2label, { "0": "no", "1": "yes" });
    const args = JSON.parse(readFileSync(join(out, "training_args.json"), "utf8"));
    assert.equal(args.data_format, "pair_classification");

    const e = run(["eval", "--model", roberta, "--adapter", out, "--data", evalData]);
    assert.equal(e.code, 0, e.stderr);
    const acc = metric(e.stdout, "eval_accuracy");
    // Every word and every kind occurs with both labels: only the pair decides.
    assert.equal(acc, 1);
    assert.equal(metric(e.stdout, "eval_macro_f1"), 1);
    const saved = JSON.parse(readFileSync(join(out, "eval_results.json"), "utf8"));
    assert.equal(saved.eval_tokens, rows.length);

    const merged = join(tmp, "pair-merged");
    assert.equal(run(["merge", "--model", roberta, "--adapter", out, "--output-dir", merged]).code, 0);
    assert.deepEqual(JSON.parse(readFileSync(join(merged, "config.json"), "utf8")).architectures, ["RobertaForSequenceClassification"]);
    const em = run(["eval", "--model", merged, "--data", evalData]);
    assert.equal(em.code, 0, em.stderr);
    assert.equal(metric(em.stdout, "eval_accuracy"), acc);
    assert.equal(metric(em.stdout, "eval_loss"), metric(e.stdout, "eval_loss"));
    const tok = await AutoTokenizer.fromPretrained(roberta);
    const gap = await mergedLogitGap(
      roberta,
      out,
      merged,
      rows.slice(0, 4).map((r) => tok.encodePair(r.text, r.text_pair)),
    );
    assert.ok(gap < 1e-4, `merged logits differ by ${gap}`);
  });

  test("token_classification on BERT: TOKEN_CLS adapter, token accuracy and macro-F1, merged model predicts the same", async () => {
    // Tag each word with its kind, "O" for the others; "unaffable" is three sub-tokens.
    const sentence = (i: number) => {
      const w = WORDS[i % WORDS.length];
      const v = WORDS[(i * 5 + 1) % WORDS.length];
      return { tokens: ["the", "unaffable", w, "saw", "a", v], tags: ["O", "O", KIND[w], "O", "O", KIND[v]] };
    };
    const rows = Array.from({ length: 24 }, (_, i) => sentence(i));
    const train = jsonl("tok-train.jsonl", rows);
    const evalData = jsonl("tok-eval.jsonl", rows.slice(0, 8));
    const out = join(tmp, "tok");
    const t = run(["train", "--model", bert, "--data", train, "--eval-data", evalData, "--output-dir", out, ...TRAIN]);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /eval token accuracy/);
    assert.match(t.stdout, /eval macro-F1/);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.equal(cfg.task_type, "TOKEN_CLS");
    assert.deepEqual(cfg.modules_to_save, ["classifier"]);
    assert.deepEqual(JSON.parse(readFileSync(join(out, "label_config.json"), "utf8")).id2label, { "0": "O", "1": "animal", "2": "tree" });

    const e = run(["eval", "--model", bert, "--adapter", out, "--data", evalData]);
    assert.equal(e.code, 0, e.stderr);
    const acc = metric(e.stdout, "eval_token_accuracy");
    const f1 = metric(e.stdout, "eval_macro_f1");
    // One tag per word (6 words × 8 sentences), none on "##ffa", "##ble" or [CLS]/[SEP].
    assert.equal(JSON.parse(readFileSync(join(out, "eval_results.json"), "utf8")).eval_tokens, 48);
    assert.ok(acc > 0.9, `token accuracy ${acc} after training on the eval sentences`);
    assert.ok(f1 > 0 && f1 <= 1);
    assert.doesNotMatch(e.stdout, /eval_accuracy/);
    // Its tags (O, animal, tree) are not BIO tags: no span metrics.
    assert.doesNotMatch(e.stdout, /eval_span_f1/);

    // generate tags each sub-token of a prompt.
    const g = run(["generate", "--model", bert, "--adapter", out, "--prompt", "the unaffable dog saw a pine"]);
    assert.equal(g.code, 0, g.stderr);
    assert.match(g.stdout, /^the\/O una\/O ##ffa\/\S+ ##ble\/\S+ dog\/animal saw\/O a\/O pine\/tree\n$/);
    const merged = join(tmp, "tok-merged");
    assert.equal(run(["merge", "--model", bert, "--adapter", out, "--output-dir", merged]).code, 0);
    const mcfg = JSON.parse(readFileSync(join(merged, "config.json"), "utf8"));
    assert.deepEqual(mcfg.architectures, ["BertForTokenClassification"]);
    assert.deepEqual(mcfg.id2label, { "0": "O", "1": "animal", "2": "tree" });
    const em = run(["eval", "--model", merged, "--data", evalData]);
    assert.equal(em.code, 0, em.stderr);
    assert.equal(metric(em.stdout, "eval_token_accuracy"), acc);
    assert.equal(metric(em.stdout, "eval_macro_f1"), f1);
    const tok = await AutoTokenizer.fromPretrained(bert);
    const gap = await mergedLogitGap(
      bert,
      out,
      merged,
      rows.slice(0, 3).map((r) => tok.encode(r.tokens.join(" "))),
    );
    assert.ok(gap < 1e-4, `merged logits differ by ${gap}`);
  });

  test("token_classification on a decoder (llama): the score head, TOKEN_CLS", () => {
    const embedded = join(REPO_ROOT, "models/wordnet-llama");
    const llama = join(tmp, "tiny-llama");
    const config = JSON.parse(readFileSync(join(embedded, "config.json"), "utf8")) as Record<string, unknown>;
    const tiny = {
      ...config,
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 1,
      num_key_value_heads: 2,
      torch_dtype: "float32",
    };
    PreTrainedModel.fromConfig(tiny, "causal_lm", { seed: 1 }).savePretrained(llama);
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(embedded, f), join(llama, f));
    const rows = Array.from({ length: 16 }, (_, i) => ({
      tokens: ["a", WORDS[i % 6], "is", "here"],
      tags: ["O", KIND[WORDS[i % 6]], "O", "O"],
    }));
    const data = jsonl("llama-tok.jsonl", rows);
    const out = join(tmp, "llama-tok");
    const t = run(["train", "--model", llama, "--data", data, "--eval-data", data, "--output-dir", out, ...TRAIN.slice(0, -2)]);
    assert.equal(t.code, 0, t.stderr);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.equal(cfg.task_type, "TOKEN_CLS");
    assert.deepEqual(cfg.modules_to_save, ["score"]);
    const e = run(["eval", "--model", llama, "--adapter", out, "--data", data]);
    assert.equal(e.code, 0, e.stderr);
    assert.ok(metric(e.stdout, "eval_token_accuracy") > 0.9, e.stdout);
    assert.equal(JSON.parse(readFileSync(join(out, "eval_results.json"), "utf8")).eval_tokens, 64);
  });

  test("prompt tuning with token classification is one clear line, not a reshape error", () => {
    const data = jsonl("tok-prompt.jsonl", [{ tokens: ["a", "cat"], tags: ["O", "B"] }]);
    const r = run([
      "train",
      "--model",
      bert,
      "--data",
      data,
      "--output-dir",
      join(tmp, "prompt-tok"),
      "--method",
      "prompt",
      "--max-steps",
      "1",
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^peftkit: prompt tuning does not support token classification: .*$/m);
    assert.doesNotMatch(r.stderr, /reshape/);
  });

  test("--pack with classification records is a usage error naming the format", () => {
    const data = jsonl("tok-pack.jsonl", [{ tokens: ["a"], tags: ["O"] }]);
    const r = run(["train", "--model", bert, "--data", data, "--output-dir", join(tmp, "pack"), "--pack"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--pack concatenates language-modelling examples; \S*tok-pack\.jsonl holds token_classification records/);
  });
});
