import { type CommonConfig, commonJson, FieldReader, PeftConfigError, type RawPeftConfig, readCommon } from "../config.js";
import type { TargetSpec } from "../targets.js";

/**
 * ID³ (Agarwal et al., "Step-by-Step Unmasking for Parameter-Efficient Fine-tuning of Large
 * Language Models"), after the authors' toolkit (Aradhye2002/selective-peft-toolkit,
 * selective_optimizers/optimizers/id3.py): a budget of B weight entries is unmasked over T steps,
 * ⌊B/T⌋ per step (+1 for the first B mod T steps), each time the still-masked entries with the
 * largest D³ score |∂L/∂θ| / (ε + |θ|)^μ. peft_type "ID3" is peftkit's.
 */
export interface Id3Config extends CommonConfig, TargetSpec {
  /** B: entries that ever train, over all targets; null: ⌊density · (all of the model's parameters)⌋. */
  budget: number | null;
  /** Share of all the model's parameters that B is when budget is null (default 0.01). */
  density: number;
  /** T: the optimizer steps B is spread over; null: the run's planned number of steps. */
  maxSteps: number | null;
  /** ε of the D³ score (the toolkit README's 1e-3). */
  eps: number;
  /** μ of the D³ score (the toolkit README's 0: plain |gradient|; larger favours small weights). */
  exp: number;
  modulesToSave: string[] | null;
  /**
   * peftkit's, for tests: true (default) starts with nothing unmasked; false starts with every
   * slot unmasked at a value from N(0, 0.1²).
   */
  initWeights: boolean;
}

export function parseId3Config(raw: RawPeftConfig, where: string): Id3Config {
  const r = new FieldReader(raw, where);
  const cfg: Id3Config = {
    ...readCommon(r, "ID3"),
    budget: r.any("budget") == null ? null : r.int("budget", 0, 1),
    density: r.num("density", 0.01),
    maxSteps: r.any("max_steps") == null ? null : r.int("max_steps", 0, 1),
    eps: r.num("eps", 1e-3),
    exp: r.num("exp", 0),
    targetModules: r.targets("target_modules"),
    excludeModules: r.targets("exclude_modules"),
    modulesToSave: r.strList("modules_to_save"),
    layersToTransform: r.intOrList("layers_to_transform"),
    layersPattern: r.targets("layers_pattern"),
    initWeights: r.bool("init_weights", true),
  };
  if (cfg.budget === null && !(cfg.density > 0 && cfg.density <= 1))
    throw new PeftConfigError(`${where}: field "density" must be in (0, 1], got ${cfg.density}`);
  if (!(cfg.eps > 0)) throw new PeftConfigError(`${where}: field "eps" must be > 0, got ${cfg.eps}`);
  if (!(cfg.exp >= 0)) throw new PeftConfigError(`${where}: field "exp" must be >= 0, got ${cfg.exp}`);
  if (cfg.targetModules === null) throw new PeftConfigError(`${where}: field "target_modules" is required`);
  return cfg;
}

export function id3ConfigJson(c: Id3Config): Record<string, unknown> {
  return {
    ...commonJson(c),
    budget: c.budget,
    density: c.density,
    max_steps: c.maxSteps,
    eps: c.eps,
    exp: c.exp,
    target_modules: c.targetModules,
    exclude_modules: c.excludeModules,
    modules_to_save: c.modulesToSave,
    layers_to_transform: c.layersToTransform,
    layers_pattern: c.layersPattern,
    init_weights: c.initWeights,
  };
}
