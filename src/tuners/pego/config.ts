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
 * PEGO is not in HF PEFT (peft_type "PEGO"). Defaults are the authors' (JudgingH/PEGO run.sh:
 * --peft_hp 4 --lora_nums 4 --ld 1e-3 on four of its five benchmarks, PACS uses --lora_nums 2;
 * their LoRA modules have no scaling, so lora_alpha defaults to r, s = 1).
 */
export interface PegoConfig extends CommonConfig, TargetFields {
  /** Rank of each LoRA module of the group. */
  r: number;
  /** Number N of LoRA modules per targeted layer (the authors' lora_nums). */
  loraNums: number;
  /** s = lora_alpha / r scales every module's B·A. */
  loraAlpha: number;
  loraDropout: number;
  /** λ, the weight of the orthogonality regulariser (the authors' `ld`). */
  orthLambda: number;
  /** False: every B starts uniform instead of zero, so the group is not a no-op (tests). */
  initWeights: boolean;
}

export function parsePegoConfig(raw: RawPeftConfig, where: string): PegoConfig {
  const f = new FieldReader(raw, where);
  const common = readCommon(f, "PEGO");
  const r = f.int("r", 4, 1);
  const c: PegoConfig = {
    ...common,
    ...readTargetFields(f),
    r,
    loraNums: f.int("lora_nums", 4, 1),
    loraAlpha: f.num("lora_alpha", r),
    loraDropout: f.num("lora_dropout", 0),
    orthLambda: f.num("orth_lambda", 1e-3),
    initWeights: f.bool("init_weights", true),
  };
  if (c.loraDropout < 0 || c.loraDropout >= 1)
    throw new PeftConfigError(`${where}: field "lora_dropout" must be in [0, 1), got ${c.loraDropout}`);
  if (c.orthLambda < 0) throw new PeftConfigError(`${where}: field "orth_lambda" must be >= 0, got ${c.orthLambda}`);
  return c;
}

export function pegoConfigJson(c: PegoConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    ...targetFieldsJson(c),
    r: c.r,
    lora_nums: c.loraNums,
    lora_alpha: c.loraAlpha,
    lora_dropout: c.loraDropout,
    orth_lambda: c.orthLambda,
    init_weights: c.initWeights,
  };
}
