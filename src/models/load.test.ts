import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import { readSafetensors, writeSafetensors } from "../io/safetensors.js";
import { ModelError } from "../nn/context.js";
import { GOLDEN_MODELS } from "../testing/paths.js";
import { AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSequenceClassification } from "./auto.js";

const tmp = mkdtempSync(join(tmpdir(), "peftkit-load-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A copy of a golden checkpoint whose tensors have been edited. */
function variant(src: string, edit: (t: Record<string, HostTensor>) => void, config?: (c: Record<string, unknown>) => void): string {
  const dir = mkdtempSync(join(tmp, `${src}-`));
  const from = join(GOLDEN_MODELS, src);
  const { tensors } = readSafetensors(join(from, "model.safetensors"), { keepF16: true });
  edit(tensors);
  writeSafetensors(join(dir, "model.safetensors"), tensors, { format: "pt" });
  if (config) {
    const c = JSON.parse(readFileSync(join(from, "config.json"), "utf8"));
    config(c);
    writeFileSync(join(dir, "config.json"), JSON.stringify(c));
  } else copyFileSync(join(from, "config.json"), join(dir, "config.json"));
  return dir;
}

describe("loading rejects checkpoints that do not match their config", () => {
  test("missing tensors are listed with their shapes", async () => {
    const dir = variant("llama_basic", (t) => {
      delete t["model.layers.1.mlp.up_proj.weight"];
      delete t["model.norm.weight"];
    });
    await assert.rejects(AutoModelForCausalLM.fromPretrained(dir), (e: unknown) => {
      assert.ok(e instanceof ModelError);
      assert.match(e.message, /missing tensors/);
      assert.match(e.message, /model\.layers\.1\.mlp\.up_proj\.weight \[\d+, \d+\]/);
      assert.match(e.message, /model\.norm\.weight \[\d+\]/);
      return true;
    });
  });

  test("mis-shaped tensors are listed with both shapes", async () => {
    const dir = variant("llama_basic", (t) => {
      const w = t["model.layers.0.self_attn.q_proj.weight"];
      t["model.layers.0.self_attn.q_proj.weight"] = hostTensor("f32", [w.shape[0] + 1, w.shape[1]]);
    });
    await assert.rejects(
      AutoModelForCausalLM.fromPretrained(dir),
      /model\.layers\.0\.self_attn\.q_proj\.weight: checkpoint \[\d+, \d+\], expected \[\d+, \d+\]/,
    );
  });

  test("misnamed tensors are reported both as unexpected and as missing", async () => {
    const dir = variant("llama_basic", (t) => {
      t["model.layers.0.self_attn.query.weight"] = t["model.layers.0.self_attn.q_proj.weight"];
      delete t["model.layers.0.self_attn.q_proj.weight"];
    });
    await assert.rejects(AutoModelForCausalLM.fromPretrained(dir), (e: unknown) => {
      assert.ok(e instanceof ModelError);
      assert.match(e.message, /does not use \(misnamed\?\):\n\s+model\.layers\.0\.self_attn\.query\.weight/);
      assert.match(e.message, /missing tensors:\n\s+model\.layers\.0\.self_attn\.q_proj\.weight/);
      return true;
    });
  });

  test("an untied model without lm_head fails instead of tying silently", async () => {
    const dir = variant("llama_basic", (t) => {
      delete t["lm_head.weight"];
    });
    await assert.rejects(AutoModelForCausalLM.fromPretrained(dir), /lm_head\.weight/);
  });

  test("an unknown model_type names the field and the supported types", async () => {
    const dir = variant(
      "llama_basic",
      () => {},
      (c) => {
        c.model_type = "mamba";
      },
    );
    await assert.rejects(AutoModelForCausalLM.fromPretrained(dir), /model_type "mamba" is not supported \(supported: .*llama/);
  });

  test("a bad config field names the field", async () => {
    const dir = variant(
      "llama_basic",
      () => {},
      (c) => {
        c.num_attention_heads = "four";
      },
    );
    await assert.rejects(AutoModelForCausalLM.fromPretrained(dir), /config\.json: field "num_attention_heads"/);
  });

  test("a base checkpoint loads into a new classification head, which is reported", async () => {
    const warnings: string[] = [];
    const onWarn = (w: Error) => warnings.push(w.message);
    process.on("warning", onWarn);
    const model = await AutoModelForSequenceClassification.fromPretrained(join(GOLDEN_MODELS, "llama_basic"), { numLabels: 3 });
    await new Promise((r) => setImmediate(r));
    process.off("warning", onWarn);
    assert.deepEqual(model.newlyInitialized, ["score.weight"]);
    assert.ok(warnings.some((w) => w.includes("score.weight")));
    const { logits } = await model.forward({ inputIds: [[1, 2, 3]] });
    assert.deepEqual(logits?.shape, [1, 3]);
    await model.release();
  });

  test("a sharded checkpoint (model.safetensors.index.json) gives the same logits", async () => {
    const from = join(GOLDEN_MODELS, "llama_basic");
    const dir = mkdtempSync(join(tmp, "sharded-"));
    const { tensors } = readSafetensors(join(from, "model.safetensors"));
    const names = Object.keys(tensors).sort();
    const half = Math.floor(names.length / 2);
    const shards = [names.slice(0, half), names.slice(half)];
    const weightMap: Record<string, string> = {};
    shards.forEach((list, i) => {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      writeSafetensors(join(dir, file), Object.fromEntries(list.map((n) => [n, tensors[n]])), { format: "pt" });
      for (const n of list) weightMap[n] = file;
    });
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    copyFileSync(join(from, "config.json"), join(dir, "config.json"));
    const a = await AutoModelForCausalLM.fromPretrained(from);
    const b = await AutoModelForCausalLM.fromPretrained(dir);
    const ids = [[3, 1, 4, 1, 5, 9, 2, 6]];
    const [la, lb] = [(await a.forward({ inputIds: ids })).logits, (await b.forward({ inputIds: ids })).logits];
    assert.deepEqual(la?.data, lb?.data);
    await a.release();
    await b.release();
  });

  test("AutoModel loads the backbone of a task checkpoint and returns hidden states", async () => {
    const model = await AutoModel.fromPretrained(join(GOLDEN_MODELS, "llama_basic"));
    const { lastHiddenState, logits } = await model.forward({ inputIds: [[5, 6, 7, 8]] });
    assert.equal(logits, undefined);
    assert.deepEqual(lastHiddenState?.shape, [1, 4, model.config.hidden_size as number]);
    await model.release();
  });
});

describe("fromConfig and savePretrained", () => {
  test("a model saved in f32 reloads with identical logits; f16 within f16 rounding", async () => {
    const a = await AutoModelForCausalLM.fromPretrained(join(GOLDEN_MODELS, "llama_gqa_tied"));
    const dir32 = mkdtempSync(join(tmp, "save32-"));
    const dir16 = mkdtempSync(join(tmp, "save16-"));
    a.savePretrained(dir32);
    a.savePretrained(dir16, { dtype: "f16" });
    const ids = [[4, 8, 15, 16, 23, 42]];
    const want = (await a.forward({ inputIds: ids })).logits?.data as Float32Array;
    const b = await AutoModelForCausalLM.fromPretrained(dir32);
    assert.deepEqual((await b.forward({ inputIds: ids })).logits?.data, want);
    assert.equal(readSafetensors(join(dir32, "model.safetensors")).tensors["lm_head.weight"], undefined, "tied lm_head written");
    const c = await AutoModelForCausalLM.fromPretrained(dir16);
    const got = (await c.forward({ inputIds: ids })).logits?.data as Float32Array;
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
    assert.ok(worst > 0 && worst < 0.05, `f16 difference ${worst}`);
    for (const m of [a, b, c]) await m.release();
  });

  test("fromConfig builds a model with initialised weights of the right shapes", async () => {
    const config = JSON.parse(readFileSync(join(GOLDEN_MODELS, "qwen2", "config.json"), "utf8"));
    const { PreTrainedModel } = await import("./pretrained.js");
    const m = PreTrainedModel.fromConfig(config, "causal_lm", { seed: 3 });
    const { logits } = await m.forward({ inputIds: [[1, 2, 3]] });
    assert.deepEqual(logits?.shape, [1, 3, config.vocab_size]);
    const norm = m.weights.get("model.norm.weight")?.data as Float32Array;
    assert.ok(norm.every((v) => v === 1));
    const q = m.weights.get("model.layers.0.self_attn.q_proj.weight")?.data as Float32Array;
    const std = Math.sqrt(q.reduce((s, v) => s + v * v, 0) / q.length);
    assert.ok(Math.abs(std - 0.02) < 0.004, `std ${std}`);
    await m.release();
  });
});

test("a masked-LM checkpoint: its head is set aside for classification; stored tied copies and BERT's NSP head load", async () => {
  const seq = await AutoModelForSequenceClassification.fromPretrained(join(GOLDEN_MODELS, "roberta_mlm"), {
    numLabels: 2,
    warnNewlyInitialized: false,
  });
  assert.ok(![...seq.weights.keys()].some((k) => k.startsWith("lm_head.")), "no masked-LM weights in a classifier");
  assert.deepEqual(seq.newlyInitialized.sort(), [
    "classifier.dense.bias",
    "classifier.dense.weight",
    "classifier.out_proj.bias",
    "classifier.out_proj.weight",
  ]);
  await seq.release();
  // Older exporters write the tied decoder too, and BertForPreTraining adds cls.seq_relationship.
  const dir = variant("bert_mlm", (t) => {
    t["cls.predictions.decoder.weight"] = t["bert.embeddings.word_embeddings.weight"];
    t["cls.predictions.decoder.bias"] = t["cls.predictions.bias"];
    t["cls.seq_relationship.weight"] = hostTensor("f32", [2, 32], new Float32Array(64));
    t["cls.seq_relationship.bias"] = hostTensor("f32", [2], new Float32Array(2));
  });
  const mlm = await AutoModelForMaskedLM.fromPretrained(dir);
  assert.equal(mlm.weights.get("cls.predictions.decoder.weight"), mlm.weights.get("bert.embeddings.word_embeddings.weight"));
  await mlm.release();
});
