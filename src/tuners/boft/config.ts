/**
 * BOFTConfig as HF PEFT 0.20.0 writes it (tuners/boft/config.py). Either boft_block_size or
 * boft_block_num is set, never both: their product is in_features.
 */
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

export interface BoftConfig extends CommonConfig, TargetFields {
  boftBlockSize: number;
  boftBlockNum: number;
  boftNButterflyFactor: number;
  boftDropout: number;
  fanInFanOut: boolean;
  bias: "none" | "all" | "boft_only";
  initWeights: boolean;
}

export function parseBoftConfig(raw: RawPeftConfig, where: string): BoftConfig {
  const r = new FieldReader(raw, where);
  const cfg: BoftConfig = {
    ...readCommon(r, "BOFT"),
    boftBlockSize: r.int("boft_block_size", 4, 0),
    boftBlockNum: r.int("boft_block_num", 0, 0),
    boftNButterflyFactor: r.int("boft_n_butterfly_factor", 1, 1),
    ...readTargetFields(r),
    boftDropout: r.num("boft_dropout", 0),
    fanInFanOut: r.bool("fan_in_fan_out", false),
    bias: r.str("bias", "none", ["none", "all", "boft_only"] as const),
    initWeights: r.bool("init_weights", true),
  };
  // BOFTConfig.__post_init__'s checks.
  if (cfg.layersPattern && cfg.layersToTransform === null)
    throw new PeftConfigError(`${where}: "layers_pattern" needs "layers_to_transform"`);
  if (cfg.boftBlockSize === 0 && cfg.boftBlockNum === 0)
    throw new PeftConfigError(`${where}: either "boft_block_size" or "boft_block_num" must be non-zero (their product is in_features)`);
  if (cfg.boftBlockSize !== 0 && cfg.boftBlockNum !== 0)
    throw new PeftConfigError(
      `${where}: give either "boft_block_size" (${cfg.boftBlockSize}) or "boft_block_num" (${cfg.boftBlockNum}), not both (their product is in_features; boft_block_size defaults to 4, so set it to 0 when you give boft_block_num)`,
    );
  if (cfg.boftDropout < 0 || cfg.boftDropout >= 1)
    throw new PeftConfigError(`${where}: field "boft_dropout" must be in [0, 1), got ${cfg.boftDropout}`);
  return cfg;
}

/** Every field PEFT 0.20.0's BOFTConfig writes (test/golden/peft-config-fields.json). */
export function boftConfigJson(c: BoftConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    boft_block_size: c.boftBlockSize,
    boft_block_num: c.boftBlockNum,
    boft_n_butterfly_factor: c.boftNButterflyFactor,
    ...targetFieldsJson(c),
    boft_dropout: c.boftDropout,
    fan_in_fan_out: c.fanInFanOut,
    bias: c.bias,
    init_weights: c.initWeights,
  };
}
