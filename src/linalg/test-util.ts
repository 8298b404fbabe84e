/** Helpers for the linear algebra tests: seeded matrices, norms, golden file access. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { GOLDEN_LINALG } from "../testing/paths.js";
import { Rng } from "../util/rng.js";
import { type Matrix, matmul, matrix, transpose } from "./matrix.js";
import { qr } from "./qr.js";

export function randn(rows: number, cols: number, seed: number): Matrix {
  const rng = new Rng(seed);
  return matrix(
    rows,
    cols,
    Array.from({ length: rows * cols }, () => rng.normal()),
  );
}

export function eye(n: number): Matrix {
  const m = matrix(n, n);
  for (let i = 0; i < n; i++) m.data[i * n + i] = 1;
  return m;
}

export function frob(a: Matrix): number {
  let s = 0;
  for (const x of a.data) s += x * x;
  return Math.sqrt(s);
}

export function sub(a: Matrix, b: Matrix): Matrix {
  return matrix(
    a.rows,
    a.cols,
    a.data.map((x, i) => x - b.data[i]),
  );
}

export function maxAbs(a: Matrix): number {
  let m = 0;
  for (const x of a.data) m = Math.max(m, Math.abs(x));
  return m;
}

/** max |AᵀA − I| for a matrix whose columns should be orthonormal. */
export function orthoError(a: Matrix): number {
  return maxAbs(sub(matmul(transpose(a), a), eye(a.cols)));
}

/** Rows of a in the given order: (P·A)[i] = a[perm[i]]. */
export function permuteRows(a: Matrix, perm: ArrayLike<number>): Matrix {
  const out = matrix(a.rows, a.cols);
  for (let i = 0; i < a.rows; i++) out.data.set(a.data.subarray(perm[i] * a.cols, (perm[i] + 1) * a.cols), i * a.cols);
  return out;
}

/** U·diag(s)·Vᵀ. */
export function usvt(u: Matrix, s: ArrayLike<number>, v: Matrix): Matrix {
  const k = s.length;
  const us = matrix(
    u.rows,
    k,
    Array.from(u.data, (x, i) => x * s[i % k]),
  );
  return matmul(us, transpose(v));
}

/** P·diag(σ)·Qᵀ with random orthonormal P (rows×k) and Q (cols×k): a matrix with exactly the singular values σ. */
export function withSpectrum(rows: number, cols: number, sigma: number[], seed: number): Matrix {
  const p = qr(randn(rows, sigma.length, seed)).q;
  const q = qr(randn(cols, sigma.length, seed + 1)).q;
  return usvt(p, sigma, q);
}

export interface GoldenMatrix {
  rows: number;
  cols: number;
  data: number[];
}

export const fromGolden = (g: GoldenMatrix): Matrix => matrix(g.rows, g.cols, g.data);

let cache: Record<string, unknown> | undefined;
/** One section of test/golden/linalg/linalg.json (written by scripts/goldens/make_linalg_goldens.py). */
export function golden<T>(section: string): Record<string, T> {
  cache ??= JSON.parse(readFileSync(join(GOLDEN_LINALG, "linalg.json"), "utf8")) as Record<string, unknown>;
  return cache[section] as Record<string, T>;
}
