/**
 * Kronecker-product SVD (Van Loan & Pitsianis 1993, "Approximation with Kronecker products"):
 * for M of size (m·p)×(n·q), the rearrangement R(M) of size (m·n)×(p·q) has as row i·n + j the
 * p×q block M[i·p .. i·p+p, j·q .. j·q+q] read row by row. R is linear and R(U ⊗ V) = vec(U)·vec(V)ᵀ,
 * so the SVD R(M) = Σ σ_k u_k v_kᵀ gives M = Σ σ_k U_k ⊗ V_k with U_k = reshape(u_k, m×n) and
 * V_k = reshape(v_k, p×q), and truncating it is the best approximation by r Kronecker terms.
 * Host float64, row-major (src/util/linalg.ts).
 */
import { type Matrix, matrix, svd } from "../../util/linalg.js";

/** Shapes of a Kronecker factorisation of an (m·p)×(n·q) matrix: U is m×n, V is p×q. */
export interface KronShape {
  m: number;
  n: number;
  p: number;
  q: number;
}

/** R(M): (m·n)×(p·q), row i·n + j = block (i, j) of M (p×q, row-major). */
export function rearrange(mat: Matrix, s: KronShape): Matrix {
  if (mat.rows !== s.m * s.p || mat.cols !== s.n * s.q)
    throw new Error(`rearrange: ${mat.rows}x${mat.cols} is not (${s.m}·${s.p})x(${s.n}·${s.q})`);
  const out = matrix(s.m * s.n, s.p * s.q);
  for (let i = 0; i < s.m; i++)
    for (let j = 0; j < s.n; j++) {
      const row = (i * s.n + j) * s.p * s.q;
      for (let o = 0; o < s.p; o++)
        for (let l = 0; l < s.q; l++) out.data[row + o * s.q + l] = mat.data[(i * s.p + o) * mat.cols + j * s.q + l];
    }
  return out;
}

/** Σ_k U_k ⊗ V_k as an (m·p)×(n·q) matrix; us[k] is m×n, vs[k] is p×q (row-major). */
export function kronSum(us: readonly ArrayLike<number>[], vs: readonly ArrayLike<number>[], s: KronShape): Matrix {
  const out = matrix(s.m * s.p, s.n * s.q);
  const cols = s.n * s.q;
  us.forEach((u, k) => {
    const v = vs[k];
    for (let i = 0; i < s.m; i++)
      for (let j = 0; j < s.n; j++) {
        const a = u[i * s.n + j];
        if (a === 0) continue;
        for (let o = 0; o < s.p; o++) for (let l = 0; l < s.q; l++) out.data[(i * s.p + o) * cols + j * s.q + l] += a * v[o * s.q + l];
      }
  });
  return out;
}

export interface Kpsvd {
  /** Singular values of R(M), descending (min(m·n, p·q) of them). */
  s: Float64Array;
  /** u[k]: U_k, m×n row-major (unit Frobenius norm). */
  u: Float64Array[];
  /** v[k]: V_k, p×q row-major (unit Frobenius norm). */
  v: Float64Array[];
}

/** The full Kronecker-product SVD M = Σ σ_k U_k ⊗ V_k. */
export function kpsvd(mat: Matrix, s: KronShape): Kpsvd {
  const r = rearrange(mat, s);
  const d = svd(r);
  const k = d.s.length;
  const u: Float64Array[] = [];
  const v: Float64Array[] = [];
  for (let t = 0; t < k; t++) {
    const ut = new Float64Array(s.m * s.n);
    for (let i = 0; i < ut.length; i++) ut[i] = d.u.data[i * k + t];
    const vt = new Float64Array(s.p * s.q);
    for (let i = 0; i < vt.length; i++) vt[i] = d.v.data[i * k + t];
    u.push(ut);
    v.push(vt);
  }
  return { s: d.s, u, v };
}

/** Smallest r whose leading σ's hold at least `threshold` of Σσ² (≥ 1; all when the sum is 0). */
export function energyRank(s: ArrayLike<number>, threshold: number): number {
  let total = 0;
  for (let i = 0; i < s.length; i++) total += s[i] * s[i];
  if (total === 0) return Math.max(1, s.length);
  let acc = 0;
  for (let i = 0; i < s.length; i++) {
    acc += s[i] * s[i];
    if (acc >= threshold * total * (1 - 1e-12)) return i + 1;
  }
  return s.length;
}

/**
 * The components before the elbow of a descending spectrum. The elbow is the point farthest below
 * the straight line joining the first and the last point, on axes scaled to [0, 1] (the "kneedle"
 * rule): the first value after the bend. It and everything after it are pruned (at least one
 * value is kept); a spectrum of one or two values, or a straight line, keeps everything.
 */
export function elbowRank(s: ArrayLike<number>): number {
  const k = s.length;
  if (k <= 2) return k;
  const hi = s[0];
  const lo = s[k - 1];
  if (hi === lo) return k;
  let best = -1;
  let at = k;
  for (let i = 0; i < k; i++) {
    const x = i / (k - 1);
    const y = (s[i] - lo) / (hi - lo);
    // The chord runs from (0, 1) to (1, 0); a convex decay lies below it, by 1 − x − y.
    const d = 1 - x - y;
    if (d > best + 1e-12) {
      best = d;
      at = Math.max(1, i);
    }
  }
  return best <= 1e-12 ? k : at;
}

/**
 * SoKA's spectrum-aware rank: the fewer of the energy rank and the elbow rank, at most `max`
 * and at least 1.
 */
export function selectRank(s: ArrayLike<number>, threshold: number, max: number): number {
  return Math.max(1, Math.min(max, energyRank(s, threshold), elbowRank(s)));
}

/** The factor of d nearest √d from below (d = f·(d/f), f ≤ d/f), as LoKr-style balanced shapes. */
export function balancedFactor(d: number): number {
  for (let f = Math.floor(Math.sqrt(d)); f >= 1; f--) if (d % f === 0) return f;
  return 1;
}
