import {
  type CommonConfig,
  commonJson,
  FieldReader,
  type RawPeftConfig,
  readCommon,
  readTargetFields,
  type TargetFields,
  targetFieldsJson,
} from "../config.js";

/**
 * LoLDU is not in HF PEFT (peft_type "LOLDU"). lora_alpha defaults to 1, as the authors'
 * LoLDUParametrization.from_linear (SKDDJ/LoLDU minloldu/loldu.py); r to 8, LoRA's default (the
 * authors pass the rank explicitly), so comparisons with LoRA start from the same rank.
 */
export interface LolduConfig extends CommonConfig, TargetFields {
  r: number;
  loraAlpha: number;
  /** False: z starts away from z₀ (random relative change), so the adapter is not a no-op (tests). */
  initWeights: boolean;
}

export function parseLolduConfig(raw: RawPeftConfig, where: string): LolduConfig {
  const f = new FieldReader(raw, where);
  return {
    ...readCommon(f, "LOLDU"),
    ...readTargetFields(f),
    r: f.int("r", 8, 1),
    loraAlpha: f.num("lora_alpha", 1),
    initWeights: f.bool("init_weights", true),
  };
}

export function lolduConfigJson(c: LolduConfig): Record<string, unknown> {
  return { ...commonJson(c), ...targetFieldsJson(c), r: c.r, lora_alpha: c.loraAlpha, init_weights: c.initWeights };
}
