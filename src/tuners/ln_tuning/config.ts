import { type CommonConfig, commonJson, FieldReader, type RawPeftConfig, readCommon } from "../config.js";

export interface LnTuningConfig extends CommonConfig {
  targetModules: string[] | string | null;
  excludeModules: string[] | string | null;
  modulesToSave: string[] | null;
  /**
   * peftkit's addition (PEFT has no such field): false adds N(0, 0.02²) noise to the copies, for
   * tests that need an adapter which differs from the base. Never written (it only matters at creation).
   */
  initLnTuningWeights: boolean;
}

export function parseLnTuningConfig(raw: RawPeftConfig, where: string): LnTuningConfig {
  const r = new FieldReader(raw, where);
  return {
    ...readCommon(r, "LN_TUNING"),
    targetModules: r.targets("target_modules"),
    excludeModules: r.targets("exclude_modules"),
    modulesToSave: r.strList("modules_to_save"),
    initLnTuningWeights: r.bool("init_ln_tuning_weights", true),
  };
}

/** Every field PEFT's LNTuningConfig writes. */
export function lnTuningConfigJson(c: LnTuningConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    target_modules: c.targetModules,
    exclude_modules: c.excludeModules,
    modules_to_save: c.modulesToSave,
  };
}
