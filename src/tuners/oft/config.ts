/**
 * OFTConfig as HF PEFT 0.20.0 writes it (tuners/oft/config.py). Either r (blocks per layer) or
 * oft_block_size is set, never both: r × oft_block_size = in_features.
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

export interface OftConfig extends CommonConfig, TargetFields {
  r: number;
  oftBlockSize: number;
  /** PEFT 0.20.0 builds the dropout layer but never calls it: no effect (see docs/methods/oft.md). */
  moduleDropout: number;
  fanInFanOut: boolean;
  bias: "none" | "all" | "oft_only";
  initWeights: boolean;
  coft: boolean;
  eps: number;
  blockShare: boolean;
  useCayleyNeumann: boolean;
  numCayleyNeumannTerms: number;
}

export function parseOftConfig(raw: RawPeftConfig, where: string): OftConfig {
  const r = new FieldReader(raw, where);
  const cfg: OftConfig = {
    ...readCommon(r, "OFT"),
    r: r.int("r", 0, 0),
    oftBlockSize: r.int("oft_block_size", 32, 0),
    moduleDropout: r.num("module_dropout", 0),
    ...readTargetFields(r),
    fanInFanOut: r.bool("fan_in_fan_out", false),
    bias: r.str("bias", "none", ["none", "all", "oft_only"] as const),
    initWeights: r.bool("init_weights", true),
    coft: r.bool("coft", false),
    eps: r.num("eps", 6e-5),
    blockShare: r.bool("block_share", false),
    useCayleyNeumann: r.bool("use_cayley_neumann", true),
    numCayleyNeumannTerms: r.int("num_cayley_neumann_terms", 5, 0),
  };
  // OFTConfig.__post_init__'s checks.
  if (cfg.layersPattern && cfg.layersToTransform === null)
    throw new PeftConfigError(`${where}: "layers_pattern" needs "layers_to_transform"`);
  if (cfg.r === 0 && cfg.oftBlockSize === 0)
    throw new PeftConfigError(`${where}: either "r" or "oft_block_size" must be non-zero (r × oft_block_size = in_features)`);
  if (cfg.r !== 0 && cfg.oftBlockSize !== 0)
    throw new PeftConfigError(
      `${where}: give either "r" (${cfg.r}) or "oft_block_size" (${cfg.oftBlockSize}), not both (r × oft_block_size = in_features; oft_block_size defaults to 32, so set it to 0 when you give r)`,
    );
  if (cfg.moduleDropout < 0 || cfg.moduleDropout >= 1)
    throw new PeftConfigError(`${where}: field "module_dropout" must be in [0, 1), got ${cfg.moduleDropout}`);
  if (cfg.eps <= 0) throw new PeftConfigError(`${where}: field "eps" must be > 0, got ${cfg.eps}`);
  return cfg;
}

/** Every field PEFT 0.20.0's OFTConfig writes (test/golden/peft-config-fields.json). */
export function oftConfigJson(c: OftConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    r: c.r,
    oft_block_size: c.oftBlockSize,
    module_dropout: c.moduleDropout,
    ...targetFieldsJson(c),
    fan_in_fan_out: c.fanInFanOut,
    bias: c.bias,
    init_weights: c.initWeights,
    coft: c.coft,
    eps: c.eps,
    block_share: c.blockShare,
    use_cayley_neumann: c.useCayleyNeumann,
    num_cayley_neumann_terms: c.numCayleyNeumannTerms,
  };
}
