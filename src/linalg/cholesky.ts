/** Cholesky factorisation A = L·Lᵀ of a symmetric positive definite matrix. */
import { assertSymmetric } from "./checks.js";
import { NotPositiveDefiniteError } from "./errors.js";
import { type Matrix, matrix } from "./matrix.js";

/**
 * Lower triangular L with A = L·Lᵀ and a positive diagonal (as torch.linalg.cholesky). Reads the
 * lower triangle of a (which must still be symmetric up to round-off). Row-oriented (Cholesky–
 * Crout): entry (i, j) is a dot product of rows i and j of L, both contiguous.
 * A pivot that is not positive throws NotPositiveDefiniteError naming it.
 */
export function cholesky(a: Matrix): Matrix {
  const n = assertSymmetric("cholesky", a);
  const l = matrix(n, n);
  const ld = l.data;
  const ad = a.data;
  for (let i = 0; i < n; i++) {
    const io = i * n;
    for (let j = 0; j <= i; j++) {
      const jo = j * n;
      // Sum the products first, then subtract once: measured ~3× smaller ‖A − L·Lᵀ‖ than subtracting
      // each product from a(i, j) in turn (docs/dev/linalg.md).
      let dot = 0;
      for (let k = 0; k < j; k++) dot += ld[io + k] * ld[jo + k];
      const s = ad[io + j] - dot;
      if (j < i) ld[io + j] = s / ld[jo + j];
      else {
        if (!(s > 0))
          throw new NotPositiveDefiniteError(
            `cholesky: a is not positive definite: pivot ${i} (of ${n}) is ${s} after eliminating the rows above it`,
          );
        ld[io + i] = Math.sqrt(s);
      }
    }
  }
  return l;
}

/** X with L·Lᵀ·X = B, for B [n, k] (forward then backward substitution on whole rows). */
export function choleskySolve(l: Matrix, b: Matrix): Matrix {
  const n = l.rows;
  const k = b.cols;
  const x = matrix(n, k, b.data);
  const d = x.data;
  for (let i = 0; i < n; i++) {
    const ri = i * k;
    for (let j = 0; j < i; j++) {
      const f = l.data[i * n + j];
      if (f === 0) continue;
      const rj = j * k;
      for (let c = 0; c < k; c++) d[ri + c] -= f * d[rj + c];
    }
    const p = l.data[i * n + i];
    for (let c = 0; c < k; c++) d[ri + c] /= p;
  }
  for (let i = n - 1; i >= 0; i--) {
    const ri = i * k;
    for (let j = i + 1; j < n; j++) {
      const f = l.data[j * n + i];
      if (f === 0) continue;
      const rj = j * k;
      for (let c = 0; c < k; c++) d[ri + c] -= f * d[rj + c];
    }
    const p = l.data[i * n + i];
    for (let c = 0; c < k; c++) d[ri + c] /= p;
  }
  return x;
}
