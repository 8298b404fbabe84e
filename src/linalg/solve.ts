/** Linear systems and inverses through LU with partial pivoting. */
import { assertFinite, assertSquare } from "./checks.js";
import { LinalgError, SingularMatrixError } from "./errors.js";
import { luPacked, type PackedLu } from "./lu.js";
import { type Matrix, matrix } from "./matrix.js";

/**
 * X with A·X = B for a square a (n×n) and b (n×k), or x with A·x = b for a vector b (length n).
 * A pivot below n·ε times the largest entry of its column of A means A is singular to working
 * precision: that throws SingularMatrixError instead of returning digits that mean nothing.
 */
export function solve(a: Matrix, b: Matrix): Matrix;
export function solve(a: Matrix, b: Float64Array): Float64Array;
export function solve(a: Matrix, b: Matrix | Float64Array): Matrix | Float64Array {
  assertSquare("solve", a);
  const n = a.rows;
  const rhs = b instanceof Float64Array ? matrix(b.length, 1, b) : b;
  if (rhs.rows !== n) throw new LinalgError(`solve: b has ${rhs.rows} rows but a is ${n}x${n}`);
  assertFinite("solve", rhs, "b");
  const x = luSolve(factorNonsingular("solve", a), rhs);
  return b instanceof Float64Array ? x.data : x;
}

/** A⁻¹ of a square, nonsingular a (LU with partial pivoting, as torch.linalg.inv / LAPACK getri). */
export function inverse(a: Matrix): Matrix {
  assertSquare("inverse", a);
  return luInverse(factorNonsingular("inverse", a));
}

/** A + λ·mean(diag A)·I: the damping CorDA (and PEFT's corda.py) applies to a covariance before inverting it. */
export function damped(a: Matrix, lambda: number): Matrix {
  assertSquare("damped", a);
  if (!Number.isFinite(lambda) || lambda < 0) throw new LinalgError(`damped: lambda must be a finite number >= 0, got ${lambda}`);
  const n = a.rows;
  let mean = 0;
  for (let i = 0; i < n; i++) mean += a.data[i * n + i];
  mean /= n || 1;
  const out = matrix(n, n, a.data);
  for (let i = 0; i < n; i++) out.data[i * n + i] += lambda * mean;
  return out;
}

/** (A + λ·mean(diag A)·I)⁻¹, CorDA's damped inverse (catalog §1.5). */
export function dampedInverse(a: Matrix, lambda: number): Matrix {
  assertSquare("dampedInverse", a);
  if (!Number.isFinite(lambda) || lambda < 0) throw new LinalgError(`dampedInverse: lambda must be a finite number >= 0, got ${lambda}`);
  return luInverse(factorNonsingular("dampedInverse", damped(a, lambda)));
}

/** ‖A·X − I‖_F: how far X is from A's inverse (CorDA doubles λ until this is below 0.05, as torch.dist does). */
export function inverseResidual(a: Matrix, x: Matrix): number {
  assertSquare("inverseResidual", a);
  if (x.rows !== a.rows || x.cols !== a.cols)
    throw new LinalgError(`inverseResidual: x is ${x.rows}x${x.cols} but a is ${a.rows}x${a.cols}`);
  const n = a.rows;
  let s = 0;
  for (let i = 0; i < n; i++) {
    const row = new Float64Array(n);
    for (let k = 0; k < n; k++) {
      const v = a.data[i * n + k];
      if (v === 0) continue;
      for (let j = 0; j < n; j++) row[j] += v * x.data[k * n + j];
    }
    row[i] -= 1;
    for (let j = 0; j < n; j++) s += row[j] * row[j];
  }
  return Math.sqrt(s);
}

/**
 * LU of a, refusing a pivot that is zero or round-off: |u_jj| ≤ n·ε·max_i |a_ij|. Measured against its own
 * column of A (row pivoting never moves columns), so a regular but badly scaled matrix such as
 * diag(1e8, 1e-9) passes while a rank-deficient one, whose last pivots are cancellation noise, does not.
 */
function factorNonsingular(fn: string, a: Matrix): PackedLu {
  const f = luPacked(a, fn);
  const n = a.rows;
  const colMax = new Float64Array(n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      const v = Math.abs(a.data[i * n + j]);
      if (v > colMax[j]) colMax[j] = v;
    }
  for (let j = 0; j < n; j++) {
    const p = f.data[j * n + j];
    const tol = n * Number.EPSILON * colMax[j];
    if (Math.abs(p) <= tol)
      throw new SingularMatrixError(
        `${fn}: a is singular${p === 0 ? "" : " to working precision"}: pivot ${j} (of ${n}) is ${p}` +
          (p === 0 ? "" : `, not above n·ε·max|a(:, ${j})| = ${tol.toExponential(2)}`),
      );
  }
  return f;
}

/**
 * A⁻¹ = U⁻¹·L⁻¹·P from the packed LU: Y = L⁻¹ is unit lower triangular, so its forward substitution only
 * touches columns ≤ i of row i (n³/3 instead of n³ multiply-adds); then X = U⁻¹·Y by back substitution,
 * and column i of X is column perm[i] of A⁻¹. 2·n³ in all with the LU, against 8/3·n³ for solve(A, I).
 */
function luInverse(f: PackedLu): Matrix {
  const n = f.rows;
  const w = f.data;
  const y = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const io = i * n;
    y[io + i] = 1;
    for (let j = 0; j < i; j++) {
      const l = w[io + j];
      if (l === 0) continue;
      const jo = j * n;
      for (let c = 0; c <= j; c++) y[io + c] -= l * y[jo + c];
    }
  }
  for (let i = n - 1; i >= 0; i--) {
    const io = i * n;
    for (let j = i + 1; j < n; j++) {
      const u = w[io + j];
      if (u === 0) continue;
      const jo = j * n;
      for (let c = 0; c < n; c++) y[io + c] -= u * y[jo + c];
    }
    const d = w[io + i];
    for (let c = 0; c < n; c++) y[io + c] /= d;
  }
  const out = matrix(n, n);
  for (let r = 0; r < n; r++) {
    const ro = r * n;
    for (let c = 0; c < n; c++) out.data[ro + f.perm[c]] = y[ro + c];
  }
  return out;
}

/** X = A⁻¹·B from the packed LU of A: permute B's rows, then forward (unit L) and back (U) substitution on rows. */
function luSolve(f: PackedLu, b: Matrix): Matrix {
  const n = f.rows;
  const k = b.cols;
  const w = f.data;
  const x = matrix(n, k);
  for (let i = 0; i < n; i++) x.data.set(b.data.subarray(f.perm[i] * k, (f.perm[i] + 1) * k), i * k);
  const xd = x.data;
  for (let i = 1; i < n; i++) {
    const io = i * k;
    for (let j = 0; j < i; j++) {
      const l = w[i * n + j];
      if (l === 0) continue;
      const jo = j * k;
      for (let c = 0; c < k; c++) xd[io + c] -= l * xd[jo + c];
    }
  }
  for (let i = n - 1; i >= 0; i--) {
    const io = i * k;
    for (let j = i + 1; j < n; j++) {
      const u = w[i * n + j];
      if (u === 0) continue;
      const jo = j * k;
      for (let c = 0; c < k; c++) xd[io + c] -= u * xd[jo + c];
    }
    const d = w[i * n + i];
    for (let c = 0; c < k; c++) xd[io + c] /= d;
  }
  return x;
}
