import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { loadTestModel } from "../tuners/conformance.js";
import { randomGradients, withLoraSb } from "../tuners/lora_sb/testing.js";
import { PeftModel } from "../tuners/peft-model.js";
import { trainableNumel } from "./adapter-params.js";

test("compare counts a saved adapter's trained tensors only: LoRA-SB's R, SoKA's U and V, all of LoRA's", async () => {
  const dir = mkdtempSync(join(tmpdir(), "peftkit-adapter-params-"));
  try {
    const model = await loadTestModel("llama_basic");
    // q_proj and v_proj of 2 blocks, all 32×32.
    withLoraSb(model, { peftType: "LORA_SB", r: 4 }, randomGradients(2)).savePretrained(join(dir, "sb"));
    assert.equal(trainableNumel(join(dir, "sb")), 4 * 4 * 4);
    const m2 = await loadTestModel("llama_basic");
    const soka = PeftModel.create(m2, { peftType: "SOKA", r: 2 });
    soka.savePretrained(join(dir, "soka"));
    // Factors 4×4 and 8×8 per term: U and V only, not U⁰ and V⁰.
    assert.equal(trainableNumel(join(dir, "soka")), 4 * 2 * (16 + 64));
    assert.equal(soka.parameterCounts().trainable, 4 * 2 * (16 + 64));
    const m3 = await loadTestModel("llama_basic");
    const lora = PeftModel.create(m3, { peftType: "LORA", r: 2 });
    lora.savePretrained(join(dir, "lora"));
    assert.equal(trainableNumel(join(dir, "lora")), 4 * 2 * (32 + 32));
    await Promise.all([model.release(), m2.release(), m3.release()]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
