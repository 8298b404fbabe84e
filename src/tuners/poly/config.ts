import { type CommonConfig, commonJson, FieldReader, PeftConfigError, type RawPeftConfig, readCommon } from "../config.js";

/**
 * HF PEFT's PolyConfig (src/peft/tuners/poly/config.py): a library of `n_skills` LoRAs of rank `r`
 * per targeted layer, mixed per task by a routing table of `n_tasks` rows; `n_splits` > 1 is MHR
 * (every split of the input/output features routed on its own). No alpha and no dropout: the
 * scaling is 1/r.
 */
export interface PolyConfig extends CommonConfig {
  r: number;
  targetModules: string[] | string | null;
  excludeModules: string[] | string | null;
  modulesToSave: string[] | null;
  /** True: B starts at zero (a no-op adapter); false: B is Kaiming-initialised too. */
  initWeights: boolean;
  polyType: "poly";
  nTasks: number;
  nSkills: number;
  nSplits: number;
}

export function parsePolyConfig(raw: RawPeftConfig, where: string): PolyConfig {
  const f = new FieldReader(raw, where);
  const polyType = f.str("poly_type", "poly");
  // PEFT's get_router raises the same way for any other type.
  if (polyType !== "poly") throw new PeftConfigError(`${where}: field "poly_type": unsupported poly_type "${polyType}" (only "poly")`);
  return {
    ...readCommon(f, "POLY"),
    r: f.int("r", 8, 1),
    targetModules: f.targets("target_modules"),
    excludeModules: f.targets("exclude_modules"),
    modulesToSave: f.strList("modules_to_save"),
    initWeights: f.bool("init_weights", true),
    polyType,
    nTasks: f.int("n_tasks", 1, 1),
    nSkills: f.int("n_skills", 4, 1),
    nSplits: f.int("n_splits", 1, 1),
  };
}

export function polyConfigJson(c: PolyConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    r: c.r,
    target_modules: c.targetModules,
    exclude_modules: c.excludeModules,
    modules_to_save: c.modulesToSave,
    init_weights: c.initWeights,
    poly_type: c.polyType,
    n_tasks: c.nTasks,
    n_skills: c.nSkills,
    n_splits: c.nSplits,
  };
}
