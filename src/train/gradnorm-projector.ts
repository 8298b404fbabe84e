/**
 * GradNormLoRP's host side: the options, their checks, and the GaLore projector computed from a
 * dense gradient every T steps (GaLoreProjector.get_orthogonal_matrix in the authors'
 * GradNormLoRP/galore_projector.py, proj_type "std").
 */
import type { HostTensor } from "../engine/ir/host.js";
import { type Matrix, matrix } from "../linalg/matrix.js";
import { randomizedSvd } from "../linalg/randomized-svd.js";
import { svd } from "../linalg/svd.js";
import { TrainingArgsError } from "./schedule.js";

export class GradNormError extends TrainingArgsError {}

export const GRADNORM_COMPAT = ["authors-2025-01"] as const;
export type GradNormCompat = (typeof GRADNORM_COMPAT)[number];

export interface GradNormOptions {
  /** r: the projector's rank (GaLore `rank`). */
  rank: number;
  /** T: steps between projector refreshes (`update_proj_gap`); the first is at step 0. */
  updateProjGap: number;
  /** α: multiplies the projected-back update (`scale`). */
  scale: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Decoupled weight decay on v and g, by lr (not the bias-corrected step). */
  weightDecay: number;
  /** null: the paper's form; "authors-2025-01": LowRankWeightNormAdamW.step as released. */
  compat: GradNormCompat | null;
  /** Exact (one-sided Jacobi) or randomized (Halko et al., niter 2, oversample 10) truncated SVD. */
  svd: "exact" | "randomized";
}

export const GRADNORM_DEFAULTS: GradNormOptions = {
  rank: 16,
  updateProjGap: 200,
  scale: 1,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-6,
  weightDecay: 0,
  compat: null,
  svd: "randomized",
};

export function checkGradNorm(o: GradNormOptions): void {
  if (!Number.isInteger(o.rank) || o.rank < 1) throw new GradNormError(`--r: gradnorm_lorp's rank must be an integer >= 1, got ${o.rank}`);
  if (!Number.isInteger(o.updateProjGap) || o.updateProjGap < 1)
    throw new GradNormError(`--gradnorm-update-gap: must be an integer >= 1 (steps between projector refreshes), got ${o.updateProjGap}`);
  if (!(Number.isFinite(o.scale) && o.scale > 0)) throw new GradNormError(`--gradnorm-scale: must be a number > 0, got ${o.scale}`);
  if (o.compat !== null && !GRADNORM_COMPAT.includes(o.compat))
    throw new GradNormError(`--gradnorm-compat: "${o.compat}" is not one of ${GRADNORM_COMPAT.join(", ")}`);
}

/** A target's orientation: GaLore projects on the right (Q, r×n) when m ≥ n, else on the left (P, m×r). */
export function projectorSide(m: number, n: number): "right" | "left" {
  return m >= n ? "right" : "left";
}

/** Shapes of a target's projector and low-rank moments. */
export function lowRankShapes(m: number, n: number, r: number): { projector: [number, number]; moment: [number, number] } {
  return projectorSide(m, n) === "right" ? { projector: [r, n], moment: [m, r] } : { projector: [m, r], moment: [r, n] };
}

/** Checks a target tensor can be projected at rank r: 2-D, r ≤ min(m, n). */
export function checkTarget(name: string, t: HostTensor, rank: number): void {
  if (t.shape.length !== 2)
    throw new GradNormError(
      `gradnorm_lorp: tensor "${name}" is ${t.shape.length}-D [${t.shape.join(", ")}]; only 2-D weights are projected (choose --target linear layers)`,
    );
  const [m, n] = t.shape as [number, number];
  if (rank > Math.min(m, n)) throw new GradNormError(`--r: rank ${rank} exceeds min(${m}, ${n}) of tensor "${name}" [${m}, ${n}]`);
}

/**
 * The projector of one dense gradient g (m×n, row-major): right → top-r right singular vectors
 * as rows (r×n), left → top-r left singular vectors as columns (m×r), both as f32.
 */
export function projectorOf(g: Matrix, rank: number, method: "exact" | "randomized"): Float32Array {
  const { u, v } = method === "exact" ? svd(g) : randomizedSvd(g, rank);
  const m = g.rows;
  const n = g.cols;
  if (projectorSide(m, n) === "right") {
    const q = new Float32Array(rank * n);
    const k = v.cols;
    for (let i = 0; i < rank; i++) {
      const sign = canonicalSign((j) => v.data[j * k + i], n);
      for (let j = 0; j < n; j++) q[i * n + j] = sign * v.data[j * k + i];
    }
    return q;
  }
  const p = new Float32Array(m * rank);
  const k = u.cols;
  for (let j = 0; j < rank; j++) {
    const sign = canonicalSign((i) => u.data[i * k + j], m);
    for (let i = 0; i < m; i++) p[i * rank + j] = sign * u.data[i * k + j];
  }
  return p;
}

/**
 * ±1 making a singular vector's largest-magnitude entry positive. An SVD's signs are arbitrary and
 * here flip under round-off-sized changes of the gradient; GaLore keeps the Adam moments across a
 * refresh without re-projecting them, so the sign decides how old moments meet the new basis.
 */
function canonicalSign(at: (i: number) => number, len: number): number {
  let best = 0;
  for (let i = 0; i < len; i++) if (Math.abs(at(i)) > Math.abs(best)) best = at(i);
  return best < 0 ? -1 : 1;
}

/**
 * The matrix the projector is computed from: the raw gradient (authors' code: ∇v = ∇W·g/‖v‖ with
 * g reset to ‖v‖) or the paper's weight-norm direction gradient
 * ∇V = (g/‖V‖)(∇W − v̂·Σ_cols(v̂ ⊙ ∇W)) per row, v̂ = V/‖V‖ = sign(g)·W/‖W‖ (row-wise).
 */
export function directionGradient(
  grad: ArrayLike<number>,
  w: ArrayLike<number>,
  g: ArrayLike<number>,
  vnorm: ArrayLike<number>,
  m: number,
  n: number,
  compat: GradNormCompat | null,
): Matrix {
  const out = matrix(m, n);
  for (let i = 0; i < m; i++) {
    const o = i * n;
    if (compat) {
      for (let j = 0; j < n; j++) out.data[o + j] = grad[o + j];
      continue;
    }
    // V = W·‖V‖/g, so v̂ = V/‖V‖ = W/g.
    const gi = g[i];
    let dot = 0;
    for (let j = 0; j < n; j++) dot += (w[o + j] / gi) * grad[o + j];
    const s = gi / vnorm[i];
    for (let j = 0; j < n; j++) out.data[o + j] = s * (grad[o + j] - (w[o + j] / gi) * dot);
  }
  return out;
}

/** Row norms of a 2-D tensor, as f32 [m, 1]. */
export function rowNorms(t: HostTensor, name: string): Float32Array {
  const [m, n] = t.shape as [number, number];
  const out = new Float32Array(m);
  for (let i = 0; i < m; i++) {
    let s = 0;
    for (let j = 0; j < n; j++) s += Number(t.data[i * n + j]) ** 2;
    out[i] = Math.sqrt(s);
    if (!(out[i] > 0))
      throw new GradNormError(`gradnorm_lorp: row ${i} of tensor "${name}" has norm ${out[i]}; weight normalisation needs non-zero rows`);
  }
  return out;
}
