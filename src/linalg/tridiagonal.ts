/** Symmetric eigensolver: Householder tridiagonalisation, then implicit QL with Wilkinson shifts. */
import { identity } from "./kernels.js";

/**
 * Eigenvalues (unordered) and eigenvectors (column-major n×n, orthonormal, column j belongs to
 * values[j]) of the symmetric n×n a, which is overwritten: Householder reduction to tridiagonal
 * T = Qᵀ·A·Q, then implicit QL with Wilkinson shifts on T, rotating Q's columns. Both triangles
 * are read, so a must be exactly symmetric. Returns undefined if QL needs more than 60 steps for
 * one value.
 */
export function symmetricEigen(a: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } | undefined {
  const d = new Float64Array(n);
  const e = new Float64Array(n); // e[i] = T[i][i+1]
  const vs: (Float64Array | undefined)[] = [];
  const p = new Float64Array(n);
  for (let k = 0; k < n - 2; k++) {
    const base = k + 1;
    const len = n - base;
    d[k] = a[k * n + k];
    let norm = 0;
    for (let i = 0; i < len; i++) norm += a[k * n + base + i] ** 2;
    norm = Math.sqrt(norm);
    const x0 = a[k * n + base];
    const alpha = x0 > 0 ? -norm : norm;
    e[k] = alpha;
    if (norm === 0) {
      e[k] = 0;
      vs.push(undefined);
      continue;
    }
    const v = new Float64Array(len);
    for (let i = 0; i < len; i++) v[i] = a[k * n + base + i];
    v[0] -= alpha;
    let vtv = 0;
    for (let i = 0; i < len; i++) vtv += v[i] * v[i];
    const beta = 2 / vtv;
    // A22 ← H·A22·H with H = I − β·v·vᵀ: p = β·A22·v, w = p − (β/2)(pᵀv)·v, A22 −= v·wᵀ + w·vᵀ.
    let ptv = 0;
    for (let i = 0; i < len; i++) {
      const ro = (base + i) * n + base;
      let sum = 0;
      for (let j = 0; j < len; j++) sum += a[ro + j] * v[j];
      p[i] = beta * sum;
      ptv += p[i] * v[i];
    }
    const kk = (beta / 2) * ptv;
    for (let i = 0; i < len; i++) p[i] -= kk * v[i];
    for (let i = 0; i < len; i++) {
      const ro = (base + i) * n + base;
      const vi = v[i];
      const pi = p[i];
      for (let j = 0; j < len; j++) a[ro + j] -= vi * p[j] + pi * v[j];
    }
    vs.push(v);
  }
  if (n >= 2) {
    d[n - 2] = a[(n - 2) * n + n - 2];
    e[n - 2] = a[(n - 2) * n + n - 1];
  }
  d[n - 1] = a[(n - 1) * n + n - 1];
  e[n - 1] = 0;
  // Q = H_0 H_1 … H_{n-3} (column-major); H_k leaves columns 0..k alone.
  const z = identity(n);
  for (let k = vs.length - 1; k >= 0; k--) {
    const v = vs[k];
    if (!v) continue;
    const base = k + 1;
    let vtv = 0;
    for (let i = 0; i < v.length; i++) vtv += v[i] * v[i];
    const beta = 2 / vtv;
    for (let c = base; c < n; c++) {
      const o = c * n + base;
      let s = 0;
      for (let i = 0; i < v.length; i++) s += v[i] * z[o + i];
      s *= beta;
      if (s !== 0) for (let i = 0; i < v.length; i++) z[o + i] -= s * v[i];
    }
  }
  // Implicit QL on the tridiagonal (d, e), accumulating the plane rotations into z's columns.
  for (let l = 0; l < n; l++) {
    let iter = 0;
    for (;;) {
      let m = l;
      for (; m < n - 1; m++) {
        const dd = Math.abs(d[m]) + Math.abs(d[m + 1]);
        if (Math.abs(e[m]) <= Number.EPSILON * dd) break;
      }
      if (m === l) break;
      if (iter++ === 60) return undefined;
      let g = (d[l + 1] - d[l]) / (2 * e[l]);
      let r = Math.hypot(g, 1);
      g = d[m] - d[l] + e[l] / (g + (g >= 0 ? r : -r));
      let s = 1;
      let c = 1;
      let pp = 0;
      let i = m - 1;
      let underflow = false;
      for (; i >= l; i--) {
        const f = s * e[i];
        const b = c * e[i];
        r = Math.hypot(f, g);
        e[i + 1] = r;
        if (r === 0) {
          d[i + 1] -= pp;
          e[m] = 0;
          underflow = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1] - pp;
        r = (d[i] - g) * s + 2 * c * b;
        pp = s * r;
        d[i + 1] = g + pp;
        g = c * r - b;
        const o0 = i * n;
        const o1 = (i + 1) * n;
        for (let k = 0; k < n; k++) {
          const zf = z[o1 + k];
          const zi = z[o0 + k];
          z[o1 + k] = s * zi + c * zf;
          z[o0 + k] = c * zi - s * zf;
        }
      }
      if (underflow) continue;
      d[l] -= pp;
      e[l] = g;
      e[m] = 0;
    }
  }
  return { values: d, vectors: z };
}
