/**
 * HUT, SoKA and LoRA-SB adapter folders written by scripts/goldens/make_kron_goldens.py, whose logits
 * come from the methods' definitions re-derived in plain PyTorch (torch.kron for SoKA; GPT-2's Conv1D
 * [in, out] layout included). Loaded here with PeftModel.fromPretrained and compared, unmerged and
 * merged, where `valid` is set.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import { readSafetensors } from "../../io/safetensors.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { loadTestModel, type TestModel } from "../conformance.js";
import { PeftModel } from "../peft-model.js";

const DIR = resolve(REPO_ROOT, "test/golden/kron");

function worst(got: Float32Array, want: Float32Array, valid: Uint8Array, vocab: number): number {
  let m = 0;
  for (let i = 0; i < want.length; i++) if (valid[Math.floor(i / vocab)]) m = Math.max(m, Math.abs(got[i] - want[i]));
  return m;
}

describe("HUT / SoKA / LoRA-SB folders match PyTorch re-derivations (atol 1e-4)", () => {
  const cases = readdirSync(DIR).sort();
  test("all six cases are present", () => assert.equal(cases.length, 6));
  for (const name of cases) {
    test(name, async () => {
      const meta = JSON.parse(readFileSync(join(DIR, name, "meta.json"), "utf8")) as { base_model: TestModel; atol: number };
      const g = readSafetensors(join(DIR, name, "golden.safetensors")).tensors as Record<string, HostTensor>;
      const model = await loadTestModel(meta.base_model);
      try {
        const peft = PeftModel.fromPretrained(model, join(DIR, name));
        const inputs = { inputIds: g.input_ids, attentionMask: g.attention_mask };
        const want = g.logits.data as Float32Array;
        const vocab = g.logits.shape[2];
        const valid = g.valid.data as Uint8Array;
        const unmerged = (await peft.forward(inputs)).logits?.data as Float32Array;
        assert.ok(worst(unmerged, want, valid, vocab) <= meta.atol, `unmerged: ${worst(unmerged, want, valid, vocab)}`);
        peft.mergeAdapter();
        const merged = (await peft.forward(inputs)).logits?.data as Float32Array;
        assert.ok(worst(merged, want, valid, vocab) <= meta.atol, `merged: ${worst(merged, want, valid, vocab)}`);
      } finally {
        await model.release();
      }
    });
  }
});
