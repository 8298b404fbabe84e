/** PEFT-suite conformance for the LoRA variants: DoRA, LoRA on embeddings, trainable biases. */
import { describe } from "node:test";
import { runConformance } from "../conformance.js";

describe("LoRA variants (conformance)", () => {
  runConformance({
    name: "DoRA on llama (q,v)",
    model: "llama_basic",
    identityConfig: { peftType: "LORA", r: 4, loraAlpha: 8, useDora: true },
    config: { peftType: "LORA", r: 4, loraAlpha: 8, useDora: true, initLoraWeights: false },
  });
  runConformance({
    name: "DoRA on GPT-2 Conv1D (fan_in_fan_out)",
    model: "gpt2",
    identityConfig: { peftType: "LORA", r: 4, useDora: true, fanInFanOut: true, targetModules: ["c_attn", "mlp.c_proj"] },
    config: {
      peftType: "LORA",
      r: 4,
      loraAlpha: 8,
      useDora: true,
      fanInFanOut: true,
      targetModules: ["c_attn", "mlp.c_proj"],
      initLoraWeights: false,
    },
  });
  runConformance({
    name: "LoRA on llama embed_tokens + q_proj",
    model: "llama_basic",
    identityConfig: { peftType: "LORA", r: 4, loraAlpha: 8, targetModules: ["embed_tokens", "q_proj"] },
    config: { peftType: "LORA", r: 4, loraAlpha: 8, targetModules: ["embed_tokens", "q_proj"], initLoraWeights: false },
  });
  runConformance({
    name: "DoRA on GPT-2 wte (tied to lm_head) + c_attn",
    model: "gpt2",
    identityConfig: { peftType: "LORA", r: 4, useDora: true, fanInFanOut: true, targetModules: ["wte", "c_attn"] },
    config: {
      peftType: "LORA",
      r: 4,
      loraAlpha: 0.2,
      useDora: true,
      fanInFanOut: true,
      // The gradient check covers every tensor; A and B against a forward with the norm frozen (DoRA §4.3).
      targetModules: ["wte", "c_attn", "mlp.c_proj"],
      initLoraWeights: false,
    },
  });
  runConformance({
    name: 'LoRA bias="all" on GPT-2',
    model: "gpt2",
    identityConfig: { peftType: "LORA", r: 4, fanInFanOut: true, bias: "all" },
    config: { peftType: "LORA", r: 4, loraAlpha: 8, fanInFanOut: true, bias: "all", initLoraWeights: false },
  });
  runConformance({
    name: 'LoRA bias="lora_only" on qwen2 (q/k/v have biases)',
    model: "qwen2",
    identityConfig: { peftType: "LORA", r: 4, bias: "lora_only", targetModules: ["q_proj", "k_proj", "o_proj"] },
    config: {
      peftType: "LORA",
      r: 4,
      loraAlpha: 8,
      bias: "lora_only",
      targetModules: ["q_proj", "k_proj", "o_proj"],
      initLoraWeights: false,
    },
  });
  runConformance({
    name: 'LoRA bias="all" on BERT classification with modules_to_save',
    model: "bert_seq_cls",
    config: { peftType: "LORA", taskType: "SEQ_CLS", r: 4, bias: "all", initLoraWeights: false, modulesToSave: ["classifier"] },
    mixedBatch: false,
  });
});
