/**
 * PiSSA/OLoRA/CorDA adapters written as plain LoRA for the original base (PEFT's
 * path_initial_model_for_weight_conversion): the original base with the converted adapter computes
 * what the residual base with the trained adapter computes.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { hostTensor } from "../../engine/ir/host.js";
import { loadTestModel, maxAbsDiff, randomIds } from "../conformance.js";
import { PeftModel } from "../peft-model.js";
import type { LoraConfig } from "./config.js";
import { mutatedToLora, saveConvertedLora } from "./convert.js";
import { LORA } from "./index.js";

for (const init of ["pissa", "olora"] as const) {
  test(`${init} → plain LoRA: original base + converted adapter = residual base + trained adapter; r, alpha doubled`, async () => {
    const dir = mkdtempSync(join(tmpdir(), "peftkit-convert-"));
    const model = await loadTestModel("llama_basic");
    const fresh = await loadTestModel("llama_basic");
    try {
      const peft = PeftModel.create(model, {
        peft_type: "LORA",
        r: 3,
        lora_alpha: 5,
        target_modules: ["q_proj", "down_proj"],
        init_lora_weights: init,
      });
      const initial = new Map(peft.adapter("default").tensors);
      // "Training": move every factor.
      let seed = 1;
      const moved = new Map(
        [...initial].map(([k, t]) => [
          k,
          hostTensor(
            "f32",
            t.shape,
            Float32Array.from(t.data as Float32Array, (v) => v + 0.05 * Math.sin(seed++)),
          ),
        ]),
      );
      peft.setAdapterTensors("default", moved);
      const ids = randomIds(2, 6, 256);
      const want = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
      saveConvertedLora(peft, "default", initial, dir);
      assert.deepEqual(peft.adapterNames, ["default"]);
      const cfg = JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8"));
      assert.equal(cfg.r, 6);
      assert.equal(cfg.lora_alpha, 10);
      assert.equal(cfg.init_lora_weights, true);
      const loaded = PeftModel.fromPretrained(fresh, dir);
      const got = (await loaded.forward({ inputIds: ids })).logits?.data as Float32Array;
      assert.ok(maxAbsDiff(got, want) < 1e-4, `logits differ by ${maxAbsDiff(got, want)}`);
      const base = (await loaded.disableAdapter(() => loaded.forward({ inputIds: ids }))).logits?.data as Float32Array;
      assert.ok(maxAbsDiff(base, want) > 1e-3, "the update is not trivial");
    } finally {
      await model.release();
      await fresh.release();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test("conversion keeps the scaling with rsLoRA (α·√2) and refuses rsLoRA with rank/alpha patterns, as PEFT", () => {
  const c = LORA.parseConfig({ peft_type: "LORA", r: 4, lora_alpha: 8, use_rslora: true, init_lora_weights: "pissa" }, "t") as LoraConfig;
  const { config } = mutatedToLora(c, new Map(), new Map());
  assert.ok(Math.abs(config.loraAlpha / Math.sqrt(config.r) - 8 / 2) < 1e-12);
  const p = LORA.parseConfig(
    { peft_type: "LORA", r: 4, use_rslora: true, rank_pattern: { q_proj: 2 }, init_lora_weights: "pissa" },
    "t",
  ) as LoraConfig;
  assert.throws(() => mutatedToLora(p, new Map(), new Map()), /not supported with rank_pattern or alpha_pattern together with use_rslora/);
});
