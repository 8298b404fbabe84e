import { type CommonConfig, commonJson, FieldReader, PeftConfigError, type RawPeftConfig, readCommon } from "../config.js";

/**
 * S²FT (Yang et al. 2024, "S²FT: Efficient, Scalable and Generalizable LLM Fine-tuning by
 * Structured Sparsity"; Infini-AI-Lab/S2FT). The authors have no adapter config: these are the
 * command-line arguments of experiments/train/finetune.py (v_ratio, o_ratio, u_ratio, d_ratio,
 * seed), under peftkit's own peft_type "S2FT".
 */
export interface S2ftConfig extends CommonConfig {
  /** Share of all (layer, V unit) pairs whose v_proj output rows train (default 0). A unit is a KV group (a head on MHA models). */
  vRatio: number;
  /** Share of all (layer, O unit) pairs whose o_proj input columns train (default 0). */
  oRatio: number;
  /** Share of all (layer, FFN channel) pairs whose up_proj output rows train (default 0). */
  uRatio: number;
  /** Share of all (layer, FFN channel) pairs whose down_proj input columns train (default 0). */
  dRatio: number;
  /** Seed of the random selection (finetune.py's --seed, default 1234); the selection is a function of it and the model's shape. */
  seed: number;
  /**
   * peftkit's addition, as PEFT's init_weights elsewhere: true (default) starts the slices at 0
   * (the authors' zero-initialised s2 tensors); false draws them from N(0, 0.02²), for tests.
   */
  initWeights: boolean;
}

const RATIOS = [
  ["v_ratio", "vRatio"],
  ["o_ratio", "oRatio"],
  ["u_ratio", "uRatio"],
  ["d_ratio", "dRatio"],
] as const;

export function parseS2ftConfig(raw: RawPeftConfig, where: string): S2ftConfig {
  const r = new FieldReader(raw, where);
  const cfg: S2ftConfig = {
    ...readCommon(r, "S2FT"),
    vRatio: r.num("v_ratio", 0),
    oRatio: r.num("o_ratio", 0),
    uRatio: r.num("u_ratio", 0),
    dRatio: r.num("d_ratio", 0),
    seed: r.int("seed", 1234, 0),
    initWeights: r.bool("init_weights", true),
  };
  for (const [field, key] of RATIOS)
    if (!(cfg[key] >= 0 && cfg[key] <= 1)) throw new PeftConfigError(`${where}: field "${field}" must be in [0, 1], got ${cfg[key]}`);
  if (RATIOS.every(([, key]) => cfg[key] === 0))
    throw new PeftConfigError(`${where}: S2FT trains nothing: set at least one of v_ratio, o_ratio, u_ratio, d_ratio above 0`);
  return cfg;
}

export function s2ftConfigJson(c: S2ftConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    v_ratio: c.vRatio,
    o_ratio: c.oRatio,
    u_ratio: c.uRatio,
    d_ratio: c.dRatio,
    seed: c.seed,
    init_weights: c.initWeights,
  };
}
