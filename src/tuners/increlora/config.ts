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
 * IncreLoRA is not in HF PEFT (peft_type "INCRELORA"). Defaults are the authors' (FeiyuZhang98/
 * IncreLoRA: README's RankAllocator example and NLU/scripts/rank=2: lora_r 1, target_rank 2,
 * init_warmup 100, incre_interval 100, beta 0.85, reg_orth_coef 0.1, lora_alpha 32; top_h 10 is
 * run_glue.py's default, advance_learn True).
 */
export interface IncreloraConfig extends CommonConfig, TargetFields {
  /** Each module's initial rank (the authors' lora_r). */
  initR: number;
  /** The average final rank per module (the authors' target_rank); the total budget is this × modules. */
  targetR: number;
  /** The total final rank over all modules (target_total_rank); null: targetR × modules. */
  targetTotalRank: number | null;
  loraAlpha: number;
  loraDropout: number;
  /** Growth starts after this many steps (init_warmup). */
  initWarmup: number;
  /** Steps between two growth rounds (incre_interval). */
  increInterval: number;
  /** Modules that grow per round (top_h). */
  topH: number;
  /** Ranks a chosen module gains per round (incre_rank_num); null: targetR / 2 as the authors' table. */
  increRankNum: number | null;
  /** Reserved ranks train their A and B ahead of activation with E = 1e-5 (advance_learn). */
  advanceLearn: boolean;
  beta1: number;
  beta2: number;
  /** Weight of the orthogonality regulariser (reg_orth_coef). */
  orthRegWeight: number;
  /**
   * The largest rank one module may reach: the training step is compiled once with this many
   * (plus the reserved) ranks per module, since growing a tensor would recompile. A module at
   * this rank is no longer chosen. null: 3 × targetR (capped by the layer).
   */
  maxRank: number | null;
  /** Written after training: each module's rank (its ranknum, which sets its scaling). */
  rankPattern: Record<string, number> | null;
  /** Written after training: each module's saved triplets (its rank plus reserved ones). */
  tripletPattern: Record<string, number> | null;
  /** False: E starts N(0, 1) on the initial ranks instead of 0, so the adapter is not a no-op (tests). */
  initWeights: boolean;
}

/** Ranks a module gains per round: the authors' table {2: 1, 4: 2, 6: 3, 8: 4}, i.e. half the target. */
export function increRankNum(c: IncreloraConfig): number {
  return c.increRankNum ?? Math.max(1, Math.floor(c.targetR / 2));
}

function intMap(f: FieldReader, field: string): Record<string, number> | null {
  const v = f.any(field);
  if (v === undefined || v === null) return null;
  const m = f.numberMap(field);
  for (const [k, n] of Object.entries(m))
    if (!Number.isInteger(n) || n < 0)
      throw new PeftConfigError(`${f.where}: field "${field}" entry "${k}" must be an integer >= 0, got ${n}`);
  return m;
}

export function parseIncreloraConfig(raw: RawPeftConfig, where: string): IncreloraConfig {
  const f = new FieldReader(raw, where);
  const total = f.any("target_total_rank");
  const inc = f.any("incre_rank_num");
  const max = f.any("max_rank");
  const c: IncreloraConfig = {
    ...readCommon(f, "INCRELORA"),
    ...readTargetFields(f),
    initR: f.int("init_r", 1, 1),
    targetR: f.int("target_r", 2, 1),
    targetTotalRank: total === undefined || total === null ? null : f.int("target_total_rank", 0, 1),
    loraAlpha: f.num("lora_alpha", 32),
    loraDropout: f.num("lora_dropout", 0),
    initWarmup: f.int("init_warmup", 100, 0),
    increInterval: f.int("incre_interval", 100, 1),
    topH: f.int("top_h", 10, 1),
    increRankNum: inc === undefined || inc === null ? null : f.int("incre_rank_num", 1, 1),
    advanceLearn: f.bool("advance_learn", true),
    beta1: f.num("beta1", 0.85),
    beta2: f.num("beta2", 0.85),
    orthRegWeight: f.num("orth_reg_weight", 0.1),
    maxRank: max === undefined || max === null ? null : f.int("max_rank", 1, 1),
    rankPattern: intMap(f, "rank_pattern"),
    tripletPattern: intMap(f, "triplet_pattern"),
    initWeights: f.bool("init_weights", true),
  };
  if (c.loraDropout < 0 || c.loraDropout >= 1)
    throw new PeftConfigError(`${where}: field "lora_dropout" must be in [0, 1), got ${c.loraDropout}`);
  for (const k of ["beta1", "beta2"] as const)
    if (!(c[k] > 0 && c[k] < 1)) throw new PeftConfigError(`${where}: field "${k}" must be in (0, 1), got ${c[k]}`);
  if (c.orthRegWeight < 0) throw new PeftConfigError(`${where}: field "orth_reg_weight" must be >= 0, got ${c.orthRegWeight}`);
  if (c.targetTotalRank === null && c.targetR <= c.initR)
    throw new PeftConfigError(
      `${where}: field "target_r" (${c.targetR}) must exceed the initial rank init_r (${c.initR}): IncreLoRA only grows ranks`,
    );
  if (c.maxRank !== null && c.maxRank < c.initR)
    throw new PeftConfigError(`${where}: field "max_rank" (${c.maxRank}) must be at least the initial rank init_r (${c.initR})`);
  if ((c.rankPattern === null) !== (c.tripletPattern === null))
    throw new PeftConfigError(`${where}: fields "rank_pattern" and "triplet_pattern" are written together; one is missing`);
  return c;
}

export function increloraConfigJson(c: IncreloraConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    ...targetFieldsJson(c),
    init_r: c.initR,
    target_r: c.targetR,
    target_total_rank: c.targetTotalRank,
    lora_alpha: c.loraAlpha,
    lora_dropout: c.loraDropout,
    init_warmup: c.initWarmup,
    incre_interval: c.increInterval,
    top_h: c.topH,
    incre_rank_num: c.increRankNum,
    advance_learn: c.advanceLearn,
    beta1: c.beta1,
    beta2: c.beta2,
    orth_reg_weight: c.orthRegWeight,
    max_rank: c.maxRank,
    rank_pattern: c.rankPattern,
    triplet_pattern: c.tripletPattern,
    init_weights: c.initWeights,
  };
}
