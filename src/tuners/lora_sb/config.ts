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

/**
 * LoRA-SB is not in HF PEFT: its fields follow LoRA's names. Defaults are the authors'
 * (RaghavSinghal10/lora-sb): r = 24 (their GLUE script; 96 for LLMs), α = r so s = α/r = 1.
 * eta is the step size η of the approximated first full fine-tuning step −η·sign(ΣG): the
 * authors use the learning rate of the first optimizer step (lr / warm-up steps).
 * svd_niter: null takes the exact rank-r truncation (the paper's optimal approximation); N uses the
 * randomized SVD with N power iterations instead (the authors' code: 10), for large layers.
 */
export interface LoraSbConfig extends CommonConfig, TargetFields {
  r: number;
  loraAlpha: number;
  eta: number;
  svdNiter: number | null;
}

export function parseLoraSbConfig(raw: RawPeftConfig, where: string): LoraSbConfig {
  const r = new FieldReader(raw, where);
  const rank = r.int("r", 24, 1);
  const eta = r.num("eta", 1e-3);
  if (!(eta > 0)) throw new PeftConfigError(`${where}: field "eta" must be > 0, got ${eta}`);
  return {
    ...readCommon(r, "LORA_SB"),
    ...readTargetFields(r),
    r: rank,
    loraAlpha: r.num("lora_alpha", rank),
    eta,
    svdNiter: r.any("svd_niter") === undefined || r.any("svd_niter") === null ? null : r.int("svd_niter", 10, 0),
  };
}

export function loraSbConfigJson(c: LoraSbConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    ...targetFieldsJson(c),
    r: c.r,
    lora_alpha: c.loraAlpha,
    eta: c.eta,
    svd_niter: c.svdNiter,
  };
}
