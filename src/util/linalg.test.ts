import assert from "node:assert/strict";
import { test } from "node:test";
import { type Matrix, matmul, matrix, qr, svd, transpose } from "./linalg.js";

const rand = (r: number, c: number) =>
  matrix(
    r,
    c,
    Array.from({ length: r * c }, () => Math.random() * 2 - 1),
  );
const maxAbsDiff = (a: Matrix, b: Matrix) => Math.max(...Array.from(a.data, (v, i) => Math.abs(v - b.data[i])));
const eye = (n: number) =>
  matrix(
    n,
    n,
    Array.from({ length: n * n }, (_, i) => (i % (n + 1) === 0 ? 1 : 0)),
  );

for (const [r, c] of [
  [7, 4],
  [4, 7],
  [6, 6],
]) {
  test(`qr of ${r}x${c}: Q orthonormal, R upper triangular, QR = A`, () => {
    const a = rand(r, c);
    const { q, r: rr } = qr(a);
    assert.ok(maxAbsDiff(matmul(q, rr), a) < 1e-12);
    assert.ok(maxAbsDiff(matmul(transpose(q), q), eye(q.cols)) < 1e-12);
    for (let i = 0; i < rr.rows; i++) for (let j = 0; j < Math.min(i, rr.cols); j++) assert.equal(rr.data[i * rr.cols + j], 0);
  });

  test(`svd of ${r}x${c}: U S Vᵀ = A, orthonormal factors, sorted singular values`, () => {
    const a = rand(r, c);
    const { u, s, v } = svd(a);
    const k = s.length;
    const us = matrix(
      u.rows,
      k,
      Array.from(u.data, (x, i) => x * s[i % k]),
    );
    assert.ok(maxAbsDiff(matmul(us, transpose(v)), a) < 1e-10);
    assert.ok(maxAbsDiff(matmul(transpose(u), u), eye(k)) < 1e-10);
    assert.ok(maxAbsDiff(matmul(transpose(v), v), eye(k)) < 1e-10);
    for (let i = 1; i < k; i++) assert.ok(s[i - 1] >= s[i]);
  });
}

test("svd singular values of a known diagonal matrix", () => {
  const a = matrix(3, 3, [0, 0, 2, 0, 5, 0, 1, 0, 0]);
  assert.deepEqual(
    Array.from(svd(a).s).map((x) => Math.round(x * 1e9) / 1e9),
    [5, 2, 1],
  );
});

// Closed-form checks of svd() on matrices with a chosen spectrum: A = P·diag(σ)·Qᵀ with random
// orthonormal P, Q (from qr of seeded random matrices), so the exact singular values are σ.
const seeded = (seed: number) => () => {
  seed = (seed * 1664525 + 1013904223) >>> 0;
  return seed / 2 ** 32 - 0.5;
};
const randOrtho = (rows: number, cols: number, next: () => number) => qr(matrix(rows, cols, Array.from({ length: rows * cols }, next))).q;
const withSpectrum = (rows: number, cols: number, sigma: number[], seed: number): Matrix => {
  const next = seeded(seed);
  const k = sigma.length;
  const p = randOrtho(rows, k, next);
  const q = randOrtho(cols, k, next);
  const ps = matrix(
    rows,
    k,
    Array.from(p.data, (x, i) => x * sigma[i % k]),
  );
  return matmul(ps, transpose(q));
};
const frob = (d: ArrayLike<number>) => Math.sqrt(Array.from(d).reduce((s, x) => s + x * x, 0));
/** Checks every property svd() promises, to float64 round-off. */
const checkSvd = (a: Matrix, sigma?: number[]) => {
  const { u, s, v } = svd(a);
  const k = Math.min(a.rows, a.cols);
  assert.equal(s.length, k);
  assert.deepEqual([u.rows, u.cols, v.rows, v.cols], [a.rows, k, a.cols, k]);
  const us = matrix(
    u.rows,
    k,
    Array.from(u.data, (x, i) => x * s[i % k]),
  );
  const rec = matmul(us, transpose(v));
  const rel = frob(rec.data.map((x, i) => x - a.data[i])) / (frob(a.data) || 1);
  assert.ok(rel < 1e-12, `‖A − U S Vᵀ‖/‖A‖ = ${rel}`);
  assert.ok(maxAbsDiff(matmul(transpose(u), u), eye(k)) < 1e-12, "UᵀU = I");
  assert.ok(maxAbsDiff(matmul(transpose(v), v), eye(k)) < 1e-12, "VᵀV = I");
  for (let i = 1; i < k; i++) assert.ok(s[i - 1] >= s[i], `s sorted at ${i}`);
  for (let i = 0; i < k; i++) assert.ok(s[i] >= 0);
  if (sigma) {
    const want = [...sigma, ...Array(k - sigma.length).fill(0)].sort((x, y) => y - x);
    const scale = want[0] || 1;
    for (let i = 0; i < k; i++) assert.ok(Math.abs(s[i] - want[i]) < 1e-12 * scale, `σ${i}: ${s[i]} vs ${want[i]}`);
  }
};

for (const [rows, cols] of [
  [40, 12],
  [12, 40],
  [30, 30],
  [64, 172],
]) {
  const k = Math.min(rows, cols);
  test(`svd of ${rows}x${cols} with a known, widely spread spectrum (1 … 1e-9)`, () => {
    const sigma = Array.from({ length: k }, (_, i) => 10 ** (-9 * (i / (k - 1))));
    checkSvd(withSpectrum(rows, cols, sigma, rows * 1000 + cols), sigma);
  });
  test(`svd of ${rows}x${cols} of rank 5 (zero singular values, full orthonormal U and V)`, () => {
    const sigma = [7, 5, 3, 2, 0.5];
    checkSvd(withSpectrum(rows, cols, sigma, rows + cols), sigma);
  });
}

test("svd with repeated singular values", () => {
  const sigma = [4, 4, 4, 1, 1, 1, 1, 0.25];
  checkSvd(withSpectrum(20, 8, sigma, 7), sigma);
  checkSvd(withSpectrum(8, 20, sigma, 8), sigma);
});

test("svd of a zero matrix, a single row and a single column", () => {
  checkSvd(matrix(5, 3), [0, 0, 0]);
  checkSvd(matrix(1, 4, [3, 0, -4, 0]), [5]);
  checkSvd(matrix(4, 1, [0, 2, 0, 0]), [2]);
});

test("svd of a matrix with exactly zero rows and columns", () => {
  const a = matrix(6, 4);
  a.data[1 * 4 + 2] = 3;
  a.data[4 * 4 + 0] = -1;
  checkSvd(a, [3, 1]);
  checkSvd(transpose(a), [3, 1]);
});
