import { type CommonConfig, commonJson, FieldReader, PeftConfigError, type RawPeftConfig, readCommon } from "../config.js";

export interface Ia3Config extends CommonConfig {
  targetModules: string[] | string | null;
  excludeModules: string[] | string | null;
  feedforwardModules: string[] | string | null;
  fanInFanOut: boolean;
  modulesToSave: string[] | null;
  initIa3Weights: boolean;
}

export function parseIa3Config(raw: RawPeftConfig, where: string): Ia3Config {
  const r = new FieldReader(raw, where);
  const cfg: Ia3Config = {
    ...readCommon(r, "IA3"),
    targetModules: r.targets("target_modules"),
    excludeModules: r.targets("exclude_modules"),
    feedforwardModules: r.targets("feedforward_modules"),
    fanInFanOut: r.bool("fan_in_fan_out", false),
    modulesToSave: r.strList("modules_to_save"),
    initIa3Weights: r.bool("init_ia3_weights", true),
  };
  // PEFT's IA3Config.__post_init__ makes the same check, only when both are lists.
  const ff = cfg.feedforwardModules;
  const tm = cfg.targetModules;
  if (Array.isArray(ff) && Array.isArray(tm)) {
    const stray = ff.filter((m) => !tm.includes(m));
    if (stray.length)
      throw new PeftConfigError(
        `${where}: feedforward_modules must be a subset of target_modules (not in target_modules: ${stray.join(", ")})`,
      );
  }
  return cfg;
}

/** Every field PEFT's IA3Config writes. */
export function ia3ConfigJson(c: Ia3Config): Record<string, unknown> {
  return {
    ...commonJson(c),
    target_modules: c.targetModules,
    exclude_modules: c.excludeModules,
    feedforward_modules: c.feedforwardModules,
    fan_in_fan_out: c.fanInFanOut,
    modules_to_save: c.modulesToSave,
    init_ia3_weights: c.initIa3Weights,
  };
}
