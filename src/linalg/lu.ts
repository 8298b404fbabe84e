/** LU factorisation with partial (row) pivoting, as LAPACK's getrf: P·A = L·U. */
import { assertFinite } from "./checks.js";
import { type Matrix, matrix } from "./matrix.js";

/** The packed result: L's strict lower part and U in one m×n array, and the row order. */
export interface PackedLu {
  rows: number;
  cols: number;
  /** Row-major m×n: below the diagonal L (unit diagonal implied), on and above it U. */
  data: Float64Array;
  /** perm[i] = row of A that became row i of P·A. */
  perm: Int32Array;
}

/**
 * Right-looking Doolittle elimination on a copy of a. The pivot of column j is the first entry
 * of largest magnitude on or below the diagonal (LAPACK's idamax rule, so ties pick the same row as
 * torch.linalg.lu). A zero pivot column is left as it is (L's column stays 0 below the diagonal, U
 * gets a 0 on the diagonal), as getrf does: the factorisation of a singular matrix still exists;
 * only solve/inverse refuse it.
 */
export function luPacked(a: Matrix, fn = "lu"): PackedLu {
  assertFinite(fn, a);
  const m = a.rows;
  const n = a.cols;
  const k = Math.min(m, n);
  const w = Float64Array.from(a.data);
  const perm = new Int32Array(m);
  for (let i = 0; i < m; i++) perm[i] = i;
  for (let j = 0; j < k; j++) {
    let p = j;
    let best = Math.abs(w[j * n + j]);
    for (let i = j + 1; i < m; i++) {
      const v = Math.abs(w[i * n + j]);
      if (v > best) {
        best = v;
        p = i;
      }
    }
    if (p !== j) {
      // Whole rows move, the finished L part included, so L ends up in P·A's row order.
      const jo = j * n;
      const po = p * n;
      for (let c = 0; c < n; c++) {
        const t = w[jo + c];
        w[jo + c] = w[po + c];
        w[po + c] = t;
      }
      const t = perm[j];
      perm[j] = perm[p];
      perm[p] = t;
    }
    if (best === 0) continue;
    const jo = j * n;
    const pivot = w[jo + j];
    for (let i = j + 1; i < m; i++) {
      const io = i * n;
      const f = w[io + j] / pivot;
      w[io + j] = f;
      if (f === 0) continue;
      for (let c = j + 1; c < n; c++) w[io + c] -= f * w[jo + c];
    }
  }
  return { rows: m, cols: n, data: w, perm };
}

/**
 * P·A = L·U for any m×n a, with k = min(m, n): L is m×k unit lower triangular (|L| ≤ 1 below the
 * diagonal), U is k×n upper triangular (trapezoidal when n > m), and perm[i] is the row of A
 * that is row i of P·A, i.e. (P·A)[i][:] = A[perm[i]][:] and A = Pᵀ·L·U.
 */
export function lu(a: Matrix): { perm: Int32Array; l: Matrix; u: Matrix } {
  const { rows: m, cols: n, data: w, perm } = luPacked(a);
  const k = Math.min(m, n);
  const l = matrix(m, k);
  const u = matrix(k, n);
  for (let i = 0; i < m; i++) {
    const lim = Math.min(i, k);
    for (let j = 0; j < lim; j++) l.data[i * k + j] = w[i * n + j];
    if (i < k) {
      l.data[i * k + i] = 1;
      for (let j = i; j < n; j++) u.data[i * n + j] = w[i * n + j];
    }
  }
  return { perm, l, u };
}
