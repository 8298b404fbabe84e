import {
  type CommonConfig,
  commonJson,
  FieldReader,
  PeftConfigError,
  type RawPeftConfig,
  readCommon,
  readTargetFields,
  type TargetFields,
  targetFieldsJson,
} from "../config.js";

/** PEFT 0.20's HRAConfig (tuners/hra/config.py). */
export interface HraConfig extends CommonConfig, TargetFields {
  r: number;
  /** PEFT's `apply_GS`: orthonormalise the vectors (Gram–Schmidt) into one reflection I − 2·Q·Qᵀ. */
  applyGs: boolean;
  initWeights: boolean;
  bias: "none" | "all" | "hra_only";
}

/**
 * PEFT writes the field as "apply_GS". normalizeKeys turns its capitals into "_g_s", so the
 * spellings a user may give arrive as "apply__g_s" (apply_GS), "apply_g_s" (applyGS) or
 * "apply_gs" (applyGs); more than one is ambiguous.
 */
const APPLY_GS_SPELLINGS = ["apply__g_s", "apply_g_s", "apply_gs"];

export function parseHraConfig(raw: RawPeftConfig, where: string): HraConfig {
  const r = new FieldReader(raw, where);
  const given = APPLY_GS_SPELLINGS.filter((k) => raw[k] !== undefined && raw[k] !== null);
  if (given.length > 1) throw new PeftConfigError(`${where}: "apply_GS" is given more than once (${given.join(", ")})`);
  let applyGs = false;
  if (given.length === 1) {
    const v = raw[given[0]];
    r.any(given[0]);
    if (typeof v !== "boolean") throw new PeftConfigError(`${where}: field "apply_GS" must be true or false, got ${JSON.stringify(v)}`);
    applyGs = v;
  }
  const cfg: HraConfig = {
    ...readCommon(r, "HRA"),
    r: r.int("r", 8, 1),
    applyGs,
    ...readTargetFields(r),
    initWeights: r.bool("init_weights", true),
    bias: r.str("bias", "none", ["none", "all", "hra_only"] as const),
  };
  // HRAConfig.__post_init__'s checks.
  if (typeof cfg.targetModules === "string" && cfg.layersToTransform !== null)
    throw new PeftConfigError(`${where}: "layers_to_transform" cannot be used when "target_modules" is a regex string`);
  if (typeof cfg.targetModules === "string" && cfg.layersPattern !== null)
    throw new PeftConfigError(`${where}: "layers_pattern" cannot be used when "target_modules" is a regex string`);
  if (cfg.layersPattern !== null && cfg.layersToTransform === null)
    throw new PeftConfigError(`${where}: "layers_pattern" needs "layers_to_transform"`);
  return cfg;
}

/** Every field PEFT's HRAConfig writes (test/golden/peft-config-fields.json). */
export function hraConfigJson(c: HraConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    r: c.r,
    apply_GS: c.applyGs,
    ...targetFieldsJson(c),
    init_weights: c.initWeights,
    bias: c.bias,
  };
}
