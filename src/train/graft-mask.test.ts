/**
 * Grafting's mask arithmetic against closed forms: the base patch is the global top-k of |τ|
 * (a brute-force sort over all tensors), round(γ(S)) agrees with γ(S) > 0.5, the graft delta
 * holds τ at exactly the rounded-in entries, and the sparsity is checked naming the flag.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Rng } from "../util/rng.js";
import { basePatch, type GraftTensor, gammaOf, graftCount, graftDelta, inGraft, interpolate, updateScores } from "./graft-mask.js";

function tensor(name: string, shape: number[], rng: Rng): GraftTensor {
  const n = shape[0] * shape[1];
  return {
    name,
    shape,
    pre: Float32Array.from({ length: n }, () => rng.uniform(-1, 1)),
    tau: Float32Array.from({ length: n }, () => rng.normal() * 0.01),
  };
}

test("graft base patch: exactly the k largest |τ| over all tensors at once (one global threshold)", () => {
  const rng = new Rng(5);
  const ts = [tensor("a.weight", [7, 9], rng), tensor("b.weight", [3, 4], rng), tensor("c.weight", [11, 2], rng)];
  // Make one tensor hold most of the largest movements, so a per-tensor quota would differ.
  for (let i = 0; i < ts[1].tau.length; i++) ts[1].tau[i] *= 50;
  const all = ts.flatMap((t, ti) => Array.from(t.tau, (v, p) => ({ ti, p, m: Math.abs(v) })));
  for (const k of [1, 5, 12, 13, 40, all.length]) {
    const want = new Set(
      [...all]
        .sort((x, y) => y.m - x.m)
        .slice(0, k)
        .map((e) => `${e.ti}:${e.p}`),
    );
    const got = basePatch(ts, k);
    const kept = new Set<string>();
    got.forEach((m, ti) => {
      m.forEach((v, p) => {
        if (v) kept.add(`${ti}:${p}`);
      });
    });
    assert.equal(kept.size, k, `k=${k}: exactly k entries`);
    assert.deepEqual([...kept].sort(), [...want].sort(), `k=${k}: the global top-k`);
  }
  // Tensor b (scaled ×50) has 12 entries, all above every other: k=12 is exactly b.
  assert.deepEqual(
    basePatch(ts, 12).map((m) => m.reduce((a, v) => a + v, 0)),
    [0, 12, 0],
  );
});

test("graft base patch: ties at the threshold are taken in tensor then position order, still exactly k", () => {
  const t = (name: string, tau: number[]): GraftTensor => ({
    name,
    shape: [1, tau.length],
    pre: new Float32Array(tau.length),
    tau: Float32Array.from(tau),
  });
  const ts = [t("a", [0.1, 0.5, -0.5]), t("b", [0.5, 0.9, 0])];
  assert.deepEqual(
    basePatch(ts, 3).map((m) => [...m]),
    [
      [0, 1, 1],
      [0, 1, 0],
    ],
  );
});

test("graft mask: round(γ(S)) is γ > 0.5; interpolation and the delta use exactly those entries", () => {
  const b = 10;
  for (const g0 of [0, 1])
    for (const s of [-3, 0, 0.5, 9.99, 10, 10.01, 25]) {
      const gamma = gammaOf(g0, s, b);
      assert.equal(inGraft(g0, s, b), gamma > 0.5, `γ0=${g0} S=${s}: γ=${gamma}`);
    }
  // S ~ U(0,1) with b = 10: the rounded mask is the base patch itself.
  const rng = new Rng(1);
  const t = tensor("w", [5, 6], rng);
  const g0 = Uint8Array.from({ length: 30 }, (_, i) => (i % 4 === 0 ? 1 : 0));
  const s = Float32Array.from({ length: 30 }, () => rng.next());
  s[3] = 10.5; // γ0 = 0 but pushed over b: grafted
  s[8] = 12; // γ0 = 1 but pushed over b: dropped
  const rounded = interpolate(t, g0, s, b, true);
  const d = graftDelta(t, g0, s, b);
  const want = [...Array(30).keys()].filter((i) => (g0[i] === 1 && i !== 8) || i === 3);
  assert.deepEqual([...d.indices], want);
  assert.deepEqual(
    [...d.values],
    want.map((i) => t.tau[i]),
  );
  for (let i = 0; i < 30; i++) assert.equal(rounded[i], want.includes(i) ? Math.fround(t.pre[i] + t.tau[i]) : t.pre[i]);
  // The soft interpolation is θ_pre + γ⊙τ.
  const soft = interpolate(t, g0, s, b, false);
  for (let i = 0; i < 30; i++) assert.equal(soft[i], Math.fround(t.pre[i] + gammaOf(g0[i], s[i], b) * t.tau[i]));
});

test("graft mask update: S moves by −lr·(ḡ⊙τ)·dγ/dS, with dγ/dS = (1 − 2γ0)σ'(S − b) (finite differences of γ)", () => {
  const rng = new Rng(3);
  const n = 12;
  const g0 = Uint8Array.from({ length: n }, (_, i) => i % 2);
  const s = Float32Array.from({ length: n }, () => rng.uniform(-2, 2));
  const tau = Float32Array.from({ length: n }, () => rng.normal());
  const grad = Float64Array.from({ length: n }, () => rng.normal());
  const before = Float32Array.from(s);
  const lr = 0.3;
  const b = 0.5;
  updateScores(s, g0, grad, tau, lr, b);
  const h = 1e-6;
  for (let i = 0; i < n; i++) {
    const dgamma = (gammaOf(g0[i], before[i] + h, b) - gammaOf(g0[i], before[i] - h, b)) / (2 * h);
    const want = before[i] - lr * grad[i] * tau[i] * dgamma;
    assert.ok(Math.abs(s[i] - want) <= 1e-6 * Math.max(1, Math.abs(want)), `entry ${i}: ${s[i]} vs ${want}`);
  }
});

test("graft sparsity: outside (0, 1] or keeping no entry is refused naming the flag", () => {
  assert.equal(graftCount(0.01, 1000), 10);
  assert.equal(graftCount(1, 1000), 1000);
  assert.throws(() => graftCount(0, 1000), { message: "--sparsity: the sparsity must be in (0, 1], got 0" });
  assert.throws(() => graftCount(1.5, 1000), /--sparsity: the sparsity must be in \(0, 1\], got 1.5/);
  assert.throws(() => graftCount(1e-4, 1000), /--sparsity 0.0001 keeps no entry of the 1000 graftable ones/);
});
