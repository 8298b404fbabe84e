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

export const GROWTH_MODELS = ["linear", "non-linear"] as const;
export type GrowthModel = (typeof GROWTH_MODELS)[number];

/**
 * TriAdaptLoRA is not in HF PEFT (peft_type "TRIADAPTLORA"). Field names and defaults are those of
 * the `TriAdaptLoraConfig` in the PEFT fork found with the method (docs/methods/triadaptlora.md,
 * "Sources"): reference_rank 8, init_rank 1, init_warmup 0, incre_interval 1,
 * rank_growth_model "linear", orth_reg_weight 0.5; lora_alpha 8 and lora_dropout 0 are the
 * LoraConfig defaults of PEFT 0.4, which that fork extends (the authors' run scripts were not found).
 */
export interface TriadaptloraConfig extends CommonConfig, TargetFields {
  /** Each module's first block of ranks (init_rank). */
  initRank: number;
  /** The average final rank per module (reference_rank); the budget is this × modules. */
  referenceRank: number;
  /** The total final rank over all modules (target_total_rank); null: referenceRank × modules. */
  targetTotalRank: number | null;
  loraAlpha: number;
  loraDropout: number;
  /** Growth starts after this many steps (init_warmup). */
  initWarmup: number;
  /** Steps between two growth rounds (incre_interval). */
  increInterval: number;
  /** Ranks a growing module gains per round (incre_rank_num); null: referenceRank / 2 as the authors' table. */
  increRankNum: number | null;
  /** How the number of modules that grow follows the training progress (rank_growth_model). */
  rankGrowthModel: GrowthModel;
  /** The steps the threshold schedule spans (total_step); null: the run's planned optimizer steps. */
  totalStep: number | null;
  /** Weight of the orthogonality regulariser on A and B. */
  orthRegWeight: number;
  /**
   * The largest rank one module may reach (peftkit's: the step is compiled once at this size).
   * null: 3 × referenceRank (capped by the layer), rounded down to a whole block.
   */
  maxRank: number | null;
  /** Written after training: each module's rank. */
  rankPattern: Record<string, number> | null;
  /** False: the first diagonal block of the core starts N(0, 1) instead of 0, so the adapter is not a no-op (tests). */
  initWeights: boolean;
}

/** Ranks a module gains per round: the authors' table {2: 1, 4: 2, …, 100: 50, 128: 64}, i.e. half the reference rank. */
export function increRankNum(c: TriadaptloraConfig): number {
  return c.increRankNum ?? Math.max(1, Math.floor(c.referenceRank / 2));
}

function intMap(f: FieldReader, field: string): Record<string, number> | null {
  const v = f.any(field);
  if (v === undefined || v === null) return null;
  const m = f.numberMap(field);
  for (const [k, n] of Object.entries(m))
    if (!Number.isInteger(n) || n < 1)
      throw new PeftConfigError(`${f.where}: field "${field}" entry "${k}" must be an integer >= 1, got ${n}`);
  return m;
}

function optInt(f: FieldReader, field: string, min: number): number | null {
  const v = f.any(field);
  return v === undefined || v === null ? null : f.int(field, min, min);
}

export function parseTriadaptloraConfig(raw: RawPeftConfig, where: string): TriadaptloraConfig {
  const f = new FieldReader(raw, where);
  const c: TriadaptloraConfig = {
    ...readCommon(f, "TRIADAPTLORA"),
    ...readTargetFields(f),
    initRank: f.int("init_rank", 1, 1),
    referenceRank: f.int("reference_rank", 8, 1),
    targetTotalRank: optInt(f, "target_total_rank", 1),
    loraAlpha: f.num("lora_alpha", 8),
    loraDropout: f.num("lora_dropout", 0),
    initWarmup: f.int("init_warmup", 0, 0),
    increInterval: f.int("incre_interval", 1, 1),
    increRankNum: optInt(f, "incre_rank_num", 1),
    rankGrowthModel: f.str("rank_growth_model", "linear", GROWTH_MODELS),
    totalStep: optInt(f, "total_step", 1),
    orthRegWeight: f.num("orth_reg_weight", 0.5),
    maxRank: optInt(f, "max_rank", 1),
    rankPattern: intMap(f, "rank_pattern"),
    initWeights: f.bool("init_weights", true),
  };
  if (c.loraDropout < 0 || c.loraDropout >= 1)
    throw new PeftConfigError(`${where}: field "lora_dropout" must be in [0, 1), got ${c.loraDropout}`);
  if (c.orthRegWeight < 0) throw new PeftConfigError(`${where}: field "orth_reg_weight" must be >= 0, got ${c.orthRegWeight}`);
  if (c.targetTotalRank === null && c.referenceRank <= c.initRank)
    throw new PeftConfigError(
      `${where}: field "reference_rank" (${c.referenceRank}) must exceed "init_rank" (${c.initRank}): TriAdaptLoRA only grows ranks`,
    );
  if (c.maxRank !== null && c.maxRank < c.initRank)
    throw new PeftConfigError(`${where}: field "max_rank" (${c.maxRank}) must be at least "init_rank" (${c.initRank})`);
  if (c.totalStep !== null && c.totalStep <= c.initWarmup)
    throw new PeftConfigError(
      `${where}: field "total_step" (${c.totalStep}) must exceed "init_warmup" (${c.initWarmup}): the threshold schedule runs from init_warmup to total_step`,
    );
  return c;
}

export function triadaptloraConfigJson(c: TriadaptloraConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    ...targetFieldsJson(c),
    init_rank: c.initRank,
    reference_rank: c.referenceRank,
    target_total_rank: c.targetTotalRank,
    lora_alpha: c.loraAlpha,
    lora_dropout: c.loraDropout,
    init_warmup: c.initWarmup,
    incre_interval: c.increInterval,
    incre_rank_num: c.increRankNum,
    rank_growth_model: c.rankGrowthModel,
    total_step: c.totalStep,
    orth_reg_weight: c.orthRegWeight,
    max_rank: c.maxRank,
    rank_pattern: c.rankPattern,
    init_weights: c.initWeights,
  };
}
