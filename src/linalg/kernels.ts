/** Column-major float64 kernels shared by the factorisations (not exported from src/util/linalg.ts). */

export function dot(a: Float64Array, ao: number, b: Float64Array, bo: number, len: number): number {
  // Two partial sums: the loop is bound by the latency of the additions, not by the loads.
  let d = 0;
  let d2 = 0;
  let i = 0;
  for (; i + 1 < len; i += 2) {
    d += a[ao + i] * b[bo + i];
    d2 += a[ao + i + 1] * b[bo + i + 1];
  }
  if (i < len) d += a[ao + i] * b[bo + i];
  return d + d2;
}

export function identity(n: number): Float64Array {
  const x = new Float64Array(n * n);
  for (let i = 0; i < n; i++) x[i * n + i] = 1;
  return x;
}

/**
 * w += t·x for column-major t (rows×k), x (k×n) and w (rows×n). Blocked for the cache: rows in
 * chunks whose columns stay in L1, four output columns per pass (each load of t feeds four
 * multiply-adds), so t streams from memory n/4 times per row chunk instead of n times.
 */
export function gemmColMajor(t: Float64Array, rows: number, k: number, x: Float64Array, n: number, w: Float64Array): void {
  const chunk = 256;
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const r1 = Math.min(rows, r0 + chunk);
    let j = 0;
    for (; j + 3 < n; j += 4) {
      const w0 = j * rows;
      const w1 = w0 + rows;
      const w2 = w1 + rows;
      const w3 = w2 + rows;
      for (let l = 0; l < k; l++) {
        const f0 = x[j * k + l];
        const f1 = x[(j + 1) * k + l];
        const f2 = x[(j + 2) * k + l];
        const f3 = x[(j + 3) * k + l];
        if (f0 === 0 && f1 === 0 && f2 === 0 && f3 === 0) continue;
        const to = l * rows;
        for (let i = r0; i < r1; i++) {
          const v = t[to + i];
          w[w0 + i] += f0 * v;
          w[w1 + i] += f1 * v;
          w[w2 + i] += f2 * v;
          w[w3 + i] += f3 * v;
        }
      }
    }
    for (; j < n; j++) {
      const wo = j * rows;
      for (let l = 0; l < k; l++) {
        const f = x[j * k + l];
        if (f === 0) continue;
        const to = l * rows;
        for (let i = r0; i < r1; i++) w[wo + i] += f * t[to + i];
      }
    }
  }
}

/**
 * The Gram matrix CᵀC (n×n, full, symmetric) of the column-major rows×n c. Blocked like
 * gemmColMajor: row chunks, and four dot products against column j at once.
 */
export function gramColMajor(c: Float64Array, rows: number, n: number): Float64Array {
  const g = new Float64Array(n * n);
  const chunk = 256;
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const r1 = Math.min(rows, r0 + chunk);
    let i = 0;
    for (; i + 3 < n; i += 4) {
      const c0 = i * rows;
      const c1 = c0 + rows;
      const c2 = c1 + rows;
      const c3 = c2 + rows;
      for (let j = i; j < n; j++) {
        const co = j * rows;
        let d0 = 0;
        let d1 = 0;
        let d2 = 0;
        let d3 = 0;
        for (let r = r0; r < r1; r++) {
          const v = c[co + r];
          d0 += c[c0 + r] * v;
          d1 += c[c1 + r] * v;
          d2 += c[c2 + r] * v;
          d3 += c[c3 + r] * v;
        }
        // Rows i..i+3 of column j (j ≥ i: entries with j < i+3 below the diagonal are set again below).
        g[j * n + i] += d0;
        g[j * n + i + 1] += d1;
        g[j * n + i + 2] += d2;
        g[j * n + i + 3] += d3;
      }
    }
    for (; i < n; i++)
      for (let j = i; j < n; j++) {
        const co = j * rows;
        const ci = i * rows;
        let d = 0;
        for (let r = r0; r < r1; r++) d += c[ci + r] * c[co + r];
        g[j * n + i] += d;
      }
  }
  // Column j holds the dots with columns ≤ j (and a few above, computed twice): mirror the upper part.
  for (let j = 0; j < n; j++) for (let i = j + 1; i < n; i++) g[j * n + i] = g[i * n + j];
  return g;
}
