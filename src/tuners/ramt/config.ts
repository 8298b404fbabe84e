import { type CommonConfig, commonJson, FieldReader, PeftConfigError, type RawPeftConfig, readCommon } from "../config.js";
import type { TargetSpec } from "../targets.js";

/**
 * R-AMT (Zheng et al. 2023, "Regularized Mask Tuning: Uncovering Hidden Knowledge in Pre-trained
 * Vision-Language Models"), after the authors' code (wuw2019/RMT, code/trainers/masktuning.py,
 * code/modules/masklayers.py, code/train.py's cfg.MASK): a real-valued score S per entry of each
 * targeted weight, the binary mask M = 1[S > τ] (straight-through), θ_eff = M ⊙ θ. peft_type
 * "RAMT" is peftkit's.
 */
export interface RamtConfig extends CommonConfig, TargetSpec {
  /** Initial score of every entry (cfg.MASK.SCALE, init '1s'): 1e-2. */
  maskScale: number;
  /** τ: an entry is on while its score is above τ (cfg.MASK.THRESHOLD): 5e-3. */
  threshold: number;
  /** Weight of Σ_tensors ‖S‖₂ (not squared) added to the task loss (vit_b16.yaml's LOSS_WEIGHT): 1e-4; 0: no penalty. */
  maskLossWeight: number;
  /**
   * λ of the gradient dropout (cfg.MASK.GDR_LAMBDA): each element of the task gradient is kept with
   * the probability its sign agrees with the distillation gradient's, and scaled by 1 − λ when
   * dropped. 1 (code default) drops fully; 0 turns the dropout off (plain task gradient).
   */
  gradDropLambda: number;
  /** T_k of the soft cross-entropy to the frozen model's logits (cfg.MASK.GDR_T): 1. */
  distillTemperature: number;
  modulesToSave: string[] | null;
  /**
   * Write the trained scores (F32) instead of the bit-packed masks: a folder to continue training
   * from exactly. Default false: masks only, 8 per byte (what the authors' save_model writes).
   */
  saveScores: boolean;
  /** peftkit's, for tests: true (default) starts every score at mask_scale; false draws U[0, 2·mask_scale). */
  initWeights: boolean;
}

/** The attention projections (q, k, v, o) of each architecture: R-AMT's masked MHSA weights. */
export const RAMT_DEFAULT_TARGETS: Readonly<Record<string, readonly string[]>> = {
  llama: ["q_proj", "k_proj", "v_proj", "o_proj"],
  mistral: ["q_proj", "k_proj", "v_proj", "o_proj"],
  qwen2: ["q_proj", "k_proj", "v_proj", "o_proj"],
  gpt2: ["c_attn", "attn.c_proj"],
  bert: ["query", "key", "value", "attention.output.dense"],
  roberta: ["query", "key", "value", "attention.output.dense"],
  vit: ["query", "key", "value", "attention.output.dense"],
};

export function parseRamtConfig(raw: RawPeftConfig, where: string): RamtConfig {
  const r = new FieldReader(raw, where);
  const cfg: RamtConfig = {
    ...readCommon(r, "RAMT"),
    maskScale: r.num("mask_scale", 1e-2),
    threshold: r.num("threshold", 5e-3),
    maskLossWeight: r.num("mask_loss_weight", 1e-4),
    gradDropLambda: r.num("grad_drop_lambda", 1),
    distillTemperature: r.num("distill_temperature", 1),
    targetModules: r.targets("target_modules"),
    excludeModules: r.targets("exclude_modules"),
    modulesToSave: r.strList("modules_to_save"),
    layersToTransform: r.intOrList("layers_to_transform"),
    layersPattern: r.targets("layers_pattern"),
    saveScores: r.bool("save_scores", false),
    initWeights: r.bool("init_weights", true),
  };
  const fail = (field: string, want: string, got: number) => {
    throw new PeftConfigError(`${where}: field "${field}" must be ${want}, got ${got}`);
  };
  if (!(cfg.maskScale > 0)) fail("mask_scale", "> 0", cfg.maskScale);
  if (!(cfg.threshold < cfg.maskScale)) fail("threshold", `below mask_scale (${cfg.maskScale}), or every mask starts off`, cfg.threshold);
  if (!(cfg.maskLossWeight >= 0)) fail("mask_loss_weight", ">= 0", cfg.maskLossWeight);
  if (!(cfg.gradDropLambda >= 0 && cfg.gradDropLambda <= 1)) fail("grad_drop_lambda", "in [0, 1]", cfg.gradDropLambda);
  if (!(cfg.distillTemperature > 0)) fail("distill_temperature", "> 0", cfg.distillTemperature);
  return cfg;
}

export function ramtConfigJson(c: RamtConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    mask_scale: c.maskScale,
    threshold: c.threshold,
    mask_loss_weight: c.maskLossWeight,
    grad_drop_lambda: c.gradDropLambda,
    distill_temperature: c.distillTemperature,
    target_modules: c.targetModules,
    exclude_modules: c.excludeModules,
    modules_to_save: c.modulesToSave,
    layers_to_transform: c.layersToTransform,
    layers_pattern: c.layersPattern,
    save_scores: c.saveScores,
    init_weights: c.initWeights,
  };
}
