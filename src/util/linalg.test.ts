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
