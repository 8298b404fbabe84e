import assert from "node:assert/strict";
import { test } from "node:test";
import { eighSym, jacobiEigen } from "./eigh.js";
import { LinalgError } from "./errors.js";
import { type Matrix, matmul, matrix, transpose } from "./matrix.js";
import { qr } from "./qr.js";
import { fromGolden, type GoldenMatrix, golden, maxAbs, orthoError, randn, sub } from "./test-util.js";

/** Q·diag(λ)·Qᵀ with a random orthogonal Q: a symmetric matrix with exactly the eigenvalues λ. */
function symWithSpectrum(values: number[], seed: number): Matrix {
  const n = values.length;
  const q = qr(randn(n, n, seed)).q;
  const ql = matrix(
    n,
    n,
    q.data.map((x, i) => x * values[i % n]),
  );
  const a = matmul(ql, transpose(q));
  // Exactly symmetric: average the round-off of the two triangles.
  for (let i = 0; i < n; i++)
    for (let j = i + 1; j < n; j++) {
      const m = 0.5 * (a.data[i * n + j] + a.data[j * n + i]);
      a.data[i * n + j] = m;
      a.data[j * n + i] = m;
    }
  return a;
}

/** Every property eighSym promises: A·V = V·Λ, VᵀV = I, values descending, sign rule. */
function checkEigh(a: Matrix, want?: number[], tol = 1e-12) {
  const { values, vectors } = eighSym(a);
  const n = a.rows;
  const scale = Math.max(maxAbs(a), 1e-300);
  const av = matmul(a, vectors);
  const vl = matrix(
    n,
    n,
    vectors.data.map((x, i) => x * values[i % n]),
  );
  assert.ok(maxAbs(sub(av, vl)) < tol * scale * n, `‖A·V − V·Λ‖ = ${maxAbs(sub(av, vl))}`);
  assert.ok(orthoError(vectors) < tol * n, `VᵀV − I = ${orthoError(vectors)}`);
  for (let i = 1; i < n; i++) assert.ok(values[i - 1] >= values[i], `values descending at ${i}`);
  for (let j = 0; j < n; j++) {
    let big = 0;
    for (let i = 1; i < n; i++) if (Math.abs(vectors.data[i * n + j]) > Math.abs(vectors.data[big * n + j])) big = i;
    assert.ok(vectors.data[big * n + j] > 0, `vector ${j}: largest entry positive`);
  }
  if (want) {
    const w = [...want].sort((x, y) => y - x);
    for (let i = 0; i < n; i++) assert.ok(Math.abs(values[i] - w[i]) < tol * scale * 10, `λ${i}: ${values[i]} vs ${w[i]}`);
  }
  return { values, vectors };
}

test("eighSym of a diagonal matrix: its entries sorted, unit vectors exactly", () => {
  const { values, vectors } = eighSym(matrix(3, 3, [2, 0, 0, 0, -1, 0, 0, 0, 7]));
  assert.deepEqual(Array.from(values), [7, 2, -1]);
  assert.deepEqual(Array.from(vectors.data), [0, 1, 0, 0, 0, 1, 1, 0, 0]);
});

test("eighSym of [[2, 1], [1, 2]]: 3 and 1 with (1, 1)/√2 and (1, −1)/√2", () => {
  const { values, vectors } = checkEigh(matrix(2, 2, [2, 1, 1, 2]), [3, 1]);
  assert.ok(Math.abs(values[0] - 3) < 1e-15 && Math.abs(values[1] - 1) < 1e-15);
  const r = Math.SQRT1_2;
  assert.ok(maxAbs(sub(vectors, matrix(2, 2, [r, r, r, -r]))) < 1e-15, `${vectors.data}`);
});

for (const n of [1, 2, 5, 30, 97]) {
  test(`eighSym of a random ${n}x${n} with a known spectrum (negative, repeated and zero eigenvalues)`, () => {
    const want = Array.from({ length: n }, (_, i) => (i % 7 === 3 ? 0 : i % 5 === 1 ? 2.5 : Math.sin(i + 1) * 10));
    checkEigh(symWithSpectrum(want, n), want);
  });
}

test("eighSym of a rank-deficient covariance XᵀX (6 samples, 20 features): 14 zero eigenvalues", () => {
  const x = randn(6, 20, 3);
  const { values } = checkEigh(matmul(transpose(x), x));
  for (let i = 6; i < 20; i++) assert.ok(Math.abs(values[i]) < 1e-13 * values[0], `λ${i} = ${values[i]}`);
  for (let i = 0; i < 6; i++) assert.ok(values[i] > 1e-3);
});

test("eighSym of a graded spectrum 1 … 1e-12: small eigenvalues to ε·‖A‖", () => {
  const want = Array.from({ length: 24 }, (_, i) => 10 ** (-12 * (i / 23)));
  checkEigh(symWithSpectrum(want, 11), want);
});

test("cyclic Jacobi (the fallback) agrees with tridiagonal QL", () => {
  const want = Array.from({ length: 25 }, (_, i) => (i - 12) / 3);
  const a = symWithSpectrum(want, 4);
  const j = jacobiEigen(Float64Array.from(a.data), 25);
  const got = Array.from(j.values).sort((x, y) => y - x);
  const ql = eighSym(a).values;
  for (let i = 0; i < 25; i++) assert.ok(Math.abs(got[i] - ql[i]) < 1e-13, `λ${i}: ${got[i]} vs ${ql[i]}`);
  const v = matrix(25, 25, j.vectors);
  assert.ok(orthoError(v) < 1e-13);
  // Column-major vectors: A·v_k = λ_k·v_k.
  for (let k = 0; k < 25; k++) {
    const col = matrix(25, 1, j.vectors.subarray(k * 25, k * 25 + 25));
    const av = matmul(a, col);
    for (let i = 0; i < 25; i++) assert.ok(Math.abs(av.data[i] - j.values[k] * col.data[i]) < 1e-13);
  }
});

test("eighSym matches torch.linalg.eigh on the goldens (values; vectors up to sign)", () => {
  const cases = golden<{ a: GoldenMatrix; values: number[]; vectors: GoldenMatrix }>("eigh");
  assert.ok(Object.keys(cases).length >= 3);
  for (const [name, c] of Object.entries(cases)) {
    const a = fromGolden(c.a);
    const { values, vectors } = checkEigh(a);
    const scale = maxAbs(a);
    c.values.forEach((w, i) => {
      assert.ok(Math.abs(values[i] - w) < 1e-12 * scale, `${name}: λ${i} ${values[i]} vs ${w}`);
    });
    // Distinct eigenvalues only (the rank-deficient case repeats 0): |v·v_golden| = 1.
    const g = fromGolden(c.vectors);
    const n = a.rows;
    for (let j = 0; j < n; j++) {
      const distinct = c.values.every((w, i) => i === j || Math.abs(w - c.values[j]) > 1e-6 * scale);
      if (!distinct) continue;
      let d = 0;
      for (let i = 0; i < n; i++) d += vectors.data[i * n + j] * g.data[i * n + j];
      assert.ok(Math.abs(Math.abs(d) - 1) < 1e-10, `${name}: vector ${j}, |v·v_torch| = ${Math.abs(d)}`);
    }
  }
});

test("eighSym refuses non-square, asymmetric and non-finite input with one line", () => {
  const err = (re: RegExp) => (e: unknown) => e instanceof LinalgError && re.test(e.message) && !e.message.includes("\n");
  assert.throws(() => eighSym(matrix(2, 3)), err(/^eighSym: a must be square, got 2x3$/));
  assert.throws(() => eighSym(matrix(2, 2, [1, 2, 3, 1])), err(/^eighSym: a is not symmetric: a\(0, 1\) = 2 but a\(1, 0\) = 3$/));
  assert.throws(() => eighSym(matrix(2, 2, [1, Number.POSITIVE_INFINITY, 0, 1])), err(/non-finite value Infinity at \(0, 1\)/));
  // Float32-sized asymmetry is round-off, not an error.
  eighSym(matrix(2, 2, [1, 0.5, 0.5 + 1e-8, 1]));
});
