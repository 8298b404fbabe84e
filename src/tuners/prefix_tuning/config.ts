import { FieldReader, PeftConfigError, type RawPeftConfig } from "../config.js";
import { type PromptLearningConfig, promptLearningJson, readPromptLearning, resolvePromptLearning } from "../prompt_tuning/config.js";
import type { ModelInfo } from "../tuner.js";

export interface PrefixTuningConfig extends PromptLearningConfig {
  /** null: random (nn.Embedding's N(0, 1), nn.Linear's default); "zero": the prefix starts at zero. */
  initWeights: "zero" | null;
  encoderHiddenSize: number | null;
  prefixProjection: boolean;
}

export function parsePrefixTuningConfig(raw: RawPeftConfig, where: string): PrefixTuningConfig {
  const r = new FieldReader(raw, where);
  const base = readPromptLearning(r, "PREFIX_TUNING");
  const init = r.any("init_weights");
  if (init !== undefined && init !== null && init !== "zero")
    throw new PeftConfigError(`${where}: field "init_weights" must be null or "zero", got ${JSON.stringify(init)}`);
  return {
    ...base,
    initWeights: (init as "zero" | null | undefined) ?? null,
    encoderHiddenSize: r.int("encoder_hidden_size", 0, 1) || null,
    prefixProjection: r.bool("prefix_projection", false),
  };
}

export function prefixTuningConfigJson(c: PrefixTuningConfig): Record<string, unknown> {
  return {
    ...promptLearningJson(c),
    init_weights: c.initWeights,
    encoder_hidden_size: c.encoderHiddenSize,
    prefix_projection: c.prefixProjection,
  };
}

/**
 * Fills nulls from the model as PEFT's _prepare_prompt_learning_config: for configs with
 * num_key_value_heads (grouped-query attention) the prefix has the key/value heads, so token_dim
 * becomes head_dim · kv_heads and num_attention_heads kv_heads; encoder_hidden_size defaults to token_dim.
 */
export function resolvePrefix(info: ModelInfo, c: PrefixTuningConfig): PrefixTuningConfig {
  const r = resolvePromptLearning(info, c);
  const mc = info.model.config;
  if (typeof mc.num_key_value_heads === "number") {
    const headDim = typeof mc.head_dim === "number" ? mc.head_dim : (r.tokenDim as number) / (r.numAttentionHeads as number);
    r.tokenDim = headDim * mc.num_key_value_heads;
    r.numAttentionHeads = mc.num_key_value_heads;
  }
  r.encoderHiddenSize = r.encoderHiddenSize ?? r.tokenDim;
  return r;
}
