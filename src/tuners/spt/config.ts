import { type CommonConfig, commonJson, FieldReader, PeftConfigError, type RawPeftConfig, readCommon } from "../config.js";
import type { TargetSpec } from "../targets.js";

/**
 * SPT (He et al. 2023, "Sensitivity-Aware Visual Parameter-Efficient Fine-Tuning"; authors'
 * ziplab/SPT) as peftkit's peft_type "SPT". Creation fills `structured_modules` and `num_deltas`
 * from the calibration pass's sensitivities; they are saved, so a folder reloads without data.
 */
export interface SptConfig extends CommonConfig, TargetSpec {
  /** Trainable parameters to aim at (LoRA modules and single entries together); null: density. */
  numTunableWeights: number | null;
  /** Budget as a share of all the model's parameters (default 0.01), when num_tunable_weights is null. */
  density: number;
  /** α: a matrix with n_s ≥ n_struct/α sensitive entries gets a LoRA module instead (the scripts' 10). */
  alpha: number;
  /** Rank of the structured LoRA modules (low_rank_dim). */
  r: number;
  loraDropout: number;
  /** Written at creation: modules given a LoRA module. */
  structuredModules: string[] | null;
  /** Written at creation: module → entries trained one by one. */
  numDeltas: Record<string, number> | null;
  modulesToSave: string[] | null;
  /** true (default): LoRA B and the entries start at 0 (no change); false: N(0, 0.1²), for tests. */
  initWeights: boolean;
}

export function parseSptConfig(raw: RawPeftConfig, where: string): SptConfig {
  const r = new FieldReader(raw, where);
  const cfg: SptConfig = {
    ...readCommon(r, "SPT"),
    numTunableWeights: r.any("num_tunable_weights") == null ? null : r.int("num_tunable_weights", 0, 1),
    density: r.num("density", 0.01),
    alpha: r.num("alpha", 10),
    r: r.int("r", 8, 1),
    loraDropout: r.num("lora_dropout", 0),
    structuredModules: r.strList("structured_modules"),
    numDeltas: r.countMap("num_deltas"),
    targetModules: r.targets("target_modules"),
    excludeModules: r.targets("exclude_modules"),
    layersToTransform: r.intOrList("layers_to_transform"),
    layersPattern: r.targets("layers_pattern"),
    modulesToSave: r.strList("modules_to_save"),
    initWeights: r.bool("init_weights", true),
  };
  if (cfg.numTunableWeights === null && !(cfg.density > 0 && cfg.density <= 1))
    throw new PeftConfigError(`${where}: field "density" must be in (0, 1], got ${cfg.density}`);
  if (!(cfg.alpha > 0)) throw new PeftConfigError(`${where}: field "alpha" must be > 0, got ${cfg.alpha}`);
  if (!(cfg.loraDropout >= 0 && cfg.loraDropout < 1))
    throw new PeftConfigError(`${where}: field "lora_dropout" must be in [0, 1), got ${cfg.loraDropout}`);
  if ((cfg.structuredModules === null) !== (cfg.numDeltas === null))
    throw new PeftConfigError(`${where}: fields "structured_modules" and "num_deltas" are written together (by creation); got only one`);
  return cfg;
}

export function sptConfigJson(c: SptConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    num_tunable_weights: c.numTunableWeights,
    density: c.density,
    alpha: c.alpha,
    r: c.r,
    lora_dropout: c.loraDropout,
    structured_modules: c.structuredModules,
    num_deltas: c.numDeltas,
    target_modules: c.targetModules,
    exclude_modules: c.excludeModules,
    layers_to_transform: c.layersToTransform,
    layers_pattern: c.layersPattern,
    modules_to_save: c.modulesToSave,
    init_weights: c.initWeights,
  };
}
