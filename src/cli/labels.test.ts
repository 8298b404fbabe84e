/**
 * Classification through the peftkit command (issue 10, items 1 and 3): the classes a run trains
 * with are saved beside the adapter and used by eval, merge, generate and info; eval labels the
 * model does not have are rejected at their line. On a one-layer llama built here with the
 * embedded model's tokenizer, so each command takes well under a second.
 */
import assert from "node:assert/strict";
import { copyFileSync, cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AutoTokenizer } from "../io/tokenizer.js";
import { PreTrainedModel } from "../models/pretrained.js";
import { printedMetric as metric, runCli as run, writeJsonl } from "../testing/cli.js";
import { REPO_ROOT } from "../testing/paths.js";
import { latestCheckpoint } from "../train/checkpoint.js";
import { loadModelAndAdapter } from "./load.js";

const EMBEDDED = join(REPO_ROOT, "models/wordnet-llama");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-labels-"));
const jsonl = (name: string, rows: Record<string, unknown>[]) => writeJsonl(tmp, name, rows);
after(() => rmSync(tmp, { recursive: true, force: true }));
const MODEL = join(tmp, "tiny-llama");

const KINDS: Record<string, string> = { dog: "animal", cat: "animal", oak: "tree", maple: "tree", rose: "flower", tulip: "flower" };
const words = Object.keys(KINDS);
const THREE = Array.from({ length: 24 }, (_, i) => ({ text: `a ${words[i % 6]}`, label: KINDS[words[i % 6]] }));
const TWO = Array.from({ length: 16 }, (_, i) =>
  i % 2 ? { text: "good great fine", label: "pos" } : { text: "bad awful poor", label: "neg" },
);
const TRAIN = ["--model", MODEL, "--batch-size", "8", "--lr", "3e-2", "--eval-fraction", "0", "--max-steps", "20", "--seed", "3"];

before(() => {
  const config = JSON.parse(readFileSync(join(EMBEDDED, "config.json"), "utf8")) as Record<string, unknown>;
  const tiny = { ...config, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_key_value_heads: 2, torch_dtype: "float32" };
  PreTrainedModel.fromConfig(tiny, "causal_lm", { seed: 1 }).savePretrained(MODEL);
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(EMBEDDED, f), join(MODEL, f));
});

describe("peftkit classification labels", () => {
  test("a 3-class adapter: eval and merge succeed, the merged model predicts as base + adapter", async () => {
    const data = jsonl("three.jsonl", THREE);
    const out = join(tmp, "three");
    const t = run(["train", ...TRAIN, "--data", data, "--output-dir", out, "--save-steps", "10"]);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stderr, /newly initialised sequence_classification head/, "training starts from a new head and says so");
    const e = run(["eval", "--model", MODEL, "--adapter", out, "--data", data]);
    assert.equal(e.code, 0, e.stderr);
    // The adapter's modules_to_save supplies the head: no warning to train it.
    assert.doesNotMatch(e.stderr, /newly initialised/);
    assert.equal(metric(e.stdout, "eval_accuracy"), 1);
    const merged = join(tmp, "three-merged");
    const m = run(["merge", "--model", MODEL, "--adapter", out, "--output-dir", merged]);
    assert.equal(m.code, 0, m.stderr);

    const saved = JSON.parse(readFileSync(join(out, "label_config.json"), "utf8"));
    assert.deepEqual(saved, {
      num_labels: 3,
      id2label: { "0": "animal", "1": "flower", "2": "tree" },
      label2id: { animal: 0, flower: 1, tree: 2 },
    });
    const ck = latestCheckpoint(out);
    assert.ok(ck && existsSync(join(ck, "label_config.json")), "a checkpoint is an adapter folder too");
    assert.equal(JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8")).num_labels, undefined);
    const cfg = JSON.parse(readFileSync(join(merged, "config.json"), "utf8"));
    assert.equal(cfg.num_labels, 3);
    assert.deepEqual(cfg.id2label, saved.id2label);
    assert.deepEqual(cfg.label2id, saved.label2id);
    assert.deepEqual(cfg.architectures, ["LlamaForSequenceClassification"]);
    const em = run(["eval", "--model", merged, "--data", data]);
    assert.equal(em.code, 0, em.stderr);
    assert.equal(metric(em.stdout, "eval_loss"), metric(e.stdout, "eval_loss"));

    // Logits of the merged folder (loaded as the CLI does: head and classes from config.json) vs base + adapter.
    const tok = await AutoTokenizer.fromPretrained(MODEL);
    const ids = words.map((w) => tok.encode(`a ${w}`));
    const a = await loadModelAndAdapter(MODEL, { adapter: out });
    const b = await loadModelAndAdapter(merged);
    assert.equal(b.model.head, "sequence_classification");
    assert.deepEqual(b.labels?.names, ["animal", "flower", "tree"]);
    for (const row of ids) {
      const za = (await a.peft!.forward({ inputIds: [row] })).logits!.data;
      const zb = (await b.model.forward({ inputIds: [row] })).logits!.data;
      assert.equal(zb.length, 3);
      for (let j = 0; j < 3; j++) assert.ok(Math.abs(za[j] - zb[j]) < 1e-4, `logit ${j}: ${za[j]} vs ${zb[j]}`);
    }
    await a.model.release();
    await b.model.release();

    // A classifier's generate prints the class name.
    const g1 = run(["generate", "--model", MODEL, "--adapter", out, "--prompt", "a rose"]);
    const g2 = run(["generate", "--model", merged, "--prompt", "a rose"]);
    assert.equal(g1.code, 0, g1.stderr);
    assert.equal(g1.stdout, "flower\n");
    assert.equal(g2.stdout, g1.stdout);
    const info = run(["info", out]);
    assert.match(info.stdout, /num_labels\s+3/);
    assert.match(info.stdout, /labels\s+0 animal, 1 flower, 2 tree/);
    assert.match(run(["info", merged]).stdout, /labels\s+0 animal, 1 flower, 2 tree/);

    // The merged folder is a fine-tuned classifier: data with some of its labels trains with its ids.
    const some = jsonl(
      "some.jsonl",
      THREE.filter((r) => r.label !== "flower"),
    );
    const again = join(tmp, "three-again");
    const t2 = run(["train", ...TRAIN.slice(2), "--model", merged, "--data", some, "--output-dir", again, "--max-steps", "2"]);
    assert.equal(t2.code, 0, t2.stderr);
    assert.deepEqual(JSON.parse(readFileSync(join(again, "label_config.json"), "utf8")).id2label, saved.id2label);
  });

  describe("a 2-class adapter (neg, pos)", () => {
    const out = join(tmp, "two");
    let data = "";
    before(() => {
      data = jsonl("two.jsonl", TWO);
      const t = run(["train", ...TRAIN, "--data", data, "--output-dir", out]);
      assert.equal(t.code, 0, t.stderr);
    });

    test('scores a file of only "pos" rows as it scores those rows in training', () => {
      const all = run(["eval", "--model", MODEL, "--adapter", out, "--data", data, "--output", join(tmp, "all.json")]);
      assert.equal(all.code, 0, all.stderr);
      assert.equal(metric(all.stdout, "eval_accuracy"), 1);
      const posRows = jsonl(
        "pos.jsonl",
        TWO.filter((r) => r.label === "pos"),
      );
      const pos = run(["eval", "--model", MODEL, "--adapter", out, "--data", posRows, "--output", join(tmp, "pos.json")]);
      assert.equal(pos.code, 0, pos.stderr);
      assert.equal(metric(pos.stdout, "eval_accuracy"), 1);
      assert.ok(metric(pos.stdout, "eval_loss") < 0.1, pos.stdout);
      assert.deepEqual(JSON.parse(readFileSync(join(tmp, "pos.json"), "utf8")).label_names, ["neg", "pos"]);
    });

    test("resuming with data of other labels is refused, naming the checkpoint's label_config.json", () => {
      const other = jsonl(
        "other.jsonl",
        TWO.map((r) => ({ ...r, label: r.label === "pos" ? "good" : "bad" })),
      );
      const copy = join(tmp, "two-resumed");
      cpSync(out, copy, { recursive: true });
      const r = run(["train", ...TRAIN, "--data", other, "--output-dir", copy, "--resume"]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(
        r.stderr,
        /checkpoint-20\/label_config\.json: the checkpoint was trained with the labels \["neg","pos"\], but this run's data gives \["bad","good"\]/,
      );
    });

    // Exit 1, not 2: the flags are fine, the data is bad (as for a bad record in train).
    test("a string label the adapter does not know is an error at its line", () => {
      const bad = jsonl("unknown.jsonl", [
        { text: "good", label: "pos" },
        { text: "meh", label: "neutral" },
      ]);
      const out2 = join(tmp, "unknown-results.json");
      const r = run(["eval", "--model", MODEL, "--adapter", out, "--data", bad, "--output", out2]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /peftkit: \S*unknown\.jsonl:2: field "label": "neutral" is not one of the labels \["neg","pos"\]\n/);
      assert.ok(!existsSync(out2));
    });
  });

  describe("integer labels out of range", () => {
    const intRows = TWO.map((r) => ({ text: r.text, label: r.label === "pos" ? 1 : 0 }));
    const outOfRange = [
      { text: "good great fine", label: 5 },
      { text: "bad awful poor", label: 7 },
    ];

    test("eval with labels 5 and 7 on a 2-class adapter: exit 1 naming file and line", () => {
      const data = jsonl("int.jsonl", intRows);
      const out = join(tmp, "int");
      const t = run(["train", ...TRAIN, "--data", data, "--output-dir", out]);
      assert.equal(t.code, 0, t.stderr);
      const bad = jsonl("int-bad.jsonl", outOfRange);
      const r = run(["eval", "--model", MODEL, "--adapter", out, "--data", bad]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /peftkit: \S*int-bad\.jsonl:1: field "label": class id 5 is out of range for 2 labels\n/);
      assert.ok(!existsSync(join(out, "eval_results.json")));
      assert.deepEqual(JSON.parse(readFileSync(join(out, "label_config.json"), "utf8")).id2label, { "0": "LABEL_0", "1": "LABEL_1" });
    });

    test("train --eval-data with labels 5 and 7: exit 1 naming file and line, no adapter", () => {
      const data = jsonl("int-train.jsonl", intRows);
      const bad = jsonl("int-eval.jsonl", outOfRange);
      const out = join(tmp, "int-eval-run");
      const r = run(["train", ...TRAIN, "--data", data, "--eval-data", bad, "--output-dir", out]);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.doesNotMatch(r.stdout, /NaN/);
      assert.match(r.stderr, /peftkit: \S*int-eval\.jsonl:1: field "label": class id 5 is out of range for 2 labels\n/);
      assert.ok(!existsSync(join(out, "adapter_config.json")));
    });
  });
});
