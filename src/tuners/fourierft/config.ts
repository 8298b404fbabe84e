import { type CommonConfig, commonJson, FieldReader, PeftConfigError, type RawPeftConfig, readCommon } from "../config.js";
import type { TargetSpec } from "../targets.js";

/** PEFT 0.20's FourierFTConfig (tuners/fourierft/config.py), with its defaults. */
export interface FourierFTConfig extends CommonConfig, TargetSpec {
  nFrequency: number;
  scaling: number;
  randomLocSeed: number;
  fanInFanOut: boolean;
  bias: "none" | "all" | "fourier_only";
  modulesToSave: string[] | null;
  /** Module name or pattern → n_frequency for the layers it matches (see layerFrequency). */
  nFrequencyPattern: Record<string, number>;
  /** PEFT's default false: the spectrum starts standard normal; true: zeros (no change at the start). */
  initWeights: boolean;
}

export function parseFourierFTConfig(raw: RawPeftConfig, where: string): FourierFTConfig {
  const r = new FieldReader(raw, where);
  const cfg: FourierFTConfig = {
    ...readCommon(r, "FOURIERFT"),
    nFrequency: r.int("n_frequency", 1000, 1),
    scaling: r.num("scaling", 150),
    // torch.Generator().manual_seed takes the seed; peftkit's generator takes seeds >= 0.
    randomLocSeed: r.int("random_loc_seed", 777, 0),
    fanInFanOut: r.bool("fan_in_fan_out", false),
    targetModules: r.targets("target_modules"),
    excludeModules: r.targets("exclude_modules"),
    bias: r.str("bias", "none", ["none", "all", "fourier_only"] as const),
    modulesToSave: r.strList("modules_to_save"),
    layersToTransform: r.intOrList("layers_to_transform"),
    layersPattern: r.targets("layers_pattern"),
    nFrequencyPattern: r.numberMap("n_frequency_pattern"),
    initWeights: r.bool("init_weights", false),
  };
  for (const [k, v] of Object.entries(cfg.nFrequencyPattern))
    if (!Number.isInteger(v) || v < 1)
      throw new PeftConfigError(`${where}: field "n_frequency_pattern": "${k}" must map to an integer >= 1, got ${v}`);
  // FourierFTConfig.__post_init__'s checks.
  if (typeof cfg.targetModules === "string" && cfg.layersToTransform !== null)
    throw new PeftConfigError(`${where}: "layers_to_transform" cannot be used when "target_modules" is a regex string`);
  if (typeof cfg.targetModules === "string" && cfg.layersPattern !== null)
    throw new PeftConfigError(`${where}: "layers_pattern" cannot be used when "target_modules" is a regex string`);
  if (cfg.layersPattern !== null && cfg.layersToTransform === null)
    throw new PeftConfigError(`${where}: "layers_pattern" needs "layers_to_transform"`);
  return cfg;
}

/** Every field PEFT's FourierFTConfig writes (test/golden/peft-config-fields.json). */
export function fourierFTConfigJson(c: FourierFTConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    n_frequency: c.nFrequency,
    scaling: c.scaling,
    random_loc_seed: c.randomLocSeed,
    fan_in_fan_out: c.fanInFanOut,
    target_modules: c.targetModules,
    exclude_modules: c.excludeModules,
    bias: c.bias,
    modules_to_save: c.modulesToSave,
    layers_to_transform: c.layersToTransform,
    layers_pattern: c.layersPattern,
    n_frequency_pattern: c.nFrequencyPattern,
    init_weights: c.initWeights,
  };
}
