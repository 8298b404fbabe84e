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

/** SSF is not in HF PEFT: these fields follow LoRA's conventions for choosing layers. */
export interface SsfConfig extends CommonConfig, TargetFields {
  initSsfWeights: boolean;
}

export function parseSsfConfig(raw: RawPeftConfig, where: string): SsfConfig {
  const r = new FieldReader(raw, where);
  return {
    ...readCommon(r, "SSF"),
    ...readTargetFields(r),
    initSsfWeights: r.bool("init_ssf_weights", true),
  };
}

export function ssfConfigJson(c: SsfConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    ...targetFieldsJson(c),
    init_ssf_weights: c.initSsfWeights,
  };
}
