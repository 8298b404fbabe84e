import { type CommonConfig, commonJson, FieldReader, PeftConfigError, type RawPeftConfig, readCommon } from "../config.js";
import type { ModelInfo } from "../tuner.js";

/**
 * PEFT's PromptLearningConfig fields, shared by prompt and prefix tuning. Nulls are filled from
 * the model when the adapter is created (PEFT's _prepare_prompt_learning_config), so saved
 * configs hold the resolved values.
 */
export interface PromptLearningConfig extends CommonConfig {
  numVirtualTokens: number;
  tokenDim: number | null;
  numTransformerSubmodules: number | null;
  numAttentionHeads: number | null;
  numLayers: number | null;
  modulesToSave: string[] | null;
}

export function readPromptLearning(r: FieldReader, peftType: string): PromptLearningConfig {
  const common = readCommon(r, peftType);
  const n = r.int("num_virtual_tokens", 0, 0);
  if (n < 1) throw new PeftConfigError(`${r.where}: field "num_virtual_tokens" is required (an integer >= 1)`);
  // 0 is returned only for an absent field, since a given value must be >= 1.
  const optInt = (f: string): number | null => r.int(f, 0, 1) || null;
  const cfg: PromptLearningConfig = {
    ...common,
    numVirtualTokens: n,
    tokenDim: optInt("token_dim"),
    numTransformerSubmodules: optInt("num_transformer_submodules"),
    numAttentionHeads: optInt("num_attention_heads"),
    numLayers: optInt("num_layers"),
    modulesToSave: r.strList("modules_to_save"),
  };
  if (cfg.numTransformerSubmodules !== null && cfg.numTransformerSubmodules !== 1)
    throw new PeftConfigError(
      `${r.where}: num_transformer_submodules ${cfg.numTransformerSubmodules} is for encoder-decoder models, which peftkit does not support (use 1)`,
    );
  return cfg;
}

export function promptLearningJson(c: PromptLearningConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    num_virtual_tokens: c.numVirtualTokens,
    token_dim: c.tokenDim,
    num_transformer_submodules: c.numTransformerSubmodules,
    num_attention_heads: c.numAttentionHeads,
    num_layers: c.numLayers,
    modules_to_save: c.modulesToSave,
  };
}

/** The fields with the model's values where the config leaves them null (PEFT's resolution, minus GQA). */
export function resolvePromptLearning<C extends PromptLearningConfig>(info: ModelInfo, c: C): C {
  return {
    ...c,
    tokenDim: c.tokenDim ?? info.hidden,
    numTransformerSubmodules: c.numTransformerSubmodules ?? 1,
    numAttentionHeads: c.numAttentionHeads ?? info.heads,
    numLayers: c.numLayers ?? info.numLayers,
  };
}

export type PromptTuningInit = "RANDOM" | "TEXT" | "SAMPLE_VOCAB";

export interface PromptTuningConfig extends PromptLearningConfig {
  promptTuningInit: PromptTuningInit;
  promptTuningInitText: string | null;
  tokenizerNameOrPath: string | null;
  tokenizerKwargs: Record<string, unknown> | null;
  /** peftkit only, never saved: token ids for TEXT init (what the tokenizer gives for the text). */
  promptTuningInitTokenIds: number[] | null;
}

export function parsePromptTuningConfig(raw: RawPeftConfig, where: string): PromptTuningConfig {
  const r = new FieldReader(raw, where);
  const base = readPromptLearning(r, "PROMPT_TUNING");
  const kwargs = r.any("tokenizer_kwargs");
  if (kwargs !== undefined && kwargs !== null && (typeof kwargs !== "object" || Array.isArray(kwargs)))
    throw new PeftConfigError(`${where}: field "tokenizer_kwargs" must be an object, got ${JSON.stringify(kwargs)}`);
  const ids = r.any("prompt_tuning_init_token_ids");
  if (ids !== undefined && ids !== null && !(Array.isArray(ids) && ids.length > 0 && ids.every((x) => Number.isInteger(x) && x >= 0)))
    throw new PeftConfigError(
      `${where}: field "prompt_tuning_init_token_ids" must be a non-empty list of token ids, got ${JSON.stringify(ids)}`,
    );
  const cfg: PromptTuningConfig = {
    ...base,
    promptTuningInit: r.str("prompt_tuning_init", "RANDOM", ["RANDOM", "TEXT", "SAMPLE_VOCAB"] as const),
    promptTuningInitText: r.optStr("prompt_tuning_init_text"),
    tokenizerNameOrPath: r.optStr("tokenizer_name_or_path"),
    tokenizerKwargs: (kwargs as Record<string, unknown> | null | undefined) ?? null,
    promptTuningInitTokenIds: (ids as number[] | null | undefined) ?? null,
  };
  if (cfg.promptTuningInit === "TEXT" && cfg.promptTuningInitText === null && cfg.promptTuningInitTokenIds === null)
    throw new PeftConfigError(`${where}: prompt_tuning_init "TEXT" needs prompt_tuning_init_text (or prompt_tuning_init_token_ids)`);
  if (cfg.tokenizerKwargs && cfg.promptTuningInit !== "TEXT")
    throw new PeftConfigError(`${where}: tokenizer_kwargs is only valid with prompt_tuning_init "TEXT"`);
  return cfg;
}

/** Every field PEFT's PromptTuningConfig writes. */
export function promptTuningConfigJson(c: PromptTuningConfig): Record<string, unknown> {
  return {
    ...promptLearningJson(c),
    prompt_tuning_init: c.promptTuningInit,
    prompt_tuning_init_text: c.promptTuningInitText,
    tokenizer_name_or_path: c.tokenizerNameOrPath,
    tokenizer_kwargs: c.tokenizerKwargs,
  };
}
