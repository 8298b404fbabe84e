import assert from "node:assert/strict";
import { test } from "node:test";
import { LinalgError } from "./errors.js";
import { lu } from "./lu.js";
import { matmul, matrix } from "./matrix.js";
import { frob, fromGolden, type GoldenMatrix, golden, maxAbs, permuteRows, randn, sub, withSpectrum } from "./test-util.js";

/** Every property lu() promises, with P·A = L·U to tol·‖A‖. */
function checkLu(a: ReturnType<typeof matrix>, tol = 1e-14) {
  const { perm, l, u } = lu(a);
  const m = a.rows;
  const n = a.cols;
  const k = Math.min(m, n);
  assert.deepEqual([l.rows, l.cols, u.rows, u.cols], [m, k, k, n]);
  assert.deepEqual(
    Array.from(perm).sort((x, y) => x - y),
    Array.from({ length: m }, (_, i) => i),
    "perm is a permutation",
  );
  for (let i = 0; i < m; i++)
    for (let j = 0; j < k; j++) {
      const v = l.data[i * k + j];
      if (j > i) assert.equal(v, 0, `L(${i},${j}) above the diagonal`);
      else if (j === i) assert.equal(v, 1, `L(${i},${i}) unit diagonal`);
      else assert.ok(Math.abs(v) <= 1, `|L(${i},${j})| = ${Math.abs(v)} > 1: not partial pivoting`);
    }
  for (let i = 0; i < k; i++)
    for (let j = 0; j < Math.min(i, n); j++) assert.equal(u.data[i * n + j], 0, `U(${i},${j}) below the diagonal`);
  const err = frob(sub(permuteRows(a, perm), matmul(l, u)));
  assert.ok(err <= tol * (frob(a) || 1), `‖P·A − L·U‖ = ${err}`);
  return { perm, l, u };
}

for (const [r, c] of [
  [6, 6],
  [9, 4],
  [4, 9],
  [1, 5],
  [5, 1],
  [1, 1],
  [64, 172],
  [172, 64],
]) {
  test(`lu of a random ${r}x${c}: P·A = L·U, unit lower L with |L| ≤ 1, upper U`, () => {
    checkLu(randn(r, c, r * 100 + c));
  });
}

test("lu by hand: exact factors of a 2x2 that needs a row swap", () => {
  const { perm, l, u } = lu(matrix(2, 2, [2, 1, 4, 3]));
  assert.deepEqual(Array.from(perm), [1, 0]);
  assert.deepEqual(Array.from(l.data), [1, 0, 0.5, 1]);
  assert.deepEqual(Array.from(u.data), [4, 3, 0, -0.5]);
});

test("lu: P·A = L·U holds exactly when the arithmetic is exact (dyadic entries and pivots)", () => {
  const a = matrix(3, 4, [1, 2, 0, 4, 4, 0, 2, 8, 2, 1, 1, 0]);
  const { perm, l, u } = checkLu(a, 0);
  assert.deepEqual(Array.from(perm), [1, 0, 2]);
  assert.deepEqual(Array.from(permuteRows(a, perm).data), Array.from(matmul(l, u).data));
});

test("lu: ties pick the first row of largest magnitude (LAPACK's rule)", () => {
  const { perm } = lu(matrix(3, 3, [1, 5, 0, -3, 1, 1, 3, 2, 2]));
  assert.equal(perm[0], 1);
});

test("lu of rank-deficient matrices: the factorisation exists, U's diagonal has the zeros", () => {
  const a = withSpectrum(8, 8, [3, 2, 1], 5);
  const { u } = checkLu(a, 1e-14);
  const diag = Array.from({ length: 8 }, (_, i) => Math.abs(u.data[i * 8 + i]));
  assert.ok(diag.filter((d) => d < 1e-13).length === 5, `|diag U| = ${diag}`);
  const z = matrix(4, 3, [0, 1, 2, 0, 3, 4, 0, 5, 6, 0, 7, 9]);
  const f = checkLu(z, 1e-15);
  assert.equal(f.u.data[0], 0);
  assert.deepEqual(Array.from(f.l.data.filter((_, i) => i % 3 === 0)), [1, 0, 0, 0], "L's column 0 stays 0 below a zero pivot");
  checkLu(matrix(3, 5), 0);
});

test("lu matches torch.linalg.lu (LAPACK getrf) on the goldens: same pivots, same L and U", () => {
  const cases = golden<{ a: GoldenMatrix; perm: number[]; l: GoldenMatrix; u: GoldenMatrix; steps: number }>("lu");
  assert.ok(Object.keys(cases).length >= 6);
  for (const [name, c] of Object.entries(cases)) {
    const a = fromGolden(c.a);
    const { perm, l, u } = checkLu(a, 1e-14);
    // Past the rank of a the remaining pivots are chosen among round-off: only `steps` are determined.
    const s = c.steps;
    assert.deepEqual(Array.from(perm.subarray(0, s)), c.perm.slice(0, s), `${name}: pivots`);
    const gl = fromGolden(c.l);
    const gu = fromGolden(c.u);
    // Rows of L follow P·A, whose rows past `steps` may differ in order: match them by source row.
    for (let i = 0; i < l.rows; i++) {
      const g = c.perm.indexOf(perm[i]);
      for (let j = 0; j < s; j++) assert.ok(Math.abs(l.data[i * l.cols + j] - gl.data[g * l.cols + j]) < 1e-13, `${name}: L(${i},${j})`);
    }
    for (let i = 0; i < s; i++)
      for (let j = 0; j < u.cols; j++)
        assert.ok(Math.abs(u.data[i * u.cols + j] - gu.data[i * u.cols + j]) < 1e-13 * maxAbs(a), `${name}: U(${i},${j})`);
    if (s === Math.min(a.rows, a.cols)) assert.deepEqual(Array.from(perm), c.perm, `${name}: all pivots`);
  }
});

test("lu refuses non-finite input with a typed one-line error naming the entry", () => {
  const a = matrix(2, 2, [1, Number.NaN, 0, 1]);
  assert.throws(
    () => lu(a),
    (e: unknown) => e instanceof LinalgError && /^lu: a has a non-finite value NaN at \(0, 1\)$/.test(e.message),
  );
});
