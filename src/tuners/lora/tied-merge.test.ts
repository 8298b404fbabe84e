/**
 * LoRA on the input embedding of a model whose output head is tied to it: the adapter changes the
 * input table only (unmerged and merged alike), and a merged model is saved untied, with both
 * tensors and `tie_word_embeddings: false`, so any loader runs the same model.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import { readSafetensors, writeSafetensors } from "../../io/safetensors.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { GOLDEN_MODELS } from "../../testing/paths.js";
import { loadTestModel, maxAbsDiff, type TestModel } from "../conformance.js";
import { PeftModel } from "../peft-model.js";

const IDS = [
  [5, 17, 200, 33, 9, 64],
  [250, 3, 3, 128, 77, 1],
];
const logits = async (m: { forward: PeftModel["forward"] }) => (await m.forward({ inputIds: IDS })).logits?.data as Float32Array;

function withTmp<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), "peftkit-tied-"));
  return fn(dir).finally(() => rmSync(dir, { recursive: true, force: true }));
}

const CASES: { model: TestModel; embed: string; head: string; config: Record<string, unknown> }[] = [
  {
    model: "llama_gqa_tied",
    embed: "model.embed_tokens.weight",
    head: "lm_head.weight",
    config: { peftType: "LORA", r: 4, loraAlpha: 16, initLoraWeights: false, targetModules: ["embed_tokens", "q_proj"] },
  },
  {
    model: "gpt2",
    embed: "transformer.wte.weight",
    head: "lm_head.weight",
    config: {
      peftType: "LORA",
      r: 4,
      loraAlpha: 16,
      useDora: true,
      fanInFanOut: true,
      initLoraWeights: false,
      targetModules: ["wte", "c_attn"],
    },
  },
];

describe("LoRA on a tied input embedding", () => {
  for (const c of CASES) {
    test(`${c.model}: unmerged = merged = saved and reloaded; saved untied with both tensors`, async () => {
      const model = await loadTestModel(c.model);
      assert.equal(model.weights.get(c.head), model.weights.get(c.embed), "the fixture is tied");
      const table = model.weights.get(c.embed) as HostTensor;
      const base = await logits(model);
      const peft = PeftModel.create(model, c.config, { seed: 3 });
      const unmerged = await logits(peft);
      assert.ok(maxAbsDiff(unmerged, base) > 0.05, "the adapter changes nothing");
      const merged = peft.mergeAndUnload();
      const mergedLogits = await logits(merged);
      assert.ok(maxAbsDiff(mergedLogits, unmerged) < 1e-5, `merged vs unmerged ${maxAbsDiff(mergedLogits, unmerged)}`);
      // The head keeps the base table, as in the unmerged forward.
      assert.equal(merged.weights.get(c.head), table);
      await withTmp(async (dir) => {
        merged.savePretrained(dir);
        const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
        assert.equal(config.tie_word_embeddings, false);
        const saved = readSafetensors(join(dir, "model.safetensors")).tensors;
        assert.deepEqual(saved[c.head]?.data, table.data);
        assert.deepEqual(saved[c.embed]?.data, merged.weights.get(c.embed)?.data);
        assert.ok(maxAbsDiff(saved[c.head].data as Float32Array, saved[c.embed].data as Float32Array) > 0.01);
        const reloaded = await AutoModelForCausalLM.fromPretrained(dir);
        assert.notEqual(reloaded.weights.get(c.head), reloaded.weights.get(c.embed));
        assert.equal(maxAbsDiff(await logits(reloaded), mergedLogits), 0);
        await reloaded.release();
      });
      await merged.release();
    });
  }

  test("a model whose tied weights still agree is saved tied, with one tensor", async () => {
    const model = await loadTestModel("llama_gqa_tied");
    await withTmp(async (dir) => {
      model.savePretrained(dir);
      assert.equal(JSON.parse(readFileSync(join(dir, "config.json"), "utf8")).tie_word_embeddings, true);
      const saved = readSafetensors(join(dir, "model.safetensors")).tensors;
      assert.ok(saved["model.embed_tokens.weight"]);
      assert.equal(saved["lm_head.weight"], undefined);
    });
    await model.release();
  });

  test("loading a checkpoint that says tied but holds a different head keeps both, with a warning (as transformers 5)", async () => {
    const model = await loadTestModel("llama_gqa_tied");
    const peft = PeftModel.create(model, CASES[0].config, { seed: 3 });
    const merged = peft.mergeAndUnload();
    const want = await logits(merged);
    await withTmp(async (dir) => {
      merged.savePretrained(dir);
      const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
      writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, tie_word_embeddings: true }));
      const warnings: string[] = [];
      const onWarning = (w: Error) => warnings.push(w.message);
      process.on("warning", onWarning);
      try {
        const loaded = await AutoModelForCausalLM.fromPretrained(dir);
        await new Promise((r) => setImmediate(r));
        assert.notEqual(loaded.weights.get("lm_head.weight"), loaded.weights.get("model.embed_tokens.weight"));
        assert.equal(maxAbsDiff(await logits(loaded), want), 0);
        assert.ok(
          warnings.some((w) => w.includes("tie_word_embeddings") && w.includes("lm_head.weight")),
          warnings.join("\n"),
        );
        await loaded.release();
      } finally {
        process.off("warning", onWarning);
      }
    });
    await merged.release();
  });

  test("a checkpoint that holds an equal copy of a tied weight shares one tensor", async () => {
    await withTmp(async (dir) => {
      const src = join(GOLDEN_MODELS, "llama_gqa_tied");
      copyFileSync(join(src, "config.json"), join(dir, "config.json"));
      const { tensors } = readSafetensors(join(src, "model.safetensors"));
      writeSafetensors(
        join(dir, "model.safetensors"),
        { ...tensors, "lm_head.weight": tensors["model.embed_tokens.weight"] },
        { format: "pt" },
      );
      const loaded = await AutoModelForCausalLM.fromPretrained(dir);
      assert.equal(loaded.weights.get("lm_head.weight"), loaded.weights.get("model.embed_tokens.weight"));
      await loaded.release();
    });
  });
});
