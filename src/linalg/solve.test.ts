import assert from "node:assert/strict";
import { test } from "node:test";
import { LinalgError, SingularMatrixError } from "./errors.js";
import { type Matrix, matmul, matrix, transpose } from "./matrix.js";
import { damped, dampedInverse, inverse, inverseResidual, solve } from "./solve.js";
import { eye, fromGolden, type GoldenMatrix, golden, maxAbs, randn, sub, withSpectrum } from "./test-util.js";

const binom = (n: number, k: number) => {
  let r = 1;
  for (let i = 1; i <= k; i++) r = (r * (n - k + i)) / i;
  return Math.round(r);
};
const hilbert = (n: number) =>
  matrix(
    n,
    n,
    Array.from({ length: n * n }, (_, k) => 1 / (Math.floor(k / n) + (k % n) + 1)),
  );
/** The exact (integer) inverse of the n×n Hilbert matrix (1-based: (−1)^(i+j)(i+j−1)·C(n+i−1, n−j)·C(n+j−1, n−i)·C(i+j−2, i−1)²). */
const hilbertInverse = (n: number) =>
  matrix(
    n,
    n,
    Array.from({ length: n * n }, (_, k) => {
      const i = Math.floor(k / n) + 1;
      const j = (k % n) + 1;
      return (-1) ** (i + j) * (i + j - 1) * binom(n + i - 1, n - j) * binom(n + j - 1, n - i) * binom(i + j - 2, i - 1) ** 2;
    }),
  );

test("inverse of the 3x3 Hilbert matrix is the known integer matrix", () => {
  assert.deepEqual(Array.from(hilbertInverse(3).data), [9, -36, 30, -36, 192, -180, 30, -180, 180]);
});

for (const [n, cond] of [
  [4, 1.6e4],
  [6, 1.5e7],
  [8, 1.5e10],
  [10, 1.6e13],
]) {
  test(`inverse of the ${n}x${n} Hilbert matrix (condition ${cond}) to cond·ε relative`, () => {
    const want = hilbertInverse(n);
    const got = inverse(hilbert(n));
    const rel = maxAbs(sub(got, want)) / maxAbs(want);
    assert.ok(rel < cond * 1e-15, `relative error ${rel}`);
  });
}

test("solve: A·X = B for a random 40x40 and 3 right-hand sides, and for a vector", () => {
  const a = randn(40, 40, 1);
  const b = randn(40, 3, 2);
  const x = solve(a, b);
  // Backward stable: the residual is round-off relative to ‖A‖·‖X‖ (this draw has ‖X‖ ≈ 1.5e3).
  const r = maxAbs(sub(matmul(a, x), b));
  assert.ok(r < 1e-14 * maxAbs(a) * maxAbs(x), `residual ${r}`);
  const bv = Float64Array.from(b.data.filter((_, i) => i % 3 === 0));
  const xv = solve(a, bv);
  assert.ok(xv instanceof Float64Array && xv.length === 40);
  assert.deepEqual(Array.from(xv), Array.from(x.data.filter((_, i) => i % 3 === 0)));
});

test("solve needs the row swap: [[0, 1], [1, 0]]·x = (2, 3) gives x = (3, 2) exactly", () => {
  assert.deepEqual(Array.from(solve(matrix(2, 2, [0, 1, 1, 0]), Float64Array.of(2, 3))), [3, 2]);
});

test("inverse: A·A⁻¹ = I for random matrices; inverse and solve match torch.linalg on the goldens", () => {
  for (const n of [1, 7, 64]) {
    const a = randn(n, n, n);
    assert.ok(maxAbs(sub(matmul(a, inverse(a)), eye(n))) < 1e-11);
  }
  const c = golden<{ a: GoldenMatrix; inverse: GoldenMatrix; b: GoldenMatrix; solve: GoldenMatrix }>("inverse").random_6;
  const a = fromGolden(c.a);
  const inv = fromGolden(c.inverse);
  assert.ok(maxAbs(sub(inverse(a), inv)) < 1e-12 * maxAbs(inv));
  assert.ok(maxAbs(sub(solve(a, fromGolden(c.b)), fromGolden(c.solve))) < 1e-12 * maxAbs(fromGolden(c.solve)));
});

test("singular matrices: an exact zero pivot and a numerically singular one are refused, naming the pivot", () => {
  const err = (re: RegExp) => (e: unknown) => e instanceof SingularMatrixError && re.test(e.message) && !e.message.includes("\n");
  assert.throws(() => inverse(matrix(2, 2, [1, 2, 2, 4])), err(/^inverse: a is singular: pivot 1 \(of 2\) is 0$/));
  assert.throws(() => solve(matrix(3, 3), matrix(3, 1)), err(/^solve: a is singular: pivot 0 \(of 3\) is 0$/));
  const lowRank = withSpectrum(12, 12, [3, 2, 1, 0.5], 9);
  assert.throws(
    () => inverse(lowRank),
    err(/^inverse: a is singular to working precision: pivot \d+ \(of 12\) is .*, not above n·ε·max\|a\(:, \d+\)\| = /),
  );
});

test("a regular but badly scaled matrix is not called singular: the pivot test is relative to its column", () => {
  // diag(1e8, 1, …, 1e-9) has condition 1e17 but an exact inverse; scaled per column it is the identity.
  const n = 64;
  const a = eye(n);
  a.data[0] = 1e8;
  a.data[n * n - 1] = 1e-9;
  const inv = inverse(a);
  assert.equal(inv.data[0], 1 / 1e8);
  assert.equal(inv.data[n * n - 1], 1 / 1e-9);
  // A rank-deficient matrix with columns of the same scale is still refused.
  assert.throws(() => inverse(withSpectrum(n, n, [1e8, 1, 1e-3], 3)), SingularMatrixError);
});

test("shape errors name the function and the shapes", () => {
  const err = (re: RegExp) => (e: unknown) => e instanceof LinalgError && re.test(e.message);
  assert.throws(() => inverse(matrix(2, 3)), err(/^inverse: a must be square, got 2x3$/));
  assert.throws(() => solve(eye(3), matrix(2, 1)), err(/^solve: b has 2 rows but a is 3x3$/));
  assert.throws(() => solve(eye(2), matrix(2, 1, [1, Number.NaN])), err(/^solve: b has a non-finite value NaN at \(1, 0\)$/));
  assert.throws(() => dampedInverse(eye(2), -1), err(/^dampedInverse: lambda must be a finite number >= 0, got -1$/));
  assert.throws(() => matmul(eye(2), eye(3)), err(/^matmul: inner dimensions differ: 2x2 · 3x3$/));
  assert.throws(() => matrix(2, 2, [1, 2, 3]), err(/^matrix: 3 values do not fill a 2x2 matrix \(4\)$/));
});

test("dampedInverse by hand: diag(1, 2, 3), λ = 0.5 → (diag + 0.5·2·I)⁻¹ = diag(1/2, 1/3, 1/4)", () => {
  const a = matrix(3, 3, [1, 0, 0, 0, 2, 0, 0, 0, 3]);
  assert.deepEqual(Array.from(damped(a, 0.5).data), [2, 0, 0, 0, 3, 0, 0, 0, 4]);
  const inv = dampedInverse(a, 0.5);
  assert.ok(maxAbs(sub(inv, matrix(3, 3, [0.5, 0, 0, 0, 1 / 3, 0, 0, 0, 0.25]))) < 1e-16);
  assert.deepEqual(Array.from(dampedInverse(a, 0).data), Array.from(inverse(a).data));
});

test("dampedInverse of a rank-deficient covariance matches PEFT's CorDA formula (torch goldens)", () => {
  const cases = golden<{ a: GoldenMatrix; lambda: number; inverse: GoldenMatrix; residual: number }>("damped_inverse");
  assert.ok(Object.keys(cases).length >= 2);
  for (const [name, c] of Object.entries(cases)) {
    const a = fromGolden(c.a);
    assert.throws(() => inverse(a), SingularMatrixError, `${name}: undamped is singular`);
    const want = fromGolden(c.inverse);
    const got = dampedInverse(a, c.lambda);
    // The damped matrix has condition ~1/λ·(max/mean eigenvalue); allow that times ε.
    assert.ok(maxAbs(sub(got, want)) < 1e-11 * maxAbs(want), `${name}: differs by ${maxAbs(sub(got, want))}`);
    const r = inverseResidual(damped(a, c.lambda), got);
    assert.ok(r < 1e-12 && c.residual < 1e-12, `${name}: residual ${r} (torch ${c.residual})`);
  }
});

test("inverseResidual is ‖A·X − I‖_F", () => {
  const a: Matrix = matrix(2, 2, [2, 0, 0, 4]);
  assert.equal(inverseResidual(a, matrix(2, 2, [0.5, 0, 0, 0.25])), 0);
  assert.equal(inverseResidual(a, matrix(2, 2, [0.5, 0, 0, 0])), 1);
  assert.ok(maxAbs(sub(transpose(a), a)) === 0);
});
