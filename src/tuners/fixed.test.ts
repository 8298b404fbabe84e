import assert from "node:assert/strict";
import { test } from "node:test";
import { fixedTensorTest } from "./fixed.js";

test("fixedTensorTest: a method's fixed factors by saved key; trained tensors, modules_to_save copies and unknown configs are not fixed", () => {
  const svfit = fixedTensorTest({ peft_type: "SVFIT", r: 4, target_modules: "all-linear" });
  assert.equal(svfit("base_model.model.model.layers.0.self_attn.q_proj.svfit_U.weight"), true);
  assert.equal(svfit("model.layers.0.self_attn.q_proj.svfit_sigma0"), true);
  assert.equal(svfit("base_model.model.model.layers.0.self_attn.q_proj.svfit_sigma"), false);
  assert.equal(svfit("base_model.model.classifier.modules_to_save.default.weight"), false);
  const kasa = fixedTensorTest({ peft_type: "KASA" });
  assert.equal(kasa("base_model.model.h.0.attn.c_attn.kasa_tail_S"), true);
  assert.equal(kasa("base_model.model.h.0.attn.c_attn.kasa_A.weight"), false);
  assert.equal(fixedTensorTest({ peft_type: "LORA", r: 8 })("base_model.model.x.lora_A.weight"), false);
  assert.equal(fixedTensorTest({ peft_type: "NOPE" })("x"), false);
  assert.equal(fixedTensorTest({ peft_type: "SVFIT", r: "eight" })("x.svfit_U.weight"), false);
});
