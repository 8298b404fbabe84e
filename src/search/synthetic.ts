/**
 * A synthetic search problem with peftkit's joint space (AutoPEFT's --mock_run analogue): scores and
 * parameter counts by formula, no training. Used by the tests and `peftkit search --synthetic`.
 */

import { cost, type Problem } from "./engine.js";
import type { Reference } from "./hypervolume.js";
import { parseSpace, type SearchConfig, type SearchSpace } from "./space.js";

export const SYNTHETIC_SPACE = {
  methods: {
    lora: { r: [1, 256], target_modules: [["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj"], "all-linear"], layers: true },
    ia3: { target_modules: [["k_proj", "v_proj", "down_proj"], "all-linear"] },
    prompt: { tokens: [1, 64] },
    adapter: { bottleneck: [1, 256], layers: true },
  },
};

const LAYERS = 6;
/** Relative width and quality of the target choices. */
const TARGET_WIDTH = [2, 4, 7];
const TARGET_QUALITY = [0.75, 0.85, 1];
/** Later layers matter more (as for a task head on top). */
const LAYER_WEIGHT = [0.04, 0.06, 0.1, 0.2, 0.25, 0.35];

export function syntheticSpace(): SearchSpace {
  return parseSpace(SYNTHETIC_SPACE, "synthetic", LAYERS);
}

const on = (c: SearchConfig) => c.layers ?? Array.from({ length: LAYERS }, (_, i) => i);

export function syntheticParams(c: SearchConfig): number {
  switch (c.method) {
    case "lora":
      return 2 * 256 * (c.size ?? 1) * TARGET_WIDTH[c.target ?? 0] * on(c).length;
    case "ia3":
      return 300 * TARGET_WIDTH[c.target ?? 0];
    case "prompt":
      return 256 * (c.size ?? 1);
    default:
      return 2 * 256 * (c.size ?? 1) * on(c).length + 64;
  }
}

/** Saturating in log size, with a method ceiling, a target quality and layer weights; a small ripple. */
export function syntheticScore(c: SearchConfig): number {
  const layerShare = on(c).reduce((s, l) => s + LAYER_WEIGHT[l], 0);
  const sat = (v: number, half: number) => 1 - Math.exp(-Math.log2(1 + v) / half);
  switch (c.method) {
    case "lora":
      return 0.9 * sat(c.size ?? 1, 2.5) * TARGET_QUALITY[c.target ?? 0] * layerShare ** 0.5 + 0.02 * Math.sin(c.size ?? 1);
    case "ia3":
      return 0.45 * TARGET_QUALITY[c.target ?? 0];
    case "prompt":
      return 0.3 * sat(c.size ?? 1, 3);
    default:
      return 0.8 * sat(c.size ?? 1, 3.5) * layerShare ** 0.7;
  }
}

export function syntheticProblem(): Problem {
  const space = syntheticSpace();
  const reference: Reference = { cost: cost(2 * 256 * 256 * 7 * LAYERS * 1.25), score: 0 };
  return { space, params: syntheticParams, reference };
}
