import assert from "node:assert/strict";
import { test } from "node:test";
import { cholesky, choleskySolve } from "./cholesky.js";
import { LinalgError, NotPositiveDefiniteError } from "./errors.js";
import { matmul, matrix, transpose } from "./matrix.js";
import { eye, fromGolden, type GoldenMatrix, golden, maxAbs, randn, sub } from "./test-util.js";

test("cholesky of the textbook 3x3: L exactly [[2,0,0],[6,1,0],[-8,5,3]]", () => {
  const l = cholesky(matrix(3, 3, [4, 12, -16, 12, 37, -43, -16, -43, 98]));
  assert.deepEqual(Array.from(l.data), [2, 0, 0, 6, 1, 0, -8, 5, 3]);
});

for (const n of [1, 4, 33, 120]) {
  test(`cholesky of a random ${n}x${n} SPD matrix: L·Lᵀ = A, L lower with a positive diagonal`, () => {
    const x = randn(n + 3, n, n);
    const a = matmul(transpose(x), x);
    const l = cholesky(a);
    assert.ok(maxAbs(sub(matmul(l, transpose(l)), a)) < 1e-13 * maxAbs(a), `${maxAbs(sub(matmul(l, transpose(l)), a))}`);
    for (let i = 0; i < n; i++) {
      assert.ok(l.data[i * n + i] > 0);
      for (let j = i + 1; j < n; j++) assert.equal(l.data[i * n + j], 0);
    }
  });
}

test("cholesky matches torch.linalg.cholesky on the goldens", () => {
  const cases = golden<{ a: GoldenMatrix; l: GoldenMatrix }>("cholesky");
  assert.ok(Object.keys(cases).length >= 2);
  for (const [name, c] of Object.entries(cases)) {
    const a = fromGolden(c.a);
    const d = maxAbs(sub(cholesky(a), fromGolden(c.l)));
    assert.ok(d < 1e-13 * Math.sqrt(maxAbs(a)), `${name}: L differs by ${d}`);
  }
});

test("cholesky names the pivot that is not positive (indefinite, semi-definite, negative)", () => {
  const err = (re: RegExp) => (e: unknown) => e instanceof NotPositiveDefiniteError && re.test(e.message) && !e.message.includes("\n");
  assert.throws(() => cholesky(matrix(2, 2, [1, 2, 2, 1])), err(/^cholesky: a is not positive definite: pivot 1 \(of 2\) is -3 /));
  assert.throws(() => cholesky(matrix(3, 3, [1, 1, 0, 1, 1, 0, 0, 0, 1])), err(/pivot 1 \(of 3\) is 0 /));
  assert.throws(() => cholesky(matrix(1, 1, [-4])), err(/pivot 0 \(of 1\) is -4 /));
  assert.throws(
    () => cholesky(matrix(2, 3)),
    (e: unknown) => e instanceof LinalgError && /must be square, got 2x3/.test(e.message),
  );
  assert.throws(
    () => cholesky(matrix(2, 2, [1, 0.5, -0.5, 1])),
    (e: unknown) => e instanceof LinalgError && /not symmetric/.test(e.message),
  );
  assert.deepEqual(Array.from(cholesky(eye(3)).data), Array.from(eye(3).data));
});

test("choleskySolve: L·Lᵀ·X = B for a random SPD matrix and several right-hand sides", () => {
  const g = randn(12, 12, 7);
  const a = matmul(g, transpose(g));
  for (let i = 0; i < 12; i++) a.data[i * 12 + i] += 1;
  const b = randn(12, 3, 8);
  const x = choleskySolve(cholesky(a), b);
  assert.ok(maxAbs(sub(matmul(a, x), b)) < 1e-12, `residual ${maxAbs(sub(matmul(a, x), b))}`);
});
