/**
 * TriAdaptLoRA's structure and growth rule as pure functions (after `TriAdaptLoraLayer` and
 * `RankAllocator.compute_threshold` of the stored code; docs/methods/triadaptlora.md).
 *
 * A module's ranks come in blocks: block 0 holds init_rank slots, every later block incre_rank_num.
 * The core C = L + U [R, R] is the sum of a block-lower-triangular part L (block row i spans the
 * columns of blocks 0…i, the authors' C_row[i]) and a block-upper-triangular part U (block column
 * i spans the rows of blocks 0…i, C_col[i]); diagonal blocks get both.
 */
import type { GrowthModel } from "./config.js";

/** The block of slot j. */
export function blockOf(j: number, initRank: number, add: number): number {
  return j < initRank ? 0 : 1 + Math.floor((j - initRank) / add);
}

/** Blocks a module of rank `rank` holds (the authors' len(C_row)). */
export function blocksOf(rank: number, initRank: number, add: number): number {
  return 1 + (rank - initRank) / add;
}

/** Whether `rank` ends on a block boundary. */
export function isBlockRank(rank: number, initRank: number, add: number): boolean {
  return rank >= initRank && (rank - initRank) % add === 0;
}

/** Row-major [n, n] 0/1 masks of the entries L and U may hold. */
export function triangularMasks(n: number, initRank: number, add: number): { lower: Float32Array; upper: Float32Array } {
  const lower = new Float32Array(n * n);
  const upper = new Float32Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      const bi = blockOf(i, initRank, add);
      const bj = blockOf(j, initRank, add);
      if (bj <= bi) lower[i * n + j] = 1;
      if (bi <= bj) upper[i * n + j] = 1;
    }
  return { lower, upper };
}

/** C = L⊙M_L + U⊙M_U over the first `rank` slots of [n, n] tensors, row-major [rank, rank] in float64. */
export function coreMatrix(
  lower: ArrayLike<number>,
  upper: ArrayLike<number>,
  n: number,
  rank: number,
  initRank: number,
  add: number,
): Float64Array {
  const m = triangularMasks(n, initRank, add);
  const c = new Float64Array(rank * rank);
  for (let i = 0; i < rank; i++)
    for (let j = 0; j < rank; j++) c[i * rank + j] = m.lower[i * n + j] * lower[i * n + j] + m.upper[i * n + j] * upper[i * n + j];
  return c;
}

export function frobenius(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return Math.sqrt(s);
}

/**
 * compute_threshold's count of modules to grow at 0-based step g: (target − total) · coeff
 * ("linear") or (target − total)^coeff ("non-linear"), coeff = (g − init_warmup) / (total_step −
 * init_warmup), truncated, at least 1 (the caller caps it by the modules that may grow).
 */
export function growthCount(model: GrowthModel, remaining: number, g: number, initWarmup: number, totalStep: number): number {
  const coeff = (g - initWarmup) / (totalStep - initWarmup);
  const n = model === "linear" ? Math.trunc(remaining * coeff) : Math.trunc(Math.exp(coeff * Math.log(remaining)));
  return Math.max(1, n);
}
