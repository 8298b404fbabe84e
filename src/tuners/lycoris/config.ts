/**
 * The fields LoHa and LoKr share: PEFT's LycorisConfig (rank_pattern, alpha_pattern) plus the
 * r / alpha / dropout / conv fields both dataclasses declare with the same defaults
 * (tuners/lycoris_utils.py, tuners/loha/config.py, tuners/lokr/config.py at v0.20.0).
 */
import {
  type CommonConfig,
  type FieldReader,
  PeftConfigError,
  readCommon,
  readTargetFields,
  type TargetFields,
  targetFieldsJson,
} from "../config.js";

export interface LycorisConfig extends CommonConfig, TargetFields {
  r: number;
  alpha: number;
  /** Training only: each output row of ΔW is dropped with this probability. */
  rankDropout: number;
  /** Training only: the whole update of a layer is skipped with this probability. */
  moduleDropout: number;
  /** Conv layers only (FedPara's Proposition 3); written back, no effect on linear layers. */
  useEffectiveConv2d: boolean;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
}

export function readLycoris(r: FieldReader, peftType: string): LycorisConfig {
  const cfg: LycorisConfig = {
    ...readCommon(r, peftType),
    r: r.int("r", 8, 1),
    alpha: r.num("alpha", 8),
    rankDropout: r.num("rank_dropout", 0),
    moduleDropout: r.num("module_dropout", 0),
    useEffectiveConv2d: r.bool("use_effective_conv2d", false),
    ...readTargetFields(r),
    rankPattern: r.numberMap("rank_pattern"),
    alphaPattern: r.numberMap("alpha_pattern"),
  };
  // Rank dropout of 1 drops every row (PEFT then divides 0 by 0); module dropout of 1 is legal (never applied).
  if (cfg.rankDropout < 0 || cfg.rankDropout >= 1)
    throw new PeftConfigError(`${r.where}: field "rank_dropout" must be in [0, 1), got ${cfg.rankDropout}`);
  if (cfg.moduleDropout < 0 || cfg.moduleDropout > 1)
    throw new PeftConfigError(`${r.where}: field "module_dropout" must be in [0, 1], got ${cfg.moduleDropout}`);
  // LoHaConfig/LoKrConfig.__post_init__ make the same check.
  const lp = cfg.layersPattern;
  if (lp !== null && (typeof lp === "string" ? lp !== "" : lp.length > 0) && cfg.layersToTransform === null)
    throw new PeftConfigError(`${r.where}: "layers_pattern" is given, so "layers_to_transform" must be too`);
  for (const [p, v] of Object.entries(cfg.rankPattern))
    if (!Number.isInteger(v) || v < 1) throw new PeftConfigError(`${r.where}: rank_pattern "${p}" must be an integer >= 1, got ${v}`);
  return cfg;
}

/** The shared fields as PEFT writes them. */
export function lycorisJson(c: LycorisConfig): Record<string, unknown> {
  return {
    r: c.r,
    alpha: c.alpha,
    rank_dropout: c.rankDropout,
    module_dropout: c.moduleDropout,
    use_effective_conv2d: c.useEffectiveConv2d,
    ...targetFieldsJson(c),
    rank_pattern: c.rankPattern,
    alpha_pattern: c.alphaPattern,
  };
}
