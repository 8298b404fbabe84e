import assert from "node:assert/strict";
import { test } from "node:test";
import { matmul, matrix, transpose } from "../../util/linalg.js";
import { Rng } from "../../util/rng.js";
import { balancedFactor, elbowRank, energyRank, kpsvd, kronSum, rearrange, selectRank } from "./kron.js";

const rng = new Rng(7);
const rand = (n: number) => Float64Array.from({ length: n }, () => rng.next() * 2 - 1);
const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

test("U ⊗ V has entries U[i,j]·V[o,l] at row i·p + o, column j·q + l, and R(U ⊗ V) = vec(U)·vec(V)ᵀ", () => {
  const s = { m: 2, n: 3, p: 4, q: 5 };
  const u = rand(6);
  const v = rand(20);
  const k = kronSum([u], [v], s);
  assert.equal(k.rows, 8);
  assert.equal(k.cols, 15);
  for (let i = 0; i < 2; i++)
    for (let j = 0; j < 3; j++)
      for (let o = 0; o < 4; o++)
        for (let l = 0; l < 5; l++) assert.equal(k.data[(i * 4 + o) * 15 + j * 5 + l], u[i * 3 + j] * v[o * 5 + l]);
  const outer = matmul(matrix(6, 1, u), transpose(matrix(20, 1, v)));
  assert.ok(maxAbs(rearrange(k, s).data, outer.data) < 1e-15);
});

test("KPSVD of a sum of t Kronecker products gives it back: rank t, and t terms reconstruct it exactly", () => {
  for (const [s, t] of [
    [{ m: 3, n: 4, p: 5, q: 2 }, 3],
    [{ m: 4, n: 4, p: 8, q: 8 }, 5],
    [{ m: 1, n: 6, p: 7, q: 1 }, 1],
  ] as const) {
    const us = Array.from({ length: t }, () => rand(s.m * s.n));
    const vs = Array.from({ length: t }, () => rand(s.p * s.q));
    const mat = kronSum(us, vs, s);
    const d = kpsvd(mat, s);
    assert.ok(d.s[t - 1] > 1e-3, `σ_${t} = ${d.s[t - 1]}`);
    for (let k = t; k < d.s.length; k++) assert.ok(d.s[k] < 1e-12 * d.s[0], `σ_${k + 1} = ${d.s[k]} should vanish`);
    const back = kronSum(
      d.u.slice(0, t).map((u, k) => u.map((x) => x * d.s[k])),
      d.v.slice(0, t),
      s,
    );
    assert.ok(maxAbs(back.data, mat.data) < 1e-12, `reconstruction ${maxAbs(back.data, mat.data)}`);
    // The factors have unit norm, as singular vectors.
    for (let k = 0; k < t; k++) assert.ok(Math.abs(Math.hypot(...d.u[k]) - 1) < 1e-12 && Math.abs(Math.hypot(...d.v[k]) - 1) < 1e-12);
  }
});

test("rank selection: energy threshold, elbow, the fewer of the two, capped", () => {
  // Energies 16, 9, 1, 0.25 of 26.25: 0.6 → 1 term, 0.95 → 2, 0.99 → 3, 1 → 4.
  const s = [4, 3, 1, 0.5];
  assert.deepEqual(
    [0.6, 0.95, 0.99, 1].map((t) => energyRank(s, t)),
    [1, 2, 3, 4],
  );
  // A sharp drop after two values: the elbow keeps two.
  assert.equal(elbowRank([10, 9, 1, 0.9, 0.8, 0.7]), 2);
  // A straight line has no elbow: everything is kept.
  assert.equal(elbowRank([5, 4, 3, 2, 1]), 5);
  assert.equal(selectRank([10, 9, 1, 0.9, 0.8, 0.7], 0.999, 8), 2);
  assert.equal(selectRank([10, 9, 1, 0.9, 0.8, 0.7], 0.5, 8), 1);
  assert.equal(selectRank([10, 9, 8, 7, 6, 5], 1, 3), 3);
  assert.equal(energyRank([0, 0], 0.9), 2);
});

test("balanced factors: the divisor nearest √d from below", () => {
  assert.deepEqual([32, 64, 48, 7, 1, 768, 3072].map(balancedFactor), [4, 8, 6, 1, 1, 24, 48]);
});
