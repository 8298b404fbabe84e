/** Randomized truncated SVD (Halko, Martinsson & Tropp 2011, Algorithms 4.4 + 5.1), as torch.svd_lowrank. */
import { Rng } from "../util/rng.js";
import { assertFinite } from "./checks.js";
import { LinalgError } from "./errors.js";
import { type Matrix, matmul, matrix, transpose } from "./matrix.js";
import { qr } from "./qr.js";
import { svd } from "./svd.js";

export interface RandomizedSvdOptions {
  /** Subspace (power) iterations, each re-orthonormalised by QR; torch.svd_lowrank's default, 2. */
  niter?: number;
  /** Extra random columns beyond `rank` (Halko et al. §4.2 and torch's note: q = k + 5..10); default 10. */
  oversample?: number;
  /** Source of the Gaussian test matrix; default a fixed seed (0), so results are reproducible. */
  rng?: Rng;
}

/**
 * The top `rank` singular triplets of a (m×n), approximately: u (m×rank), s (descending), v (n×rank),
 * a ≈ u·diag(s)·vᵀ, with u and v orthonormal to round-off.
 *
 * q = min(rank + oversample, m, n) Gaussian columns Ω; Q = orth(A·Ω); niter times Q = orth(A·orth(Aᵀ·Q))
 * (QR after every product keeps the small singular directions from drowning in round-off); then the
 * exact SVD of the small B = Qᵀ·A (q×n) gives A ≈ (Q·Ũ)·S·Vᵀ, of which the first `rank` are kept.
 * torch.svd_lowrank(A, q, niter) is the same with oversample 0 and rank q (it returns all q columns).
 * Error: ‖A − A_rank‖ ≲ (1 + small)·σ_{rank+1} with high probability, and the leading values are
 * accurate to about (σ_{q+1}/σ_j)^(2·niter+1) relative (Halko et al. Cor. 10.10); exact when rank(A) ≤ q.
 */
export function randomizedSvd(a: Matrix, rank: number, opts: RandomizedSvdOptions = {}): { u: Matrix; s: Float64Array; v: Matrix } {
  const { niter = 2, oversample = 10 } = opts;
  const m = a.rows;
  const n = a.cols;
  const k = Math.min(m, n);
  if (!Number.isInteger(rank) || rank < 1 || rank > k)
    throw new LinalgError(`randomizedSvd: rank must be an integer in 1..${k} (min of ${m}x${n}), got ${rank}`);
  if (!Number.isInteger(niter) || niter < 0) throw new LinalgError(`randomizedSvd: niter must be an integer >= 0, got ${niter}`);
  if (!Number.isInteger(oversample) || oversample < 0)
    throw new LinalgError(`randomizedSvd: oversample must be an integer >= 0, got ${oversample}`);
  assertFinite("randomizedSvd", a);
  const rng = opts.rng ?? new Rng(0);
  const q = Math.min(rank + oversample, k);
  const omega = matrix(n, q);
  for (let i = 0; i < omega.data.length; i++) omega.data[i] = rng.normal();
  const at = transpose(a);
  let basis = qr(matmul(a, omega)).q;
  for (let it = 0; it < niter; it++) {
    basis = qr(matmul(at, basis)).q;
    basis = qr(matmul(a, basis)).q;
  }
  // B = Qᵀ·A (q×n) = (Aᵀ·Q)ᵀ.
  const b = transpose(matmul(at, basis));
  const small = svd(b);
  const uFull = matmul(basis, small.u);
  const u = matrix(m, rank);
  const v = matrix(n, rank);
  for (let i = 0; i < m; i++) u.data.set(uFull.data.subarray(i * q, i * q + rank), i * rank);
  for (let i = 0; i < n; i++) v.data.set(small.v.data.subarray(i * q, i * q + rank), i * rank);
  return { u, s: small.s.slice(0, rank), v };
}
