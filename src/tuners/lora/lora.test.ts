import { describe } from "node:test";
import { runConformance } from "../conformance.js";

describe("LoRA", () => {
  runConformance({
    name: "LoRA on llama (q,v defaults)",
    model: "llama_basic",
    identityConfig: { peftType: "LORA", r: 4, loraAlpha: 8 },
    config: { peftType: "LORA", r: 4, loraAlpha: 8, initLoraWeights: false },
  });
  runConformance({
    name: "LoRA all-linear with rank/alpha patterns on llama GQA",
    model: "llama_gqa_tied",
    config: {
      peft_type: "LORA",
      r: 4,
      lora_alpha: 16,
      target_modules: "all-linear",
      init_lora_weights: false,
      rank_pattern: { o_proj: 2 },
      alpha_pattern: { "layers\\.1\\..*": 4 },
      use_rslora: true,
    },
  });
  runConformance({
    name: "LoRA on GPT-2 Conv1D (fan_in_fan_out)",
    model: "gpt2",
    identityConfig: { peftType: "LORA", r: 4, fanInFanOut: true },
    config: { peftType: "LORA", r: 4, loraAlpha: 8, fanInFanOut: true, targetModules: ["c_attn", "mlp.c_proj"], initLoraWeights: false },
  });
  runConformance({
    name: "LoRA on BERT classification with modules_to_save",
    model: "bert_seq_cls",
    config: { peftType: "LORA", taskType: "SEQ_CLS", r: 4, loraAlpha: 8, initLoraWeights: false, modulesToSave: ["classifier"] },
    mixedBatch: false,
  });
});
