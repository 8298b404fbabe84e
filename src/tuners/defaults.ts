/** Per-architecture default target modules, as PEFT's TRANSFORMERS_MODELS_TO_*_TARGET_MODULES_MAPPING. */
export const LORA_DEFAULT_TARGETS: Readonly<Record<string, readonly string[]>> = {
  llama: ["q_proj", "v_proj"],
  mistral: ["q_proj", "v_proj"],
  qwen2: ["q_proj", "v_proj"],
  gpt2: ["c_attn"],
  bert: ["query", "value"],
  roberta: ["query", "value"],
  vit: ["query", "value"],
};
