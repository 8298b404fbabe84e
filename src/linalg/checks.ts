/** Input checks shared by the factorisations: each failure is one line naming the function and the problem. */
import { LinalgError } from "./errors.js";
import type { Matrix } from "./matrix.js";

export function assertFinite(fn: string, a: Matrix, name = "a"): void {
  const d = a.data;
  for (let i = 0; i < d.length; i++)
    if (!Number.isFinite(d[i]))
      throw new LinalgError(`${fn}: ${name} has a non-finite value ${d[i]} at (${Math.floor(i / a.cols)}, ${i % a.cols})`);
}

export function assertSquare(fn: string, a: Matrix, name = "a"): void {
  if (a.rows !== a.cols) throw new LinalgError(`${fn}: ${name} must be square, got ${a.rows}x${a.cols}`);
}

/**
 * A finite square a whose mirrored entries agree up to round-off (relative 1e-6 of its largest entry,
 * so covariances summed in float32 pass); returns n. Clearly asymmetric input is a caller's bug.
 */
export function assertSymmetric(fn: string, a: Matrix): number {
  assertSquare(fn, a);
  assertFinite(fn, a);
  const n = a.rows;
  const d = a.data;
  let scale = 0;
  for (let i = 0; i < d.length; i++) scale = Math.max(scale, Math.abs(d[i]));
  const tol = 1e-6 * scale;
  for (let i = 0; i < n; i++)
    for (let j = i + 1; j < n; j++)
      if (Math.abs(d[i * n + j] - d[j * n + i]) > tol)
        throw new LinalgError(`${fn}: a is not symmetric: a(${i}, ${j}) = ${d[i * n + j]} but a(${j}, ${i}) = ${d[j * n + i]}`);
  return n;
}
