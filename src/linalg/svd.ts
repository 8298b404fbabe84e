/** Thin SVD by one-sided Jacobi, started from the eigenvectors of the Gram matrix. */
import { assertFinite } from "./checks.js";
import { dot, gemmColMajor, gramColMajor, identity } from "./kernels.js";
import { type Matrix, matrix } from "./matrix.js";
import { symmetricEigen } from "./tridiagonal.js";

/**
 * Thin SVD: a (m×n) = U diag(S) Vᵀ with S sorted descending, U (m×k), V (n×k), k = min(m, n),
 * both with orthonormal columns (also for rank-deficient a). One-sided (Hestenes) Jacobi sets
 * the accuracy (relative, to float64 round-off).
 *
 * Why it is shaped this way (PiSSA decomposes every target weight, so speed matters):
 * - it works on the tall orientation T, so only k columns are rotated (k²/2 pairs per sweep);
 * - Jacobi starts from the eigenvectors X0 of TᵀT (Householder tridiagonalisation + implicit
 *   QL), so T·X0 has nearly orthogonal columns and Jacobi only polishes: 2–4 sweeps
 *   instead of ~11. The Gram matrix's squared condition number only slows that polish; it does
 *   not reach the result. If QL fails to converge, Jacobi starts from the identity;
 * - columns are stored contiguously (column-major), so dot products and rotations stream;
 * - a pair is left alone when its cosine is below √m·ε (LAPACK's dgesvj criterion), and the
 *   iteration stops after the first sweep that rotates nothing.
 */
export function svd(a: Matrix): { u: Matrix; s: Float64Array; v: Matrix } {
  assertFinite("svd", a);
  const wide = a.cols > a.rows;
  const m = wide ? a.cols : a.rows;
  const n = wide ? a.rows : a.cols;
  // Column-major copy of the tall orientation: column j of T = Aᵀ (wide) is row j of A.
  const t = new Float64Array(m * n);
  if (wide) t.set(a.data);
  else for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = a.data[i * n + j];
  const x = symmetricEigen(gramColMajor(t, m, n), n)?.vectors ?? identity(n);
  // W = T·X0.
  const w = new Float64Array(m * n);
  gemmColMajor(t, m, n, x, n, w);
  // T·X = W = Y diag(σ) with Y orthonormal ⇒ T = Y diag(σ) Xᵀ.
  jacobi(w, x, m, n, Math.sqrt(m) * Number.EPSILON);
  const sv = new Float64Array(n);
  for (let j = 0; j < n; j++) sv[j] = Math.sqrt(dot(w, j * m, w, j * m, m));
  const order = Array.from(sv.keys()).sort((p, c) => sv[c] - sv[p]);
  // Y = normalised columns of W; exactly zero columns are completed to an orthonormal basis.
  const y = new Float64Array(m * n);
  const xs = new Float64Array(n * n);
  const s = new Float64Array(n);
  order.forEach((j, k) => {
    s[k] = sv[j];
    if (sv[j] > 0) for (let i = 0; i < m; i++) y[k * m + i] = w[j * m + i] / sv[j];
    xs.set(x.subarray(j * n, j * n + n), k * n);
  });
  completeBasis(y, m, n, s);
  // Back to row-major: T = L S Xᵀ; A = T (tall) or Tᵀ = X S Lᵀ (wide).
  const rowMajor = (cm: Float64Array, r: number): Matrix => {
    const out = matrix(r, n);
    for (let k = 0; k < n; k++) for (let i = 0; i < r; i++) out.data[i * n + k] = cm[k * r + i];
    return out;
  };
  const l = rowMajor(y, m);
  const rt = rowMajor(xs, n);
  return wide ? { u: rt, s, v: l } : { u: l, s, v: rt };
}

/**
 * One-sided Jacobi on the column-major rows×n matrix w, accumulating the rotations into the
 * column-major n×n x, until no pair of columns has |cos| above tol.
 */
function jacobi(w: Float64Array, x: Float64Array, rows: number, n: number, tol: number): void {
  // Squared column norms: recomputed at the start of each sweep and updated in closed form after
  // a rotation (α' = α − tγ, β' = β + tγ), so each pair needs only its dot product. They only
  // steer the angles and the stopping test; the singular values come from the final columns.
  const norm2 = new Float64Array(n);
  for (let sweep = 0; sweep < 60; sweep++) {
    for (let j = 0; j < n; j++) norm2[j] = dot(w, j * rows, w, j * rows, rows);
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      const po = p * rows;
      for (let q = p + 1; q < n; q++) {
        const qo = q * rows;
        const alpha = norm2[p];
        const beta = norm2[q];
        const gamma = dot(w, po, w, qo, rows);
        if (gamma === 0 || Math.abs(gamma) <= tol * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = Math.sign(zeta || 1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        for (let i = 0; i < rows; i++) {
          const a = w[po + i];
          const b = w[qo + i];
          w[po + i] = c * a - s * b;
          w[qo + i] = s * a + c * b;
        }
        norm2[p] = Math.max(alpha - t * gamma, 0);
        norm2[q] = Math.max(beta + t * gamma, 0);
        const xp = p * n;
        const xq = q * n;
        for (let i = 0; i < n; i++) {
          const a = x[xp + i];
          const b = x[xq + i];
          x[xp + i] = c * a - s * b;
          x[xq + i] = s * a + c * b;
        }
      }
    }
    if (!rotated) return;
  }
}

/** Fill the zero columns of the column-major rows×n y (where s is 0) so that y is orthonormal. */
function completeBasis(y: Float64Array, rows: number, n: number, s: Float64Array): void {
  let e = 0;
  for (let k = 0; k < n; k++) {
    if (s[k] > 0) continue;
    const o = k * rows;
    for (; e < rows; e++) {
      y.fill(0, o, o + rows);
      y[o + e] = 1;
      // Gram–Schmidt twice against every other column that is set (zero columns after k are not).
      for (let pass = 0; pass < 2; pass++)
        for (let l = 0; l < n; l++) {
          if (l === k || (s[l] === 0 && l > k)) continue;
          const d = dot(y, l * rows, y, o, rows);
          for (let i = 0; i < rows; i++) y[o + i] -= d * y[l * rows + i];
        }
      const norm = Math.sqrt(dot(y, o, y, o, rows));
      if (norm > 0.5) {
        for (let i = 0; i < rows; i++) y[o + i] /= norm;
        e++;
        break;
      }
    }
  }
}
