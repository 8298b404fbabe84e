import { assertFinite } from "./checks.js";
import { type Matrix, matrix } from "./matrix.js";

/**
 * Thin QR by Householder reflections: a (m×n) = Q (m×k) · R (k×n), k = min(m, n), with R's
 * diagonal made non-negative is NOT enforced (matching LAPACK/torch.linalg.qr signs).
 */
export function qr(a: Matrix): { q: Matrix; r: Matrix } {
  assertFinite("qr", a);
  const m = a.rows;
  const n = a.cols;
  const k = Math.min(m, n);
  const r = matrix(m, n, a.data);
  const vs: Float64Array[] = [];
  for (let j = 0; j < k; j++) {
    let norm = 0;
    for (let i = j; i < m; i++) norm += r.data[i * n + j] ** 2;
    norm = Math.sqrt(norm);
    const v = new Float64Array(m);
    if (norm === 0) {
      vs.push(v);
      continue;
    }
    const x0 = r.data[j * n + j];
    const alpha = x0 > 0 ? -norm : norm;
    for (let i = j; i < m; i++) v[i] = r.data[i * n + j];
    v[j] -= alpha;
    let vn = 0;
    for (let i = j; i < m; i++) vn += v[i] ** 2;
    if (vn === 0) {
      vs.push(new Float64Array(m));
      continue;
    }
    for (let c = j; c < n; c++) {
      let dot = 0;
      for (let i = j; i < m; i++) dot += v[i] * r.data[i * n + c];
      const f = (2 * dot) / vn;
      for (let i = j; i < m; i++) r.data[i * n + c] -= f * v[i];
    }
    vs.push(Float64Array.from(v, (x) => x / Math.sqrt(vn)));
  }
  // Q = H_0 H_1 ... H_{k-1} applied to the first k columns of the identity.
  const q = matrix(m, k);
  for (let i = 0; i < k; i++) q.data[i * k + i] = 1;
  for (let j = k - 1; j >= 0; j--) {
    const v = vs[j];
    for (let c = 0; c < k; c++) {
      let dot = 0;
      for (let i = j; i < m; i++) dot += v[i] * q.data[i * k + c];
      for (let i = j; i < m; i++) q.data[i * k + c] -= 2 * dot * v[i];
    }
  }
  const rt = matrix(k, n);
  for (let i = 0; i < k; i++) for (let c = i; c < n; c++) rt.data[i * n + c] = r.data[i * n + c];
  return { q, r: rt };
}
