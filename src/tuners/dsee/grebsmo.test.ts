import assert from "node:assert/strict";
import { test } from "node:test";
import { matrix } from "../../linalg/matrix.js";
import { qr } from "../../linalg/qr.js";
import { Rng } from "../../util/rng.js";
import { grebsmo, orthonormalizeColumns } from "./grebsmo.js";
import { selectSupport, topPositions } from "./selection.js";

function gaussian(rows: number, cols: number, rng: Rng): Float64Array {
  return Float64Array.from({ length: rows * cols }, () => rng.normal());
}

test("Gram–Schmidt twice gives Householder's Q up to column signs (src/linalg qr), and fills dependent columns", () => {
  const rng = new Rng(5);
  const [m, k] = [40, 7];
  const a = matrix(m, k, gaussian(m, k, rng));
  const { q } = qr(a);
  const y = new Float64Array(m * k);
  for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) y[j * m + i] = a.data[i * k + j];
  assert.equal(orthonormalizeColumns(y, m, k, true), k);
  for (let j = 0; j < k; j++) {
    let d = 0;
    for (let i = 0; i < m; i++) d += y[j * m + i] * q.data[i * k + j];
    assert.ok(Math.abs(Math.abs(d) - 1) < 1e-12, `column ${j}: |q·q_householder| = ${Math.abs(d)}`);
  }
  // Column 2 = column 0 + column 1: dropped without fill, replaced by an orthogonal unit vector with it.
  const dep = new Float64Array(m * 3);
  for (let i = 0; i < m; i++) {
    dep[i] = rng.normal();
    dep[m + i] = rng.normal();
    dep[2 * m + i] = dep[i] + dep[m + i];
  }
  assert.equal(orthonormalizeColumns(Float64Array.from(dep), m, 3, false), 2);
  assert.equal(orthonormalizeColumns(dep, m, 3, true), 3);
  for (let p = 0; p < 3; p++)
    for (let c = 0; c < 3; c++) {
      let d = 0;
      for (let i = 0; i < m; i++) d += dep[p * m + i] * dep[c * m + i];
      assert.ok(Math.abs(d - (p === c ? 1 : 0)) < 1e-12, `(${p}, ${c})`);
    }
});

/** W = L (rank 2, entries O(1)) + P (a few entries of ±5 at distinct rows and columns). */
function planted(m: number, n: number, rng: Rng): { w: Float64Array; spikes: number[] } {
  const u = gaussian(m, 2, rng);
  const v = gaussian(2, n, rng);
  const w = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) w[i * n + j] = u[i * 2] * v[j] + u[i * 2 + 1] * v[n + j];
  const spikes = [
    [3, 7],
    [11, 2],
    [17, 25],
    [26, 14],
    [31, 0],
    [38, 19],
  ].map(([i, j]) => i * n + j);
  spikes.forEach((p, s) => {
    w[p] += s % 2 ? -5 : 5;
  });
  return { w, spikes: spikes.sort((a, b) => a - b) };
}

test("GreBsmo: on W = rank-2 + six planted entries of ±5, S is exactly the planted part and its support is found", () => {
  const [m, n] = [40, 30];
  const { w, spikes } = planted(m, n, new Rng(11));
  // The threshold sits between the low-rank fit's error and the spikes (the authors' 0.01 is for
  // BERT-scale weights); at rank 2 = rank(L) the alternation converges (linearly) to L and P.
  const opts = { rankStep: 1, outerIters: 2, innerIters: 30, threshold: 1, minSupport: 0 };
  const r = grebsmo(matrix(m, n, w), { ...opts, rng: new Rng(1) });
  assert.equal(r.rank, 2);
  const want = new Float64Array(m * n);
  const planted5 = [97, 332, 535, 794, 930, 1159];
  assert.deepEqual(spikes, planted5);
  // Signs as planted (in row order: +, −, +, −, +, −).
  spikes.forEach((p, s) => {
    want[p] = s % 2 ? -5 : 5;
  });
  let err = 0;
  for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(r.s[i] - want[i]));
  assert.ok(err < 1e-9, `max |S − P| = ${err}`);
  // Through DSEE's selection with the same options: exactly the planted support.
  const support = selectSupport(matrix(m, n, w), { method: "grebsmo", n: spikes.length, rng: new Rng(1), grebsmo: opts });
  assert.deepEqual([...support], spikes);
  // "omp" (largest |W|) misses some: the low-rank part has entries as large as the spikes.
  const omp = selectSupport(matrix(m, n, w), { method: "omp", n: spikes.length, rng: new Rng(1), grebsmo: opts });
  assert.notDeepEqual([...omp], spikes);
});

test("GreBsmo stops before the rank reaches min(out, in), and when S has fewer than N entries keeps the previous S", () => {
  const rng = new Rng(3);
  const [m, n] = [24, 18];
  const w = matrix(m, n, gaussian(m, n, rng));
  // rank 1, 6, 11, 16: the next (21) would pass min = 18.
  const full = grebsmo(w, { rankStep: 5, outerIters: 100, innerIters: 2, threshold: 0.01, minSupport: 0, rng: new Rng(2) });
  assert.equal(full.rank, 16);
  assert.equal(full.outer, 4);
  const nnz = (s: Float64Array) => s.reduce((c, x) => c + (x !== 0 ? 1 : 0), 0);
  // With a support of N required, the result always holds at least N nonzeros.
  for (const need of [50, 200, 400]) {
    const r = grebsmo(w, { rankStep: 5, outerIters: 100, innerIters: 2, threshold: 0.01, minSupport: need, rng: new Rng(2) });
    assert.ok(nnz(r.s) >= need, `N = ${need}: ${nnz(r.s)} nonzeros at rank ${r.rank}`);
    assert.ok(r.rank <= full.rank);
  }
});

test("topPositions: the N best by score, then the larger tiebreak, then the lower position (against a full sort)", () => {
  const rng = new Rng(9);
  for (const [len, n] of [
    [1, 1],
    [50, 7],
    [200, 200],
    [1000, 64],
  ]) {
    // Few distinct values, so ties are common; the tiebreak has ties too.
    const score = Float64Array.from({ length: len }, () => Math.floor(rng.next() * 5));
    const tb = Float64Array.from({ length: len }, () => Math.floor(rng.next() * 3));
    for (const tiebreak of [undefined, tb]) {
      const want = Array.from(score.keys())
        .sort((p, q) => score[q] - score[p] || (tiebreak ? tiebreak[q] - tiebreak[p] : 0) || p - q)
        .slice(0, n)
        .sort((p, q) => p - q);
      assert.deepEqual([...topPositions(score, n, tiebreak)], want, `${len} entries, ${n} kept, tiebreak ${Boolean(tiebreak)}`);
    }
  }
});
