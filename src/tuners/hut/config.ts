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
 * HUT is not in HF PEFT: its fields follow LoRA's names and conventions (r, alpha, targets).
 * init_hut_weights: true starts B at zero (the adapter is a no-op); false draws B too (tests).
 */
export interface HutConfig extends CommonConfig, TargetFields {
  r: number;
  hutAlpha: number;
  initHutWeights: boolean;
}

export function parseHutConfig(raw: RawPeftConfig, where: string): HutConfig {
  const r = new FieldReader(raw, where);
  const rank = r.int("r", 8, 1);
  return {
    ...readCommon(r, "HUT"),
    ...readTargetFields(r),
    r: rank,
    // Default α = r: scale 1, so W' = W ⊙ (1 + B·A) as written.
    hutAlpha: r.num("hut_alpha", rank),
    initHutWeights: r.bool("init_hut_weights", true),
  };
}

export function hutConfigJson(c: HutConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    ...targetFieldsJson(c),
    r: c.r,
    hut_alpha: c.hutAlpha,
    init_hut_weights: c.initHutWeights,
  };
}
