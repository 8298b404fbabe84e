import assert from "node:assert/strict";
import { test } from "node:test";
import { Rng } from "../util/rng.js";
import { LinalgError } from "./errors.js";
import { matrix } from "./matrix.js";
import { randomizedSvd } from "./randomized-svd.js";
import { svd } from "./svd.js";
import { frob, fromGolden, type GoldenMatrix, golden, orthoError, randn, sub, usvt, withSpectrum } from "./test-util.js";

test("randomizedSvd is exact (to round-off) when rank(A) ≤ q, tall and wide", () => {
  const sigma = [9, 4, 2, 0.5, 0.1];
  for (const [m, n] of [
    [80, 50],
    [50, 80],
  ]) {
    const a = withSpectrum(m, n, sigma, m);
    // q = rank + oversample = 3 + 2 = 5 = rank(A): the basis spans range(A) exactly.
    const { u, s, v } = randomizedSvd(a, 3, { oversample: 2, rng: new Rng(1) });
    assert.deepEqual([u.rows, u.cols, v.rows, v.cols, s.length], [m, 3, n, 3, 3]);
    s.forEach((x, i) => {
      assert.ok(Math.abs(x - sigma[i]) < 1e-12 * sigma[0], `σ${i} ${x}`);
    });
    assert.ok(orthoError(u) < 1e-13 && orthoError(v) < 1e-13);
    const full = randomizedSvd(a, 5, { oversample: 0 });
    assert.ok(frob(sub(usvt(full.u, full.s, full.v), a)) < 1e-12 * frob(a), "rank-5 reconstruction");
  }
});

test("randomizedSvd with a decaying spectrum: the top values within Halko et al.'s bound, and power iterations help", () => {
  // σ_i = 0.8^i on 120x90: rank 10, q = 20 → σ_21/σ_10 = 0.8^11 ≈ 0.086.
  const sigma = Array.from({ length: 90 }, (_, i) => 0.8 ** i);
  const a = withSpectrum(120, 90, sigma, 3);
  const err = (niter: number) => {
    const { s } = randomizedSvd(a, 10, { niter, rng: new Rng(7) });
    return Math.max(...Array.from(s, (x, i) => Math.abs(x - sigma[i]) / sigma[i]));
  };
  const e0 = err(0);
  const e2 = err(2);
  const e4 = err(4);
  assert.ok(e2 < 1e-6, `niter 2: relative error ${e2}`);
  assert.ok(e4 < 1e-12, `niter 4: relative error ${e4}`);
  assert.ok(e0 > e2 && e2 > e4, `errors ${e0} > ${e2} > ${e4}`);
  // The rank-10 approximation is close to the optimal one (error σ_11 in the spectral norm; ≤ in Frobenius).
  const { u, s, v } = randomizedSvd(a, 10, { rng: new Rng(7) });
  const best = Math.sqrt(sigma.slice(10).reduce((t, x) => t + x * x, 0));
  assert.ok(frob(sub(usvt(u, s, v), a)) < best * (1 + 1e-3));
});

test("randomizedSvd with many power iterations stays accurate: QR re-orthonormalises every product", () => {
  // (A·Aᵀ)^8 spreads σ_1/σ_10 = 2^9 to 2^153: without QR between products the lower directions are lost.
  const sigma = Array.from({ length: 40 }, (_, i) => 0.5 ** i);
  const a = withSpectrum(60, 40, sigma, 2);
  const { s, u, v } = randomizedSvd(a, 10, { niter: 8, oversample: 5 });
  s.forEach((x, i) => {
    assert.ok(Math.abs(x - sigma[i]) < 1e-12, `σ${i}: ${x} vs ${sigma[i]}`);
  });
  assert.ok(orthoError(u) < 1e-13 && orthoError(v) < 1e-13);
});

test("randomizedSvd on a random matrix agrees with the exact svd on well-separated top values", () => {
  const a = randn(60, 40, 5);
  const exact = svd(a).s;
  const { s } = randomizedSvd(a, 4, { niter: 6, oversample: 20 });
  s.forEach((x, i) => {
    assert.ok(Math.abs(x - exact[i]) < 1e-3 * exact[i], `σ${i}: ${x} vs ${exact[i]}`);
  });
});

test("randomizedSvd is deterministic for a seed and uses the default seed when none is given", () => {
  const a = randn(30, 20, 8);
  const x = randomizedSvd(a, 4, { rng: new Rng(3) });
  const y = randomizedSvd(a, 4, { rng: new Rng(3) });
  assert.deepEqual(Array.from(x.u.data), Array.from(y.u.data));
  assert.deepEqual(Array.from(randomizedSvd(a, 4).s), Array.from(randomizedSvd(a, 4, { rng: new Rng(0) }).s));
});

test("randomizedSvd matches torch.svd_lowrank and torch.linalg.svd on an exactly rank-4 golden", () => {
  const c = golden<{ a: GoldenMatrix; s: number[]; s_lowrank_q6: number[] }>("randomized_svd").rank4_30x20;
  const a = fromGolden(c.a);
  const { s } = randomizedSvd(a, 6, { oversample: 0 });
  for (let i = 0; i < 4; i++) {
    assert.ok(Math.abs(s[i] - c.s[i]) < 1e-12 * c.s[0], `σ${i}: ${s[i]} vs ${c.s[i]}`);
    assert.ok(Math.abs(s[i] - c.s_lowrank_q6[i]) < 1e-12 * c.s[0]);
  }
  for (let i = 4; i < 6; i++) assert.ok(s[i] < 1e-12 * c.s[0]);
});

test("randomizedSvd refuses a rank out of range and bad options with one line", () => {
  const a = matrix(4, 6);
  const err = (re: RegExp) => (e: unknown) => e instanceof LinalgError && re.test(e.message);
  assert.throws(() => randomizedSvd(a, 5), err(/^randomizedSvd: rank must be an integer in 1\.\.4 \(min of 4x6\), got 5$/));
  assert.throws(() => randomizedSvd(a, 0), err(/got 0$/));
  assert.throws(() => randomizedSvd(a, 2, { niter: -1 }), err(/^randomizedSvd: niter must be an integer >= 0, got -1$/));
  assert.throws(() => randomizedSvd(a, 2, { oversample: 1.5 }), err(/^randomizedSvd: oversample must be an integer >= 0, got 1.5$/));
  assert.deepEqual(Array.from(randomizedSvd(a, 2).s), [0, 0], "a zero matrix has zero singular values");
});
