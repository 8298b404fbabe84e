import { type CommonConfig, commonJson, FieldReader, type RawPeftConfig, readCommon } from "../config.js";

/** SSF is not in HF PEFT: these fields follow LoRA's conventions for choosing layers. */
export interface SsfConfig extends CommonConfig {
  targetModules: string[] | string | null;
  excludeModules: string[] | string | null;
  layersToTransform: number | number[] | null;
  layersPattern: string[] | string | null;
  modulesToSave: string[] | null;
  initSsfWeights: boolean;
}

export function parseSsfConfig(raw: RawPeftConfig, where: string): SsfConfig {
  const r = new FieldReader(raw, where);
  return {
    ...readCommon(r, "SSF"),
    targetModules: r.targets("target_modules"),
    excludeModules: r.targets("exclude_modules"),
    layersToTransform: r.intOrList("layers_to_transform"),
    layersPattern: r.targets("layers_pattern"),
    modulesToSave: r.strList("modules_to_save"),
    initSsfWeights: r.bool("init_ssf_weights", true),
  };
}

export function ssfConfigJson(c: SsfConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    target_modules: c.targetModules,
    exclude_modules: c.excludeModules,
    layers_to_transform: c.layersToTransform,
    layers_pattern: c.layersPattern,
    modules_to_save: c.modulesToSave,
    init_ssf_weights: c.initSsfWeights,
  };
}
