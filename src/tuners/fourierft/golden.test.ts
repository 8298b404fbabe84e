/**
 * FourierFT folders written in HF PEFT 0.20's format load through PeftModel.fromPretrained and
 * reproduce the expected logits within 1e-5, unmerged and after mergeAndUnload. The folders hold
 * only the spectra: the positions must be regenerated from random_loc_seed as torch.randperm gives
 * them. Folders and logits come from scripts/goldens/make_fourierft_goldens.py, our PyTorch
 * re-derivation of PEFT's tuners/fourierft/layer.py (torch.randperm, torch.fft.ifft2), not PEFT itself.
 */
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, describe, test } from "node:test";
import type { HostTensor } from "../../engine/ir/host.js";
import { readJsonFile } from "../../io/hf-folder.js";
import { readSafetensors } from "../../io/safetensors.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { GOLDEN_MODELS, REPO_ROOT } from "../../testing/paths.js";
import { PeftModel } from "../peft-model.js";

const ROOT = resolve(REPO_ROOT, "test/golden/peft-fourierft");
const TOL = 1e-5;
const tmp = mkdtempSync(join(tmpdir(), "peftkit-fourierft-golden-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

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

async function logitsOf(dir: string, base: string, g: Map<string, HostTensor> | Record<string, HostTensor>) {
  const t = g as Record<string, HostTensor>;
  const model = await AutoModelForCausalLM.fromPretrained(join(GOLDEN_MODELS, base));
  try {
    const peft = PeftModel.fromPretrained(model, dir);
    const inputs = { inputIds: t.input_ids, attentionMask: t.attention_mask };
    const unmerged = (await peft.forward(inputs)).logits?.data as Float32Array;
    const merged = (await peft.mergeAndUnload().forward(inputs)).logits?.data as Float32Array;
    return { unmerged, merged };
  } finally {
    await model.release();
  }
}

describe(`FourierFT folders in PEFT's format match PyTorch goldens (atol ${TOL})`, () => {
  for (const name of ["fourierft_llama", "fourierft_gpt2"]) {
    test(name, async () => {
      const dir = join(ROOT, name);
      const meta = readJsonFile(join(dir, "meta.json"), "golden meta") as { base_model: string };
      const g = readSafetensors(join(dir, "golden.safetensors")).tensors;
      const { unmerged, merged } = await logitsOf(dir, meta.base_model, g);
      const d = maxDiff(unmerged, g.logits.data as Float32Array, g.valid);
      assert.ok(d <= TOL, `unmerged: ${d}`);
      const dm = maxDiff(merged, g.logits.data as Float32Array, g.valid);
      assert.ok(dm <= TOL, `merged: ${dm}`);
    });
  }

  test("fourierft_gpt2 with random_loc_seed 778 in its config gives the golden's other-seed logits (positions come from the seed)", async () => {
    const dir = join(tmp, "other-seed");
    cpSync(join(ROOT, "fourierft_gpt2"), dir, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8"));
    writeFileSync(join(dir, "adapter_config.json"), JSON.stringify({ ...cfg, random_loc_seed: 778 }));
    const g = readSafetensors(join(dir, "golden.safetensors")).tensors;
    const { unmerged } = await logitsOf(dir, "gpt2", g);
    assert.ok(maxDiff(unmerged, g.logits_other_seed.data as Float32Array, g.valid) <= TOL);
    assert.ok(maxDiff(unmerged, g.logits.data as Float32Array, g.valid) > 1e-2);
  });
});
