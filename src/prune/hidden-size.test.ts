import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { hostTensor } from "../engine/ir/host.js";
import { AutoModelForCausalLM } from "../models/auto.js";
import { PreTrainedModel } from "../models/pretrained.js";
import { loadTestModel, maxAbsDiff, randomIds, type TestModel } from "../tuners/conformance.js";
import { pruneHiddenSize } from "./hidden-size.js";

/** The model with the residual-stream channels outside `keep` written as 0 by every producer. */
function zeroDropped(model: PreTrainedModel, keep: readonly number[]): PreTrainedModel {
  const d = (model.config.hidden_size as number) ?? 0;
  const drop = Array.from({ length: d }, (_, j) => j).filter((j) => !keep.includes(j));
  const weights = new Map(model.weights);
  const edit = (name: string, zero: (w: Float32Array, shape: readonly number[]) => void) => {
    const t = model.weights.get(name);
    if (!t) return;
    const w = Float32Array.from(t.data as Float32Array);
    zero(w, t.shape);
    weights.set(name, hostTensor("f32", t.shape, w));
  };
  edit("model.embed_tokens.weight", (w, [v]) => {
    for (let i = 0; i < v; i++) for (const j of drop) w[i * d + j] = 0;
  });
  for (const name of model.weights.keys()) {
    if (!/(o_proj|down_proj)\.(weight|bias)$/.test(name)) continue;
    edit(name, (w, shape) => {
      const cols = shape.length === 2 ? shape[1] : 1;
      for (const j of drop) w.fill(0, j * cols, (j + 1) * cols);
    });
  }
  return new PreTrainedModel(model.config, model.arch, model.archConfig, model.head, weights, null, [], model.compileOptions);
}

const logits = async (m: PreTrainedModel, ids: number[][]) => (await m.forward({ inputIds: ids })).logits?.data as Float32Array;

describe("pruneHiddenSize", () => {
  for (const name of ["llama_basic", "llama_gqa_tied", "qwen2"] as TestModel[]) {
    test(`${name}: with the dropped channels 0 in the residual stream, the pruned model's logits equal the full one's (RMSNorm rescaled by √(d/d'))`, async () => {
      const base = await loadTestModel(name);
      const d = base.config.hidden_size as number;
      const keep = Array.from({ length: d }, (_, j) => j).filter((j) => j % 4 !== 1);
      const full = zeroDropped(base, keep);
      const pruned = pruneHiddenSize(full, keep);
      assert.equal(pruned.config.hidden_size, keep.length);
      assert.deepEqual(pruned.weights.get("model.embed_tokens.weight")?.shape, [256, keep.length]);
      const ids = randomIds(2, 7, 256);
      const want = await logits(full, ids);
      const got = await logits(pruned, ids);
      assert.ok(maxAbsDiff(got, want) < 1e-5, `pruned vs full ${maxAbsDiff(got, want)}`);
      // Saved and loaded as an ordinary model folder (head_dim and the tie written out).
      const dir = mkdtempSync(join(tmpdir(), "peftkit-prune-"));
      try {
        pruned.savePretrained(dir);
        const loaded = await AutoModelForCausalLM.fromPretrained(dir);
        assert.ok(maxAbsDiff(await logits(loaded, ids), want) < 1e-5);
        await loaded.release();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      await base.release();
      await full.release();
      await pruned.release();
    });
  }

  test("bad input: a non-LLaMA model, an empty or out-of-range keep set", async () => {
    const gpt2 = await loadTestModel("gpt2");
    assert.throws(() => pruneHiddenSize(gpt2, [0]), /needs a LLaMA-family decoder.*model_type is "gpt2"/);
    const llama = await loadTestModel("llama_basic");
    assert.throws(() => pruneHiddenSize(llama, []), /no hidden channel is kept/);
    assert.throws(() => pruneHiddenSize(llama, [0, 32]), /channel 32 is outside \[0, 32\)/);
    assert.throws(() => pruneHiddenSize(llama, [3, 3]), /ascending and distinct/);
    await gpt2.release();
    await llama.release();
  });
});
