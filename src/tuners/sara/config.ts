import { type CommonConfig, commonJson, FieldReader, PeftConfigError, type RawPeftConfig, readCommon } from "../config.js";
import type { TargetSpec } from "../targets.js";

/**
 * SaRA (Hu et al. 2024, "SaRA: High-Efficient Diffusion Model Fine-tuning with Progressive Sparse
 * Low-Rank Adaptation"), after the authors' code (sjtuplayer/SaRA, optim/adamw.py): the entries
 * of each targeted weight with |W| < threshold train; optionally once, after progressive_iter
 * steps, the set is re-selected on the current weights. peft_type "SARA" is peftkit's.
 */
export interface SaraConfig extends CommonConfig, TargetSpec {
  /** θ: entries with |W| < θ (strict, absolute) train (finetune.sh's 2e-3). */
  threshold: number;
  /** After this many steps, keep training only the entries still below θ (fresh optimizer state); null: never. */
  progressiveIter: number | null;
  /**
   * λ of the nuclear-norm term λ·‖ΔW‖_* on one random layer per step (the paper's low-rank
   * constraint on the sparse update); 0 (default) is what the authors' default path effectively
   * trains (there the term's gradient never reaches the trained values).
   */
  lambdaRank: number;
  modulesToSave: string[] | null;
  /** peftkit's, for tests: true (default) starts the deltas at 0; false draws them from N(0, 0.1²)·θ. */
  initWeights: boolean;
}

export function parseSaraConfig(raw: RawPeftConfig, where: string): SaraConfig {
  const r = new FieldReader(raw, where);
  const cfg: SaraConfig = {
    ...readCommon(r, "SARA"),
    threshold: r.num("threshold", 2e-3),
    progressiveIter: r.any("progressive_iter") == null ? null : r.int("progressive_iter", 0, 1),
    lambdaRank: r.num("lambda_rank", 0),
    targetModules: r.targets("target_modules"),
    excludeModules: r.targets("exclude_modules"),
    modulesToSave: r.strList("modules_to_save"),
    layersToTransform: r.intOrList("layers_to_transform"),
    layersPattern: r.targets("layers_pattern"),
    initWeights: r.bool("init_weights", true),
  };
  if (!(cfg.threshold > 0)) throw new PeftConfigError(`${where}: field "threshold" must be > 0, got ${cfg.threshold}`);
  if (!(cfg.lambdaRank >= 0)) throw new PeftConfigError(`${where}: field "lambda_rank" must be >= 0, got ${cfg.lambdaRank}`);
  if (cfg.targetModules === null) throw new PeftConfigError(`${where}: field "target_modules" is required`);
  return cfg;
}

export function saraConfigJson(c: SaraConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    threshold: c.threshold,
    progressive_iter: c.progressiveIter,
    lambda_rank: c.lambdaRank,
    target_modules: c.targetModules,
    exclude_modules: c.excludeModules,
    modules_to_save: c.modulesToSave,
    layers_to_transform: c.layersToTransform,
    layers_pattern: c.layersPattern,
    init_weights: c.initWeights,
  };
}
