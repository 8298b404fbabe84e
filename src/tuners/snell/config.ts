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

/** How kept entries of D enter ΔW (see docs/methods/snell.md). */
export type SparsifyMode = "magnitude" | "mask";
const MODES: readonly SparsifyMode[] = ["magnitude", "mask"];

/**
 * SNELL is not in HF PEFT (peft_type "SNELL"). Defaults follow the authors' code (ssfgunner/SNELL:
 * train.py --low_rank_dim 8, model/vision_transformer_timm.py: num_Hs 2, SCALE_FACTOR_fc 0.1,
 * norm_p 2, dropout 0.1 on the branch input). The sparsity ratio has no single default there
 * (train.py's 0 switches sparsification off; the scripts use 0 to 0.995 per dataset): 0.5 here.
 */
export interface SnellConfig extends CommonConfig, TargetFields {
  /** The rank budget q (the authors' low_rank_dim): P and Q have q/H columns per head. */
  r: number;
  /** Kernel heads H (num_Hs); head h has the fixed coefficient coefficient·(−1)^h. */
  numHeads: number;
  /** The norm of the distance kernel (norm_p); only 2 (Euclidean, torch.cdist p=2) is implemented. */
  normP: number;
  /** The coefficient scale (SCALE_FACTOR_fc). */
  coefficient: number;
  /** The fraction s of each layer's |D| below the threshold (init_thres); 0 = dense (the authors' KLoRA). */
  sparsityRatio: number;
  /** "magnitude": ΔW = D ⊙ sg(|D|) ⊙ 1[|D| > t] (the authors' code); "mask": D ⊙ 1[|D| > t] (the paper). */
  sparsifyMode: SparsifyMode;
  /** Dropout on the branch input. */
  snellDropout: number;
}

/** SNELLA (peft_type "SNELLA"): SNELL with learnable α, γ, β and the layer-wise allocator (sparse_allocator.py). */
export interface SnellaConfig extends Omit<SnellConfig, "sparsityRatio"> {
  /** Every layer's sparsity ratio before the allocator moves it (init_thres; VTAB scripts: 0.01). */
  initRatio: number;
  /** The average sparsity ratio the budget ends at (target_ratio; train_alloc.py's default 0.9). */
  targetRatio: number;
  /** Steps at the initial budget before it decreases (init_warmup). */
  initWarmup: number;
  /** Final steps at the target budget (final_warmup). */
  finalWarmup: number;
  /** Steps between two re-allocations while the budget decreases (mask_interval). */
  maskInterval: number;
  beta1: number;
  beta2: number;
  /** Planned optimizer steps of the schedule (the authors' total_step); null: the run's. */
  totalStep: number | null;
}

function readShared(f: FieldReader, peftType: string) {
  const c = {
    ...readCommon(f, peftType),
    ...readTargetFields(f),
    r: f.int("r", 8, 1),
    numHeads: f.int("num_heads", 2, 1),
    normP: f.num("norm_p", 2),
    coefficient: f.num("coefficient", 0.1),
    sparsifyMode: (f.optStr("sparsify_mode") ?? "magnitude") as SparsifyMode,
    snellDropout: f.num("snell_dropout", 0.1),
  };
  const where = f.where;
  if (c.r % c.numHeads !== 0) throw new PeftConfigError(`${where}: field "r" (${c.r}) must be a multiple of "num_heads" (${c.numHeads})`);
  if (c.normP !== 2)
    throw new PeftConfigError(`${where}: field "norm_p" must be 2 (only the Euclidean kernel is implemented), got ${c.normP}`);
  if (!MODES.includes(c.sparsifyMode))
    throw new PeftConfigError(`${where}: field "sparsify_mode" must be one of ${MODES.join(", ")}, got "${c.sparsifyMode}"`);
  if (c.snellDropout < 0 || c.snellDropout >= 1)
    throw new PeftConfigError(`${where}: field "snell_dropout" must be in [0, 1), got ${c.snellDropout}`);
  return c;
}

function ratio(f: FieldReader, field: string, dflt: number): number {
  const v = f.num(field, dflt);
  if (!(v >= 0 && v < 1)) throw new PeftConfigError(`${f.where}: field "${field}" must be in [0, 1), got ${v}`);
  return v;
}

export function parseSnellConfig(raw: RawPeftConfig, where: string): SnellConfig {
  const f = new FieldReader(raw, where);
  return { ...readShared(f, "SNELL"), sparsityRatio: ratio(f, "sparsity_ratio", 0.5) };
}

function sharedJson(c: Omit<SnellConfig, "sparsityRatio">): Record<string, unknown> {
  return {
    ...commonJson(c),
    ...targetFieldsJson(c),
    r: c.r,
    num_heads: c.numHeads,
    norm_p: c.normP,
    coefficient: c.coefficient,
    sparsify_mode: c.sparsifyMode,
    snell_dropout: c.snellDropout,
  };
}

export function snellConfigJson(c: SnellConfig): Record<string, unknown> {
  return { ...sharedJson(c), sparsity_ratio: c.sparsityRatio };
}

export function parseSnellaConfig(raw: RawPeftConfig, where: string): SnellaConfig {
  const f = new FieldReader(raw, where);
  const total = f.any("total_step");
  const c: SnellaConfig = {
    ...readShared(f, "SNELLA"),
    initRatio: ratio(f, "init_ratio", 0.01),
    targetRatio: ratio(f, "target_ratio", 0.9),
    initWarmup: f.int("init_warmup", 0, 0),
    finalWarmup: f.int("final_warmup", 0, 0),
    maskInterval: f.int("mask_interval", 1, 1),
    beta1: f.num("beta1", 0.85),
    beta2: f.num("beta2", 0.85),
    totalStep: total === undefined || total === null ? null : f.int("total_step", 1, 1),
  };
  for (const k of ["beta1", "beta2"] as const)
    if (!(c[k] > 0 && c[k] < 1)) throw new PeftConfigError(`${where}: field "${k}" must be in (0, 1), got ${c[k]}`);
  return c;
}

export function snellaConfigJson(c: SnellaConfig): Record<string, unknown> {
  return {
    ...sharedJson(c),
    init_ratio: c.initRatio,
    target_ratio: c.targetRatio,
    init_warmup: c.initWarmup,
    final_warmup: c.finalWarmup,
    mask_interval: c.maskInterval,
    beta1: c.beta1,
    beta2: c.beta2,
    total_step: c.totalStep,
  };
}
