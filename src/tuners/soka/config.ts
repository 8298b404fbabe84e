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

/**
 * SoKA is not in HF PEFT: its fields follow LoRA's conventions for choosing layers.
 * r: Kronecker terms per layer (the most, when energy_threshold selects the rank);
 * factor_out / factor_in: m and n of U_k (m×n), so V_k is (out/m)×(in/n); null = balanced.
 */
export interface SokaConfig extends CommonConfig, TargetFields {
  r: number;
  factorOut: number | null;
  factorIn: number | null;
  energyThreshold: number | null;
  initSokaWeights: boolean;
}

function optInt(r: FieldReader, field: string): number | null {
  const v = r.any(field);
  if (v === undefined || v === null) return null;
  return r.int(field, 1, 1);
}

export function parseSokaConfig(raw: RawPeftConfig, where: string): SokaConfig {
  const r = new FieldReader(raw, where);
  const t = r.any("energy_threshold");
  const energyThreshold = t === undefined || t === null ? null : r.num("energy_threshold", 0);
  if (energyThreshold !== null && !(energyThreshold > 0 && energyThreshold <= 1))
    throw new PeftConfigError(`${where}: field "energy_threshold" must be in (0, 1] or null, got ${JSON.stringify(t)}`);
  return {
    ...readCommon(r, "SOKA"),
    ...readTargetFields(r),
    r: r.int("r", 8, 1),
    factorOut: optInt(r, "factor_out"),
    factorIn: optInt(r, "factor_in"),
    energyThreshold,
    initSokaWeights: r.bool("init_soka_weights", true),
  };
}

export function sokaConfigJson(c: SokaConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    ...targetFieldsJson(c),
    r: c.r,
    factor_out: c.factorOut,
    factor_in: c.factorIn,
    energy_threshold: c.energyThreshold,
    init_soka_weights: c.initSokaWeights,
  };
}
