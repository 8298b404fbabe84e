/**
 * Times peftkit's host linear algebra (src/util/linalg.ts) on the SmolLM2-135M layer shapes and,
 * optionally, the same operations in the npm package ml-matrix, with their accuracy.
 *
 *   npx tsc -p tsconfig.json
 *   node dist/scripts/bench-linalg.js [--reps 2] [--only svd,eig,lu,chol,inv,rsvd,jacobi] [--big]
 *       [--ml-matrix /tmp/mlm/node_modules/ml-matrix/matrix.js]
 *
 * ml-matrix is not a dependency: install it in a scratch folder (`cd /tmp/mlm && npm i ml-matrix`)
 * and pass its entry file. Times are CPU seconds of this process (process.cpuUsage; the best of
 * --reps runs), which other processes on a shared machine disturb less than wall time; wall seconds
 * are printed too. Errors are relative to ‖A‖ (Frobenius) or absolute for orthogonality (max |QᵀQ − I|).
 */
import { pathToFileURL } from "node:url";
import { jacobiEigen } from "../src/linalg/eigh.js";
import { cholesky, eighSym, inverse, lu, type Matrix, matmul, matrix, randomizedSvd, svd, transpose } from "../src/util/linalg.js";
import { Rng } from "../src/util/rng.js";

/** The part of ml-matrix's API this script uses (ml-matrix ships its own .d.ts; it is not installed here). */
interface MlMatrix {
  rows: number;
  columns: number;
  to1DArray(): number[];
}
interface MlModule {
  Matrix: { from1DArray(rows: number, cols: number, data: ArrayLike<number>): MlMatrix };
  SingularValueDecomposition: new (
    a: MlMatrix,
    o?: { autoTranspose?: boolean },
  ) => { leftSingularVectors: MlMatrix; rightSingularVectors: MlMatrix; diagonal: number[] };
  EigenvalueDecomposition: new (
    a: MlMatrix,
    o?: { assumeSymmetric?: boolean },
  ) => { realEigenvalues: number[]; eigenvectorMatrix: MlMatrix };
  LuDecomposition: new (
    a: MlMatrix,
  ) => { lowerTriangularMatrix: MlMatrix; upperTriangularMatrix: MlMatrix; pivotPermutationVector: number[] };
  CholeskyDecomposition: new (a: MlMatrix) => { lowerTriangularMatrix: MlMatrix; isPositiveDefinite(): boolean };
  inverse(a: MlMatrix): MlMatrix;
}

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const reps = Number(flag("--reps") ?? 2);
const only = new Set((flag("--only") ?? "svd,eig,lu,chol,inv,rsvd").split(","));
const big = args.includes("--big");
const mlPath = flag("--ml-matrix");
const ml: MlModule | undefined = mlPath ? ((await import(pathToFileURL(mlPath).href)) as MlModule) : undefined;

const rng = new Rng(2024);
const randn = (r: number, c: number) =>
  matrix(
    r,
    c,
    Array.from({ length: r * c }, () => rng.normal()),
  );
const toMl = (a: Matrix) => ml!.Matrix.from1DArray(a.rows, a.cols, a.data);
const fromMl = (a: MlMatrix) => matrix(a.rows, a.columns, a.to1DArray());
const frob = (a: Matrix) => Math.sqrt(a.data.reduce((s, x) => s + x * x, 0));
const diff = (a: Matrix, b: Matrix) => {
  if (a.rows !== b.rows || a.cols !== b.cols) return Number.NaN;
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += (a.data[i] - b.data[i]) ** 2;
  return Math.sqrt(s);
};
/**
 * ‖A − X·Y‖_F / ‖A‖_F with every entry summed by Neumaier's compensated summation. A plain float64 sum
 * in the order a factorisation used (e.g. a left-looking LU's dot products in k order, which is also
 * matmul's order) makes that factorisation look ~10× more accurate than it is; compensated sums remove
 * the dependence on the order.
 */
const residual = (a: Matrix, x: Matrix, y: Matrix) => {
  if (x.cols !== y.rows || x.rows !== a.rows || y.cols !== a.cols) return Number.NaN;
  const k = x.cols;
  const yt = transpose(y);
  let s2 = 0;
  for (let i = 0; i < a.rows; i++)
    for (let j = 0; j < a.cols; j++) {
      let s = -a.data[i * a.cols + j];
      let c = 0;
      for (let p = 0; p < k; p++) {
        const t = x.data[i * k + p] * yt.data[j * k + p];
        const u = s + t;
        c += Math.abs(s) >= Math.abs(t) ? s - u + t : t - u + s;
        s = u;
      }
      s2 += (s + c) ** 2;
    }
  return Math.sqrt(s2) / frob(a);
};
const ortho = (q: Matrix) => {
  const g = matmul(transpose(q), q);
  let m = 0;
  for (let i = 0; i < g.rows; i++) for (let j = 0; j < g.cols; j++) m = Math.max(m, Math.abs(g.data[i * g.cols + j] - (i === j ? 1 : 0)));
  return m;
};
const usvt = (u: Matrix, s: ArrayLike<number>, v: Matrix) => {
  const k = s.length;
  const us = matrix(u.rows, k);
  for (let i = 0; i < u.rows; i++) for (let j = 0; j < k; j++) us.data[i * k + j] = u.data[i * u.cols + j] * s[j];
  const vk = matrix(v.rows, k);
  for (let i = 0; i < v.rows; i++) for (let j = 0; j < k; j++) vk.data[i * k + j] = v.data[i * v.cols + j];
  return matmul(us, transpose(vk));
};
const permute = (a: Matrix, perm: ArrayLike<number>) => {
  const out = matrix(a.rows, a.cols);
  for (let i = 0; i < a.rows; i++) out.data.set(a.data.subarray(perm[i] * a.cols, (perm[i] + 1) * a.cols), i * a.cols);
  return out;
};

function time<T>(f: () => T): { cpu: number; wall: number; out: T } {
  let best = { cpu: Number.POSITIVE_INFINITY, wall: Number.POSITIVE_INFINITY };
  let out: T | undefined;
  for (let r = 0; r < reps; r++) {
    const c0 = process.cpuUsage();
    const w0 = performance.now();
    out = f();
    const c = process.cpuUsage(c0);
    const cpu = (c.user + c.system) / 1e6;
    const wall = (performance.now() - w0) / 1000;
    if (cpu < best.cpu) best = { cpu, wall };
  }
  return { ...best, out: out as T };
}

const rows: string[] = ["| operation | shape | implementation | CPU s | wall s | accuracy |", "| --- | --- | --- | --- | --- | --- |"];
const row = (op: string, shape: string, impl: string, t: { cpu: number; wall: number }, acc: string) => {
  rows.push(`| ${op} | ${shape} | ${impl} | ${t.cpu.toFixed(2)} | ${t.wall.toFixed(2)} | ${acc} |`);
  console.error(rows[rows.length - 1]);
};
const e = (x: number) => (Number.isNaN(x) ? "n/a" : x.toExponential(1));

const shapes: [number, number][] = [
  [576, 576],
  [576, 1536],
];
for (const [m, n] of shapes) {
  const a = randn(m, n);
  const na = frob(a);
  const shape = `${m}×${n}`;
  if (only.has("svd")) {
    const t = time(() => svd(a));
    const { u, s, v } = t.out;
    row("svd", shape, "peftkit", t, `‖A−USVᵀ‖/‖A‖ ${e(diff(usvt(u, s, v), a) / na)}, UᵀU ${e(ortho(u))}, VᵀV ${e(ortho(v))}`);
    if (ml) {
      const am = toMl(a);
      const tm = time(() => new ml!.SingularValueDecomposition(am, { autoTranspose: true }));
      const um = fromMl(tm.out.leftSingularVectors);
      const vm = fromMl(tm.out.rightSingularVectors);
      const sm = tm.out.diagonal;
      const ds = Math.max(...sm.slice(0, s.length).map((x, i) => Math.abs(x - s[i]))) / s[0];
      row(
        "svd",
        shape,
        "ml-matrix",
        tm,
        `‖A−USVᵀ‖/‖A‖ ${e(diff(usvt(um, sm, vm), a) / na)}, UᵀU ${e(ortho(um))}, VᵀV ${e(ortho(vm))}, max|σ−σ_peftkit|/σ₁ ${e(ds)}`,
      );
    }
  }
  if (only.has("rsvd")) {
    for (const r of [16, 64]) {
      const t = time(() => randomizedSvd(a, r));
      const { u, s, v } = t.out;
      row(
        `randomizedSvd r=${r} (niter 2, oversample 10)`,
        shape,
        "peftkit",
        t,
        `UᵀU ${e(ortho(u))}, VᵀV ${e(ortho(v))}, σ₁ ${s[0].toFixed(3)}`,
      );
    }
  }
  if (only.has("lu")) {
    const t = time(() => lu(a));
    const { perm, l, u } = t.out;
    row("lu", shape, "peftkit", t, `‖PA−LU‖/‖A‖ ${e(residual(permute(a, perm), l, u))}`);
    if (ml) {
      const am = toMl(a);
      const tm = time(() => {
        const d = new ml!.LuDecomposition(am);
        // The factors are built by getters: count them as part of the work, as ours returns them.
        return { l: fromMl(d.lowerTriangularMatrix), u: fromMl(d.upperTriangularMatrix), perm: d.pivotPermutationVector };
      });
      const { l: lm, u: um, perm: pm } = tm.out;
      const ok = lm.cols === um.rows;
      row(
        "lu",
        shape,
        "ml-matrix",
        tm,
        ok
          ? `‖PA−LU‖/‖A‖ ${e(residual(permute(a, pm), lm, um))}`
          : `L is ${lm.rows}×${lm.cols} and U ${um.rows}×${um.cols}: L·U undefined for a wide matrix`,
      );
    }
  }
}

// Symmetric positive definite inputs: a covariance XᵀX/N of N = 2·d samples, d = 576 (and 1536 with --big).
for (const d of big ? [576, 1536] : [576]) {
  const x = randn(2 * d, d);
  const c = matmul(transpose(x), x);
  for (let i = 0; i < c.data.length; i++) c.data[i] /= 2 * d;
  const nc = frob(c);
  const shape = `${d}×${d} covariance`;
  if (only.has("eig")) {
    const t = time(() => eighSym(c));
    const { values, vectors } = t.out;
    const resid = diff(matmul(c, vectors), usvt(vectors, values, matrix(d, d, eyeData(d)))) / nc;
    row("eighSym", shape, "peftkit", t, `‖CV−VΛ‖/‖C‖ ${e(resid)}, VᵀV ${e(ortho(vectors))}`);
    if (ml) {
      const cm = toMl(c);
      const tm = time(() => new ml!.EigenvalueDecomposition(cm, { assumeSymmetric: true }));
      const vm = fromMl(tm.out.eigenvectorMatrix);
      const lm = tm.out.realEigenvalues;
      const residm = diff(matmul(c, vm), usvt(vm, lm, matrix(d, d, eyeData(d)))) / nc;
      const sorted = [...lm].sort((p, q) => q - p);
      const dl = Math.max(...sorted.map((x, i) => Math.abs(x - values[i]))) / values[0];
      row("eighSym", shape, "ml-matrix", tm, `‖CV−VΛ‖/‖C‖ ${e(residm)}, VᵀV ${e(ortho(vm))}, max|λ−λ_peftkit|/λ₁ ${e(dl)}`);
    }
  }
  if (only.has("jacobi")) {
    // The alternative eighSym was measured against (kept only as its fallback): cyclic two-sided Jacobi.
    const t = time(() => jacobiEigen(Float64Array.from(c.data), d));
    const v = matrix(d, d, t.out.vectors);
    const vt = transpose(v); // jacobiEigen's vectors are column-major: rows of v are the eigenvectors.
    const resid = diff(matmul(c, vt), usvt(vt, t.out.values, matrix(d, d, eyeData(d)))) / nc;
    row("eighSym via cyclic Jacobi", shape, "peftkit (alternative)", t, `‖CV−VΛ‖/‖C‖ ${e(resid)}, VᵀV ${e(ortho(vt))}`);
  }
  if (only.has("chol")) {
    const t = time(() => cholesky(c));
    row("cholesky", shape, "peftkit", t, `‖C−LLᵀ‖/‖C‖ ${e(residual(c, t.out, transpose(t.out)))}`);
    if (ml) {
      const cm = toMl(c);
      const tm = time(() => fromMl(new ml!.CholeskyDecomposition(cm).lowerTriangularMatrix));
      row("cholesky", shape, "ml-matrix", tm, `‖C−LLᵀ‖/‖C‖ ${e(residual(c, tm.out, transpose(tm.out)))}`);
    }
  }
  if (only.has("inv")) {
    const eye = matrix(d, d, eyeData(d));
    const t = time(() => inverse(c));
    row("inverse", shape, "peftkit", t, `‖C·C⁻¹−I‖_F ${e(residual(eye, c, t.out) * Math.sqrt(d))}`);
    if (ml) {
      const cm = toMl(c);
      const tm = time(() => fromMl(ml!.inverse(cm)));
      row("inverse", shape, "ml-matrix", tm, `‖C·C⁻¹−I‖_F ${e(residual(eye, c, tm.out) * Math.sqrt(d))}`);
    }
  }
}

function eyeData(n: number): Float64Array {
  const d = new Float64Array(n * n);
  for (let i = 0; i < n; i++) d[i * n + i] = 1;
  return d;
}

console.log(rows.join("\n"));
