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
