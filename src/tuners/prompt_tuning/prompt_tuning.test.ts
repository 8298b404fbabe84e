import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { readSafetensors } from "../../io/safetensors.js";
import { AutoTokenizer } from "../../io/tokenizer.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { loadTestModel, maxAbsDiff, randomIds, runConformance } from "../conformance.js";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS } from "../format.js";
import { PeftModel, parsePeftConfig } from "../peft-model.js";
import { fitIds, initTextIds, PROMPT_KEY, wordEmbeddingName } from "./index.js";
import { adapterGradCheck, trainOneStep } from "./testing.js";

const vocabOf = (m: { config: Record<string, unknown> }) => m.config.vocab_size as number;

describe("prompt tuning", () => {
  for (const name of ["llama_gqa_tied", "gpt2", "bert_seq_cls", "roberta_seq_cls"] as const) {
    test(`${name}: equals the base model run on [prompt tokens; ids] when the prompt is those tokens' embeddings`, async () => {
      const model = await loadTestModel(name);
      const n = 3;
      const p = randomIds(1, n, vocabOf(model))[0];
      // A padding-free pair of rows; the second row's last token varies.
      const ids = randomIds(2, 5, vocabOf(model));
      const base = await model.forward({ inputIds: ids.map((r) => [...p, ...r]) });
      const peft = PeftModel.create(model, {
        peftType: "PROMPT_TUNING",
        numVirtualTokens: n,
        promptTuningInit: "TEXT",
        promptTuningInitText: "unused: ids given",
        promptTuningInitTokenIds: p,
      });
      const out = await peft.forward({ inputIds: ids });
      assert.deepEqual(out.logits?.shape, base.logits?.shape);
      const d = maxAbsDiff(out.logits?.data as Float32Array, base.logits?.data as Float32Array);
      assert.ok(d < 1e-4, `max |diff| ${d}`);
      await model.release();
    });
  }

  test("llama: a left-padded row sees the prompt just before its first real token (positions skip the padding)", async () => {
    const model = await loadTestModel("llama_basic");
    const p = randomIds(1, 2, vocabOf(model))[0];
    const ids = randomIds(1, 5, vocabOf(model));
    const mask = [[0, 0, 1, 1, 1]];
    // The soft tokens take positions 0..n−1 and the real tokens n + their given positions, so the
    // padding between them is masked and skipped (PEFT instead drops position ids: 0..n+T−1 over padding).
    const base = await model.forward({
      inputIds: [[...p, ...ids[0]]],
      attentionMask: [[1, 1, ...mask[0]]],
      positionIds: [[0, 1, 1, 1, 2, 3, 4]],
    });
    const peft = PeftModel.create(model, {
      peftType: "PROMPT_TUNING",
      numVirtualTokens: 2,
      promptTuningInit: "TEXT",
      promptTuningInitTokenIds: p,
    });
    const out = await peft.forward({ inputIds: ids, attentionMask: mask, positionIds: [[1, 1, 0, 1, 2]] });
    const v = vocabOf(model);
    const got = (out.logits as { data: Float32Array }).data;
    const want = (base.logits as { data: Float32Array }).data;
    // Soft-token rows and real-token rows; padding rows (positions 1 + n vs 1) are not meaningful.
    const d = Math.max(maxAbsDiff(got.slice(0, 2 * v), want.slice(0, 2 * v)), maxAbsDiff(got.slice(4 * v), want.slice(4 * v)));
    assert.ok(d < 1e-4, `max |diff| ${d}`);
    await model.release();
  });

  for (const name of ["llama_gqa_tied", "gpt2"] as const) {
    test(`${name}: generate with the prompt equals generating after the prompt tokens`, async () => {
      const model = await loadTestModel(name);
      const p = randomIds(1, 3, vocabOf(model))[0];
      const prompt = randomIds(1, 4, vocabOf(model))[0];
      const want = await model.generate([[...p, ...prompt]], { maxNewTokens: 5, eosTokenId: -1 });
      const peft = PeftModel.create(model, {
        peftType: "PROMPT_TUNING",
        numVirtualTokens: 3,
        promptTuningInit: "TEXT",
        promptTuningInitTokenIds: p,
      });
      const got = await peft.generate([prompt], { maxNewTokens: 5, eosTokenId: -1 });
      assert.deepEqual(got[0].slice(prompt.length), want[0].slice(p.length + prompt.length));
      await model.release();
    });
  }

  test("inits: RANDOM is N(0, 1), SAMPLE_VOCAB and TEXT take rows of the word embeddings", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "PROMPT_TUNING", numVirtualTokens: 40 }, { seed: 3 });
    const r = peft.adapter("default").tensors.get(PROMPT_KEY)?.data as Float32Array;
    const mean = r.reduce((a, b) => a + b, 0) / r.length;
    const variance = r.reduce((a, b) => a + (b - mean) ** 2, 0) / r.length;
    assert.ok(Math.abs(mean) < 0.1 && Math.abs(variance - 1) < 0.15, `mean ${mean}, variance ${variance}`);
    const emb = model.weights.get(wordEmbeddingName(peft.info) as string)?.data as Float32Array;
    const hidden = peft.info.hidden;
    const isRow = (row: Float32Array) => {
      for (let t = 0; t < emb.length / hidden; t++) if (row.every((x, j) => x === emb[t * hidden + j])) return t;
      return -1;
    };
    peft.addAdapter("sv", { peftType: "PROMPT_TUNING", numVirtualTokens: 4, promptTuningInit: "SAMPLE_VOCAB" }, { seed: 5 });
    const sv = peft.adapter("sv").tensors.get(PROMPT_KEY)?.data as Float32Array;
    for (let i = 0; i < 4; i++) assert.ok(isRow(sv.subarray(i * hidden, (i + 1) * hidden)) >= 0, `row ${i}`);
    peft.addAdapter("text", { peftType: "PROMPT_TUNING", numVirtualTokens: 5, promptTuningInit: "TEXT", promptTuningInitTokenIds: [7, 9] });
    const tx = peft.adapter("text").tensors.get(PROMPT_KEY)?.data as Float32Array;
    assert.deepEqual(
      Array.from({ length: 5 }, (_, i) => isRow(tx.subarray(i * hidden, (i + 1) * hidden))),
      [7, 9, 7, 9, 7],
    );
    assert.deepEqual(fitIds([1, 2, 3, 4], 2), [1, 2]);
    await model.release();
  });

  test("TEXT init tokenizes like the tokenizer folder (special tokens included, as PEFT)", async () => {
    const dir = join(REPO_ROOT, "test/fixtures/tokenizers/bert-base-uncased");
    const tok = await AutoTokenizer.fromPretrained(dir);
    const text = "Classify the sentiment of this review";
    assert.deepEqual(initTextIds(text, dir), tok.encode(text));
    assert.ok(initTextIds(text, dir).length > 2);
  });

  test("config errors name the field", () => {
    assert.throws(() => parse({ peftType: "PROMPT_TUNING" }), /num_virtual_tokens/);
    assert.throws(() => parse({ peftType: "PROMPT_TUNING", numVirtualTokens: 2, promptTuningInit: "TEXT" }), /prompt_tuning_init_text/);
    assert.throws(() => parse({ peftType: "PROMPT_TUNING", numVirtualTokens: 2, promptTuningInit: "WORDS" }), /prompt_tuning_init/);
    assert.throws(() => parse({ peftType: "PROMPT_TUNING", numVirtualTokens: 2, tokenizerKwargs: { a: 1 } }), /tokenizer_kwargs/);
  });

  test("save: bare prompt_embeddings and PEFT's config fields with the model's values; load gives the same logits", async () => {
    const dir = mkdtempSync(join(tmpdir(), "peftkit-pt-"));
    try {
      const model = await loadTestModel("gpt2");
      const peft = PeftModel.create(model, { peftType: "PROMPT_TUNING", taskType: "CAUSAL_LM", numVirtualTokens: 4 }, { seed: 1 });
      const ids = randomIds(2, 5, vocabOf(model));
      const before = await peft.forward({ inputIds: ids });
      peft.savePretrained(dir);
      const cfg = JSON.parse(readFileSync(join(dir, ADAPTER_CONFIG), "utf8"));
      for (const [k, v] of Object.entries({
        peft_type: "PROMPT_TUNING",
        task_type: "CAUSAL_LM",
        num_virtual_tokens: 4,
        token_dim: 32,
        num_transformer_submodules: 1,
        num_attention_heads: 4,
        num_layers: 2,
        prompt_tuning_init: "RANDOM",
        prompt_tuning_init_text: null,
        tokenizer_name_or_path: null,
        tokenizer_kwargs: null,
        inference_mode: true,
      }))
        assert.deepEqual(cfg[k], v, k);
      assert.ok(!("prompt_tuning_init_token_ids" in cfg));
      const file = readSafetensors(join(dir, ADAPTER_WEIGHTS));
      assert.deepEqual(Object.keys(file.tensors), [PROMPT_KEY]);
      assert.deepEqual([...file.tensors[PROMPT_KEY].shape], [4, 32]);
      const fresh = await loadTestModel("gpt2");
      const loaded = PeftModel.fromPretrained(fresh, dir);
      const after = await loaded.forward({ inputIds: ids });
      assert.ok(maxAbsDiff(after.logits?.data as Float32Array, before.logits?.data as Float32Array) < 1e-6);
      await model.release();
      await fresh.release();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("llama: training one step changes only the prompt; gradients match f64 finite differences", async () => {
    const model = await loadTestModel("llama_gqa_tied");
    const peft = PeftModel.create(model, { peftType: "PROMPT_TUNING", numVirtualTokens: 2 }, { seed: 4 });
    await trainOneStep(peft, randomIds(2, 5, vocabOf(model)));
    adapterGradCheck(peft, randomIds(2, 3, vocabOf(model)));
    await model.release();
  });

  test("mixed-adapter batches are refused", async () => {
    const model = await loadTestModel("llama_basic");
    const peft = PeftModel.create(model, { peftType: "PROMPT_TUNING", numVirtualTokens: 2 });
    await assert.rejects(peft.forward({ inputIds: [[3, 4]], adapterNames: ["default"] }), /mixed-adapter/);
    assert.throws(() => peft.mergeAdapter(), /cannot be merged/);
    await model.release();
  });

  runConformance({
    name: "prompt tuning on BERT sequence classification",
    model: "bert_seq_cls",
    config: { peftType: "PROMPT_TUNING", taskType: "SEQ_CLS", numVirtualTokens: 3 },
    mergeable: false,
    mixedBatch: false,
  });
});

function parse(c: Record<string, unknown>) {
  return parsePeftConfig(c);
}
