import { type CommonConfig, commonJson, FieldReader, PeftConfigError, type RawPeftConfig, readCommon } from "../config.js";
import type { TargetSpec } from "../targets.js";

/** PEFT 0.20's VeraConfig (tuners/vera/config.py). It has no exclude_modules field. */
export interface VeraConfig extends CommonConfig, TargetSpec {
  r: number;
  projectionPrngKey: number;
  saveProjection: boolean;
  veraDropout: number;
  dInitial: number;
  fanInFanOut: boolean;
  bias: "none" | "all" | "vera_only";
  modulesToSave: string[] | null;
  initWeights: boolean;
}

export function parseVeraConfig(raw: RawPeftConfig, where: string): VeraConfig {
  const r = new FieldReader(raw, where);
  const cfg: VeraConfig = {
    ...readCommon(r, "VERA"),
    r: r.int("r", 256, 1),
    targetModules: r.targets("target_modules"),
    excludeModules: null,
    projectionPrngKey: r.int("projection_prng_key", 0, 0),
    saveProjection: r.bool("save_projection", true),
    veraDropout: r.num("vera_dropout", 0),
    dInitial: r.num("d_initial", 0.1),
    fanInFanOut: r.bool("fan_in_fan_out", false),
    bias: r.str("bias", "none", ["none", "all", "vera_only"] as const),
    modulesToSave: r.strList("modules_to_save"),
    initWeights: r.bool("init_weights", true),
    layersToTransform: r.intOrList("layers_to_transform"),
    layersPattern: r.targets("layers_pattern"),
  };
  if (raw.exclude_modules !== undefined && raw.exclude_modules !== null)
    throw new PeftConfigError(`${where}: PEFT's VeraConfig has no field "exclude_modules"; list the modules to adapt in "target_modules"`);
  if (cfg.veraDropout < 0 || cfg.veraDropout >= 1)
    throw new PeftConfigError(`${where}: field "vera_dropout" must be in [0, 1), got ${cfg.veraDropout}`);
  // VeraConfig.__post_init__'s check.
  if (cfg.layersPattern !== null && cfg.layersToTransform === null)
    throw new PeftConfigError(`${where}: "layers_pattern" needs "layers_to_transform"`);
  return cfg;
}

/** Every field PEFT's VeraConfig writes (test/golden/peft-config-fields.json). */
export function veraConfigJson(c: VeraConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    r: c.r,
    target_modules: c.targetModules,
    projection_prng_key: c.projectionPrngKey,
    save_projection: c.saveProjection,
    vera_dropout: c.veraDropout,
    d_initial: c.dInitial,
    fan_in_fan_out: c.fanInFanOut,
    bias: c.bias,
    modules_to_save: c.modulesToSave,
    init_weights: c.initWeights,
    layers_to_transform: c.layersToTransform,
    layers_pattern: c.layersPattern,
  };
}
