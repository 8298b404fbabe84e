import { FieldReader, PeftConfigError, type RawPeftConfig } from "../config.js";
import { type LoraConfig, loraConfigJson, parseLoraConfig } from "../lora/config.js";

export const SPARSE_METHODS = ["omp", "rp", "grebsmo"] as const;
export type SparseMethod = (typeof SPARSE_METHODS)[number];

/**
 * DSEE is not in HF PEFT (peft_type "DSEE"): LoRA's config (r, lora_alpha, targets, …) plus the
 * sparse part's fields. Defaults follow the authors' ModelArguments (VITA-Group/DSEE run_glue.py)
 * except sparse_method, which peftkit defaults to "omp" because GreBsmo costs seconds to minutes per
 * matrix in JavaScript (measured in docs/methods/dsee.md).
 */
export interface DseeConfig extends LoraConfig {
  /** N: entries of S trained per targeted matrix (num_sparse, default 128). */
  numSparse: number;
  /** How the N positions are chosen, once, on the pretrained weight. */
  sparseMethod: SparseMethod;
  /** Seeds "rp"'s draw and GreBsmo's random start. */
  sparseSeed: number;
  /** true (the authors' forward): ΔW = (α/r)·(B·A + S); false: ΔW = (α/r)·B·A + S. */
  sparseScaling: boolean;
  /** GreBsmo: rows added to the low-rank factor per outer iteration (5), outer (100) and inner (2) iterations, threshold (0.01). */
  grebsmoRankStep: number;
  grebsmoOuterIters: number;
  grebsmoInnerIters: number;
  grebsmoThreshold: number;
  /**
   * The sparse final model (§5.4 of the spec, run_glue_prune_with_WAB.py), recorded by the run that
   * did it (train/dsee-prune.ts): the share of the other linear weights pruned by |W| and of the
   * adapted ones by |ΔW|, and the sparse-delta file (beside the adapter) that zeroes them, which the
   * adapter needs under it. null for an adapter trained on the unpruned base.
   */
  pruningRatio: number | null;
  adPruningRatio: number | null;
  baseDelta: string | null;
}

/** A pruning share in [0, 1); `what` names the flag or field. */
export function checkPruningRatio(ratio: number, what: string): void {
  if (!(ratio >= 0 && ratio < 1)) throw new PeftConfigError(`${what} must be in [0, 1), got ${ratio}`);
}

export function parseDseeConfig(raw: RawPeftConfig, where: string): DseeConfig {
  const given = raw.peft_type ?? "DSEE";
  if (given !== "DSEE") throw new PeftConfigError(`${where}: peft_type "${String(given)}" does not match DSEE`);
  const lora = parseLoraConfig({ ...raw, peft_type: "LORA" }, where);
  const r = new FieldReader(raw, where);
  const cfg: DseeConfig = {
    ...lora,
    peftType: "DSEE",
    numSparse: r.int("num_sparse", 128, 1),
    sparseMethod: r.str("sparse_method", "omp", SPARSE_METHODS),
    sparseSeed: r.int("sparse_seed", 0, 0),
    sparseScaling: r.bool("sparse_scaling", true),
    grebsmoRankStep: r.int("grebsmo_rank_step", 5, 1),
    grebsmoOuterIters: r.int("grebsmo_outer_iters", 100, 1),
    grebsmoInnerIters: r.int("grebsmo_inner_iters", 2, 1),
    grebsmoThreshold: r.num("grebsmo_threshold", 0.01),
    pruningRatio: raw.pruning_ratio === undefined || raw.pruning_ratio === null ? null : r.num("pruning_ratio", 0),
    adPruningRatio: raw.ad_pruning_ratio === undefined || raw.ad_pruning_ratio === null ? null : r.num("ad_pruning_ratio", 0),
    baseDelta: r.optStr("base_delta"),
  };
  if (cfg.pruningRatio !== null) checkPruningRatio(cfg.pruningRatio, `${where}: field "pruning_ratio"`);
  if (cfg.adPruningRatio !== null) checkPruningRatio(cfg.adPruningRatio, `${where}: field "ad_pruning_ratio"`);
  if (cfg.grebsmoThreshold < 0) throw new PeftConfigError(`${where}: field "grebsmo_threshold" must be >= 0, got ${cfg.grebsmoThreshold}`);
  // DoRA rescales W + s·B·A by a learned magnitude: the sparse term would sit outside that norm.
  if (cfg.useDora) throw new PeftConfigError(`${where}: DSEE does not combine with "use_dora"`);
  return cfg;
}

export function dseeConfigJson(c: DseeConfig): Record<string, unknown> {
  return {
    ...loraConfigJson(c),
    peft_type: "DSEE",
    num_sparse: c.numSparse,
    sparse_method: c.sparseMethod,
    sparse_seed: c.sparseSeed,
    sparse_scaling: c.sparseScaling,
    grebsmo_rank_step: c.grebsmoRankStep,
    grebsmo_outer_iters: c.grebsmoOuterIters,
    grebsmo_inner_iters: c.grebsmoInnerIters,
    grebsmo_threshold: c.grebsmoThreshold,
    pruning_ratio: c.pruningRatio,
    ad_pruning_ratio: c.adPruningRatio,
    base_delta: c.baseDelta,
  };
}
