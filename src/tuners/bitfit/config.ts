import { type CommonConfig, commonJson, FieldReader, type RawPeftConfig, readCommon } from "../config.js";

/** BitFit is not in HF PEFT: these fields follow LoRA's conventions for choosing modules. */
export interface BitFitConfig extends CommonConfig {
  targetModules: string[] | string | null;
  excludeModules: string[] | string | null;
  layersToTransform: number | number[] | null;
  layersPattern: string[] | string | null;
  modulesToSave: string[] | null;
  /** true: exact copies of the base biases (a no-op); false: copies plus N(0, 0.02²) noise (tests). */
  initBitfitWeights: boolean;
}

export function parseBitFitConfig(raw: RawPeftConfig, where: string): BitFitConfig {
  const r = new FieldReader(raw, where);
  return {
    ...readCommon(r, "BITFIT"),
    targetModules: r.targets("target_modules"),
    excludeModules: r.targets("exclude_modules"),
    layersToTransform: r.intOrList("layers_to_transform"),
    layersPattern: r.targets("layers_pattern"),
    modulesToSave: r.strList("modules_to_save"),
    initBitfitWeights: r.bool("init_bitfit_weights", true),
  };
}

export function bitFitConfigJson(c: BitFitConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    target_modules: c.targetModules,
    exclude_modules: c.excludeModules,
    layers_to_transform: c.layersToTransform,
    layers_pattern: c.layersPattern,
    modules_to_save: c.modulesToSave,
    init_bitfit_weights: c.initBitfitWeights,
  };
}
