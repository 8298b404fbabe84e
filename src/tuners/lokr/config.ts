import { commonJson, FieldReader, PeftConfigError, type RawPeftConfig } from "../config.js";
import { type LycorisConfig, lycorisJson, readLycoris } from "../lycoris/config.js";

/** true: w1 (or w1_a) starts at zero; "lycoris": w2 (or w2_b) does; false: every factor random. */
export type LokrInit = boolean | "lycoris";

/** PEFT's LoKrConfig (tuners/lokr/config.py at v0.20.0). */
export interface LokrConfig extends LycorisConfig {
  /** Also split the left factor w1 into w1_a·w1_b when r is small enough. */
  decomposeBoth: boolean;
  /** factorization()'s divider: -1 searches near √dim. */
  decomposeFactor: number;
  /** Divide the rank-dropout mask by its mean. */
  rankDropoutScale: boolean;
  initWeights: LokrInit;
}

export function parseLokrConfig(raw: RawPeftConfig, where: string): LokrConfig {
  const r = new FieldReader(raw, where);
  const init = r.any("init_weights");
  if (init !== undefined && init !== null && init !== true && init !== false && init !== "lycoris")
    throw new PeftConfigError(`${where}: field "init_weights" must be true, false or "lycoris", got ${JSON.stringify(init)}`);
  const decomposeFactor = r.num("decompose_factor", -1);
  if (!Number.isInteger(decomposeFactor))
    throw new PeftConfigError(`${where}: field "decompose_factor" must be an integer (-1: near the square root), got ${decomposeFactor}`);
  return {
    ...readLycoris(r, "LOKR"),
    decomposeBoth: r.bool("decompose_both", false),
    decomposeFactor,
    rankDropoutScale: r.bool("rank_dropout_scale", false),
    initWeights: (init ?? true) as LokrInit,
  };
}

/** Every field LoKrConfig writes (test/golden/peft-config-fields.json). */
export function lokrConfigJson(c: LokrConfig): Record<string, unknown> {
  return {
    ...commonJson(c),
    ...lycorisJson(c),
    decompose_both: c.decomposeBoth,
    decompose_factor: c.decomposeFactor,
    rank_dropout_scale: c.rankDropoutScale,
    init_weights: c.initWeights,
  };
}
