/**
 * HRA and VeRA folders written the way HF PEFT 0.20 writes them load through
 * PeftModel.fromPretrained and reproduce the expected logits, unmerged and after mergeAndUnload.
 * Folders and logits come from scripts/goldens/make_vera_hra_goldens.py: our PyTorch
 * re-implementation of PEFT's HRA/VeRA math, not PEFT itself. vera_gpt2_no_projection has no
 * projections in the file: they must be regenerated from projection_prng_key exactly as torch does.
 */
import assert from "node:assert/strict";
import { join, resolve } from "node:path";
import { describe, test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import { readJsonFile } from "../../io/hf-folder.js";
import { readSafetensors } from "../../io/safetensors.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { GOLDEN_MODELS, REPO_ROOT } from "../../testing/paths.js";
import { PeftModel } from "../peft-model.js";

const ROOT = resolve(REPO_ROOT, "test/golden/peft-vera-hra");
const CASES = ["hra_llama", "hra_gs_llama", "vera_llama", "vera_gpt2_no_projection"];

/** Max |got − want| over the [batch, position] rows where valid is 1. */
function maxDiff(got: Float32Array, want: Float32Array, valid: HostTensor): number {
  assert.equal(got.length, want.length);
  const per = want.length / valid.data.length;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    if (!Number((valid.data as ArrayLike<number>)[Math.floor(i / per)])) continue;
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= worst)) worst = Number.isNaN(d) ? Number.POSITIVE_INFINITY : d;
  }
  return worst;
}

describe("HRA / VeRA folders in PEFT's format match PyTorch goldens (atol 1e-4)", () => {
  for (const name of CASES) {
    test(name, async () => {
      const dir = join(ROOT, name);
      const meta = readJsonFile(join(dir, "meta.json"), "golden meta") as { base_model: string; atol: number };
      const g = readSafetensors(join(dir, "golden.safetensors")).tensors;
      const model = await AutoModelForCausalLM.fromPretrained(join(GOLDEN_MODELS, meta.base_model));
      try {
        const peft = PeftModel.fromPretrained(model, dir);
        const inputs = { inputIds: g.input_ids, attentionMask: g.attention_mask };
        const unmerged = (await peft.forward(inputs)).logits?.data as Float32Array;
        const d = maxDiff(unmerged, g.logits.data as Float32Array, g.valid);
        assert.ok(d <= meta.atol, `unmerged: ${d}`);
        const merged = (await peft.mergeAndUnload().forward(inputs)).logits?.data as Float32Array;
        const dm = maxDiff(merged, g.logits.data as Float32Array, g.valid);
        assert.ok(dm <= meta.atol, `merged: ${dm}`);
      } finally {
        await model.release();
      }
    });
  }
});
