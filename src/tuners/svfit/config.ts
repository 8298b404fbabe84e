import {
  type CommonConfig,
  commonJson,
  FieldReader,
  PeftConfigError,
  type RawPeftConfig,
  readCommon,
  readTargetFields,
  type TargetFields,
  targetFieldsJson,
} from "../config.js";

/** The rank when neither r nor energy_threshold is given (LoRA's default, for comparable runs). */
export const SVFIT_DEFAULT_R = 8;

/**
 * SVFit is not in HF PEFT (peft_type "SVFIT"). Either a fixed rank r per layer, or the paper's
 * criterion: the smallest r whose top singular values keep `energy_threshold` of Σσ² (0.99 in the
 * paper's abstract). Giving both is a conflict.
 */
export interface SvfitConfig extends CommonConfig, TargetFields {
  /** Null when energy_threshold picks the rank per layer. */
  r: number | null;
  energyThreshold: number | null;
  /** False: σ starts away from σ₀ (random relative change), so the adapter is not a no-op (tests). */
  initWeights: boolean;
}

export function parseSvfitConfig(raw: RawPeftConfig, where: string): SvfitConfig {
  const f = new FieldReader(raw, where);
  const given = raw.r !== undefined && raw.r !== null;
  const r = f.int("r", SVFIT_DEFAULT_R, 1);
  const e = f.any("energy_threshold");
  let energyThreshold: number | null = null;
  if (e !== undefined && e !== null) {
    if (typeof e !== "number" || !(e > 0 && e <= 1))
      throw new PeftConfigError(`${where}: field "energy_threshold" must be a number in (0, 1], got ${JSON.stringify(e)}`);
    if (given) throw new PeftConfigError(`${where}: give either "r" or "energy_threshold", not both (r = ${r}, energy_threshold = ${e})`);
    energyThreshold = e;
  }
  return {
    ...readCommon(f, "SVFIT"),
    ...readTargetFields(f),
    r: energyThreshold === null ? r : null,
    energyThreshold,
    initWeights: f.bool("init_weights", true),
  };
}

export function svfitConfigJson(c: SvfitConfig): Record<string, unknown> {
  return { ...commonJson(c), ...targetFieldsJson(c), r: c.r, energy_threshold: c.energyThreshold, init_weights: c.initWeights };
}
