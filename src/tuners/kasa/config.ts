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
 * KaSA is not in HF PEFT (peft_type "KASA"). Defaults are the authors' GLUE script's
 * (juyongjiang/KaSA main.py: --lora_r 8 --lora_alpha 16 --lora_dropout 0.0 --beta 1e-4 --gemma 1e-3).
 */
export interface KasaConfig extends CommonConfig, TargetFields {
  r: number;
  loraAlpha: number;
  loraDropout: number;
  /** Weight of Σ‖δ‖² in the regulariser. */
  beta: number;
  /** Weight of Σ(‖BᵀB − I‖_F + ‖A·Aᵀ − I‖_F) in the regulariser (the authors' "gemma"). */
  gamma: number;
  /** False: B starts like nn.Linear's default instead of zero, so the LoRA branch is not a no-op (tests). */
  initWeights: boolean;
}

export function parseKasaConfig(raw: RawPeftConfig, where: string): KasaConfig {
  const f = new FieldReader(raw, where);
  const c: KasaConfig = {
    ...readCommon(f, "KASA"),
    ...readTargetFields(f),
    r: f.int("r", 8, 1),
    loraAlpha: f.num("lora_alpha", 16),
    loraDropout: f.num("lora_dropout", 0),
    beta: f.num("beta", 1e-4),
    gamma: f.num("gamma", 1e-3),
    initWeights: f.bool("init_weights", true),
  };
  if (c.loraDropout < 0 || c.loraDropout >= 1)
    throw new PeftConfigError(`${where}: field "lora_dropout" must be in [0, 1), got ${c.loraDropout}`);
  if (c.beta < 0) throw new PeftConfigError(`${where}: field "beta" must be >= 0, got ${c.beta}`);
  if (c.gamma < 0) throw new PeftConfigError(`${where}: field "gamma" must be >= 0, got ${c.gamma}`);
  return c;
}

export function kasaConfigJson(c: KasaConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    ...targetFieldsJson(c),
    r: c.r,
    lora_alpha: c.loraAlpha,
    lora_dropout: c.loraDropout,
    beta: c.beta,
    gamma: c.gamma,
    init_weights: c.initWeights,
  };
}
