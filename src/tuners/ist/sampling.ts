/**
 * IST's host arithmetic, pure and unit-tested: how many layers a fraction means, weighted draws
 * without replacement (torch.multinomial's semantics), and the score update of an importance round.
 */
import { Rng } from "../../util/rng.js";

export const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));

/**
 * Layers a fraction of L stands for: round(f·L), at least 1. (The authors' int(f·L) is the same
 * at L = 32; on small models it would give 0 layers.)
 */
export function layerCount(fraction: number, numLayers: number): number {
  return Math.min(numLayers, Math.max(1, Math.round(fraction * numLayers)));
}

/**
 * `k` distinct indices drawn in turn, each with probability weight / (sum of the weights not yet
 * drawn) (torch.multinomial(weights, k, replacement=False)); returned ascending, as the authors
 * sort them. `next` gives uniforms in [0, 1), one per draw. A draw whose remaining weights are all
 * 0 picks the first remaining index.
 */
export function weightedDraw(weights: readonly number[], k: number, next: () => number): number[] {
  const w = Float64Array.from(weights);
  const out: number[] = [];
  for (let d = 0; d < k; d++) {
    let total = 0;
    for (const x of w) total += x;
    const u = next() * total;
    let pick = -1;
    let acc = 0;
    for (let i = 0; i < w.length; i++) {
      if (w[i] <= 0) continue;
      acc += w[i];
      pick = i;
      if (u < acc) break;
    }
    if (pick < 0) pick = [...w.keys()].find((i) => !out.includes(i)) as number;
    out.push(pick);
    w[pick] = 0;
  }
  return out.sort((a, b) => a - b);
}

/** C(n, k), capped at 2^53 (only compared with small counts). */
export function binomial(n: number, k: number): number {
  let c = 1;
  for (let i = 0; i < k; i++) c = Math.min(Number.MAX_SAFE_INTEGER, (c * (n - i)) / (i + 1));
  return Math.round(c);
}

/**
 * The score update of one importance round (ist.py on_step_begin): rewards r_k = exp(−loss_k),
 * advantages a_k = r_k − mean(r), p = σ(s) before the update, and for each trial k and each
 * suppressed layer i ∈ S_k, s_i += a_k·p_i·(1 − p_i)·lr. Layers outside S_k do not move.
 */
export function scoreUpdate(
  scores: readonly number[],
  subsets: readonly (readonly number[])[],
  losses: readonly number[],
  lr: number,
): number[] {
  const rewards = losses.map((l) => Math.exp(-l));
  const mean = rewards.reduce((x, y) => x + y, 0) / rewards.length;
  const p = scores.map(sigmoid);
  const out = [...scores];
  subsets.forEach((s, k) => {
    for (const i of s) out[i] += (rewards[k] - mean) * p[i] * (1 - p[i]) * lr;
  });
  return out;
}

/** The generator of draw `index` of stream `stream` of a run seeded `seed`: no state to save. */
export function drawRng(seed: number, stream: number, index: number): Rng {
  let x = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(stream + 1, 0x632be5ab) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d) >>> 0;
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b) >>> 0;
  return new Rng((x ^ (x >>> 16)) >>> 0);
}
