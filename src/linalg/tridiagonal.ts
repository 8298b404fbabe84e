/** Symmetric eigensolver: Householder tridiagonalisation, then implicit QL with Wilkinson shifts. */
import { identity } from "./kernels.js";

/**
 * Eigenvalues (unordered) and eigenvectors (column-major n×n, orthonormal, column j belongs to
 * values[j]) of the symmetric n×n a, which is overwritten: Householder reduction to tridiagonal
 * T = Qᵀ·A·Q, then implicit QL with Wilkinson shifts on T, rotating Q's columns. Only the lower
 * triangle of a is read (a must be symmetric; the upper triangle is left as garbage). Returns
 * undefined if QL needs more than 60 steps for one value.
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
    // Only the lower triangle is read and updated: column k below the diagonal is the vector to reflect.
    let norm = 0;
    for (let i = 0; i < len; i++) norm += a[(base + i) * n + k] ** 2;
    norm = Math.sqrt(norm);
    const x0 = a[base * n + k];
    const alpha = x0 > 0 ? -norm : norm;
    e[k] = alpha;
    if (norm === 0) {
      e[k] = 0;
      vs.push(undefined);
      continue;
    }
    const v = new Float64Array(len);
    for (let i = 0; i < len; i++) v[i] = a[(base + i) * n + k];
    v[0] -= alpha;
    let vtv = 0;
    for (let i = 0; i < len; i++) vtv += v[i] * v[i];
    const beta = 2 / vtv;
    // A22 ← H·A22·H with H = I − β·v·vᵀ: p = β·A22·v, w = p − (β/2)(pᵀv)·v, A22 −= v·wᵀ + w·vᵀ.
    // A22·v from the lower triangle: row i's part left of the diagonal gives p[i] (a dot product) and,
    // mirrored, adds a(i, j)·v[i] to every p[j] (an axpy); both stream row i. Half the memory traffic
    // and flops of the full matrix, which matters once A22 no longer fits in cache (n ≳ 600).
    p.fill(0, 0, len);
    for (let i = 0; i < len; i++) {
      const ro = (base + i) * n + base;
      const vi = v[i];
      let sum = 0;
      for (let j = 0; j < i; j++) {
        const aij = a[ro + j];
        sum += aij * v[j];
        p[j] += aij * vi;
      }
      p[i] += sum + a[ro + i] * vi;
    }
    let ptv = 0;
    for (let i = 0; i < len; i++) {
      p[i] *= beta;
      ptv += p[i] * v[i];
    }
    const kk = (beta / 2) * ptv;
    for (let i = 0; i < len; i++) p[i] -= kk * v[i];
    for (let i = 0; i < len; i++) {
      const ro = (base + i) * n + base;
      const vi = v[i];
      const pi = p[i];
      for (let j = 0; j <= i; j++) a[ro + j] -= vi * p[j] + pi * v[j];
    }
    vs.push(v);
  }
  if (n >= 2) {
    d[n - 2] = a[(n - 2) * n + n - 2];
    e[n - 2] = a[(n - 1) * n + n - 2];
  }
  d[n - 1] = a[(n - 1) * n + n - 1];
  e[n - 1] = 0;
  // Q = H_0 H_1 … H_{n-3} applied to I (column-major). Columns are independent, and H_k leaves
  // columns 0..k alone (they are still unit vectors with zeros where H_k acts). Blocks of 8 columns
  // (8·n doubles, L2-resident) take every reflector in turn, so each v_k is read n/8 times and z is
  // streamed once, instead of z streaming from memory once per reflector.
  const z = identity(n);
  const betas = vs.map((v) => {
    if (!v) return 0;
    let vtv = 0;
    for (let i = 0; i < v.length; i++) vtv += v[i] * v[i];
    return 2 / vtv;
  });
  for (let c0 = 0; c0 < n; c0 += 8) {
    const c1 = Math.min(n, c0 + 8);
    for (let k = vs.length - 1; k >= 0; k--) {
      const v = vs[k];
      if (!v) continue;
      const base = k + 1;
      const beta = betas[k];
      const len = v.length;
      let c = Math.max(c0, base);
      // Two columns at a time: two independent sums keep the adder busy and share the loads of v.
      for (; c + 1 < c1; c += 2) {
        const o = c * n + base;
        const o2 = o + n;
        let s = 0;
        let s2 = 0;
        for (let i = 0; i < len; i++) {
          const vi = v[i];
          s += vi * z[o + i];
          s2 += vi * z[o2 + i];
        }
        s *= beta;
        s2 *= beta;
        for (let i = 0; i < len; i++) {
          const vi = v[i];
          z[o + i] -= s * vi;
          z[o2 + i] -= s2 * vi;
        }
      }
      if (c < c1) {
        const o = c * n + base;
        let s = 0;
        for (let i = 0; i < len; i++) s += v[i] * z[o + i];
        s *= beta;
        for (let i = 0; i < len; i++) z[o + i] -= s * v[i];
      }
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
