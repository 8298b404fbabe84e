import { commonJson, FieldReader, type RawPeftConfig } from "../config.js";
import { type LycorisConfig, lycorisJson, readLycoris } from "../lycoris/config.js";

/** PEFT's LoHaConfig (tuners/loha/config.py at v0.20.0). */
export interface LohaConfig extends LycorisConfig {
  /** true: hada_w2_b starts at zero (a no-op adapter); false: every factor random. */
  initWeights: boolean;
}

export function parseLohaConfig(raw: RawPeftConfig, where: string): LohaConfig {
  const r = new FieldReader(raw, where);
  return { ...readLycoris(r, "LOHA"), initWeights: r.bool("init_weights", true) };
}

/** Every field LoHaConfig writes (test/golden/peft-config-fields.json). */
export function lohaConfigJson(c: LohaConfig): Record<string, unknown> {
  return { ...commonJson(c), ...lycorisJson(c), init_weights: c.initWeights };
}
