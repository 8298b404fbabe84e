import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import { readSafetensors, writeSafetensors } from "../io/safetensors.js";
import { ModelError } from "../nn/context.js";
import { GOLDEN_MODELS } from "../testing/paths.js";
import { AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification } from "./auto.js";

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
