/**
 * DSEE's GreBsmo-style low-rank + sparse split of a pretrained weight (VITA-Group/DSEE,
 * non-GPT-2/examples/pytorch/text-classification/run_glue.py, `main`, sparse_method "grebsmo"):
 *
 *   V ~ N(0, 1) [1, in]
 *   for each outer iteration (rank k = 1, 1 + step, 1 + 2·step, …):
 *     S = 0
 *     inner times:  U = Q-factor of QR((W − S)·Vᵀ);  V = Uᵀ·(W − S);  S = W − U·V with |S| < threshold set to 0
 *     E = W − U·V − S;  V = [V; the first `step` rows of the R-factor of QR(E)]
 *
 * S of the last inner iteration is returned; DSEE keeps its N largest |S| as the support.
 *
 * Speed (this runs in JavaScript on the host, once per targeted matrix):
 * - the outer loop stops before the rank reaches min(out, in): at full rank U·V reproduces W − S,
 *   S stays 0 and the support would be round-off;
 * - the products go through the blocked kernel src/linalg/kernels.ts `gemmColMajor`;
 * - U is any orthonormal basis of the columns of (W − S)·Vᵀ: the iteration only sees U·Uᵀ and
 *   span(V), so the basis does not change the result. It comes from classical Gram–Schmidt applied
 *   twice ("twice is enough", Giraud et al. 2005) on contiguous columns, 2·m·k² multiply-adds,
 *   instead of Householder QR on row-major storage (src/linalg/qr.ts), which is several times
 *   slower at these sizes. The Q it gives equals Householder's up to the sign of each column.
 * - QR(E) is needed only for R's first `step` rows: R[:step] = Q[:, :step]ᵀ·E, where Q[:, :step]
 *   orthonormalises E's first `step` columns; the rest of that factorisation is never formed.
 */
import { dot, gemmColMajor } from "../../linalg/kernels.js";
import type { Matrix } from "../../linalg/matrix.js";
import type { Rng } from "../../util/rng.js";

export interface GrebsmoOptions {
  /** Rows added to V per outer iteration (the authors' 5). */
  rankStep: number;
  /** Outer iterations at most (100); fewer when the rank would reach min(out, in). */
  outerIters: number;
  /** Inner iterations (2). */
  innerIters: number;
  /** Entries of W − U·V below this in absolute value are not part of S (0.01). */
  threshold: number;
  /**
   * peftkit's addition: stop once S has fewer than this many nonzeros (DSEE passes N) and return
   * the previous S, the last one with a full support; 0 runs the authors' fixed schedule.
   */
  minSupport: number;
  /** Draws V's initial row. */
  rng: Rng;
}

export interface GrebsmoResult {
  /** The sparse part S, row-major like W. */
  s: Float64Array;
  /** Rank of the last low-rank fit U·V. */
  rank: number;
  /** Outer iterations run. */
  outer: number;
}

/** C (p×r) += A (p×q) · B (q×r), all row-major: gemmColMajor on the transposes. */
function gemm(a: Float64Array, p: number, q: number, b: Float64Array, r: number, c: Float64Array): void {
  gemmColMajor(b, r, q, a, p, c);
}

function transposeInto(a: Float64Array, rows: number, cols: number, out: Float64Array): Float64Array {
  for (let i = 0; i < rows; i++) {
    const ro = i * cols;
    for (let j = 0; j < cols; j++) out[j * rows + i] = a[ro + j];
  }
  return out;
}

/**
 * Orthonormalises the k columns of the column-major m×k `y` in place (classical Gram–Schmidt,
 * two passes). A column that is (numerically) in the span of the earlier ones is replaced by a
 * unit vector orthogonal to them when `fill` is true, so the basis keeps k columns; otherwise it
 * is dropped. Returns the number of columns kept (they are the first ones of `y`).
 */
export function orthonormalizeColumns(y: Float64Array, m: number, k: number, fill: boolean): number {
  const coef = new Float64Array(k);
  let kept = 0;
  const project = (off: number) => {
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < kept; i++) coef[i] = dot(y, i * m, y, off, m);
      for (let i = 0; i < kept; i++) {
        const c = coef[i];
        if (c === 0) continue;
        const qo = i * m;
        for (let r = 0; r < m; r++) y[off + r] -= c * y[qo + r];
      }
    }
  };
  for (let j = 0; j < k; j++) {
    const off = kept * m;
    if (off !== j * m) y.copyWithin(off, j * m, j * m + m);
    const before = Math.sqrt(dot(y, off, y, off, m));
    project(off);
    let norm = Math.sqrt(dot(y, off, y, off, m));
    if (!(norm > 1e-10 * before) || norm === 0) {
      if (!fill) continue;
      // Dependent column: a unit vector orthogonal to the basis so far (one of e_0 … e_{m−1} works).
      for (let e = 0; e < m && !(norm > 0.5); e++) {
        y.fill(0, off, off + m);
        y[off + ((j + e) % m)] = 1;
        project(off);
        norm = Math.sqrt(dot(y, off, y, off, m));
      }
    }
    for (let r = 0; r < m; r++) y[off + r] /= norm;
    kept++;
  }
  return kept;
}

/** The low-rank + sparse split of `w` (row-major out×in); see the file comment. */
export function grebsmo(w: Matrix, o: GrebsmoOptions): GrebsmoResult {
  const m = w.rows;
  const n = w.cols;
  const kmax = Math.min(m, n);
  const wd = w.data;
  let k = 1;
  let v = new Float64Array(n);
  for (let i = 0; i < n; i++) v[i] = o.rng.normal();
  const s = new Float64Array(m * n);
  const x = new Float64Array(m * n);
  const xt = new Float64Array(m * n);
  const uv = new Float64Array(m * n);
  let rank = 0;
  let outer = 0;
  let kept: { s: Float64Array; rank: number } | null = null;
  for (let t = 0; t < o.outerIters && k < kmax; t++) {
    s.fill(0);
    for (let inner = 0; inner < o.innerIters; inner++) {
      for (let i = 0; i < x.length; i++) x[i] = wd[i] - s[i];
      transposeInto(x, m, n, xt);
      // Uᵀ (k×m, row-major) = V·Xᵀ, then its rows made orthonormal: U's columns.
      const ut = new Float64Array(k * m);
      gemm(v, k, n, xt, m, ut);
      orthonormalizeColumns(ut, m, k, true);
      v = new Float64Array(k * n);
      gemm(ut, k, m, x, n, v);
      const u = transposeInto(ut, k, m, new Float64Array(m * k));
      uv.fill(0);
      gemm(u, m, k, v, n, uv);
      for (let i = 0; i < s.length; i++) {
        const r = wd[i] - uv[i];
        s[i] = Math.abs(r) < o.threshold ? 0 : r;
      }
    }
    rank = k;
    outer = t + 1;
    let nz = 0;
    for (const q of s) if (q !== 0) nz++;
    if (nz < o.minSupport && kept) {
      // The fit now explains all but fewer than N entries: keep the last S that still had N.
      s.set(kept.s);
      return { s, rank: kept.rank, outer };
    }
    kept = { s: Float64Array.from(s), rank: k };
    const next = Math.min(o.rankStep, n);
    if (t + 1 >= o.outerIters || k + next >= kmax) break;
    // R[:step] of QR(E) = Q[:, :step]ᵀ·E, Q[:, :step] from E's first `step` columns.
    const qt = new Float64Array(next * m);
    for (let j = 0; j < next; j++) for (let i = 0; i < m; i++) qt[j * m + i] = wd[i * n + j] - uv[i * n + j] - s[i * n + j];
    // As LAPACK's Householder QR, a zero (dependent) column still yields a row (H = I there): the
    // rank grows by exactly `step`. E is often zero in whole columns (S took every entry above the threshold).
    const p = orthonormalizeColumns(qt, m, next, true);
    const e = new Float64Array(m * n);
    for (let i = 0; i < e.length; i++) e[i] = wd[i] - uv[i] - s[i];
    const grown = new Float64Array((k + p) * n);
    grown.set(v);
    gemm(qt.subarray(0, p * m), p, m, e, n, grown.subarray(k * n));
    v = grown;
    k += p;
  }
  return { s, rank, outer };
}
