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

/** BitFit is not in HF PEFT: these fields follow LoRA's conventions for choosing modules. */
export interface BitFitConfig extends CommonConfig, TargetFields {
  /** true: exact copies of the base biases (a no-op); false: copies plus N(0, 0.02²) noise (tests). */
  initBitfitWeights: boolean;
}

export function parseBitFitConfig(raw: RawPeftConfig, where: string): BitFitConfig {
  const r = new FieldReader(raw, where);
  return {
    ...readCommon(r, "BITFIT"),
    ...readTargetFields(r),
    initBitfitWeights: r.bool("init_bitfit_weights", true),
  };
}

export function bitFitConfigJson(c: BitFitConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    ...targetFieldsJson(c),
    init_bitfit_weights: c.initBitfitWeights,
  };
}
