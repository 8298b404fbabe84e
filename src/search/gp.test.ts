import assert from "node:assert/strict";
import { test } from "node:test";
import { fitHyper, GaussianProcess, type GpHyper, matern52, negLogLikelihood } from "./gp.js";

/** The inverse of a 3×3 matrix by cofactors (independent of the Cholesky path). */
function inverse3(a: number[][]): number[][] {
  const [[a0, a1, a2], [b0, b1, b2], [c0, c1, c2]] = a;
  const det = a0 * (b1 * c2 - b2 * c1) - a1 * (b0 * c2 - b2 * c0) + a2 * (b0 * c1 - b1 * c0);
  const cof = [
    [b1 * c2 - b2 * c1, -(a1 * c2 - a2 * c1), a1 * b2 - a2 * b1],
    [-(b0 * c2 - b2 * c0), a0 * c2 - a2 * c0, -(a0 * b2 - a2 * b0)],
    [b0 * c1 - b1 * c0, -(a0 * c1 - a1 * c0), a0 * b1 - a1 * b0],
  ];
  return cof.map((r) => r.map((v) => v / det));
}

test("GP posterior on 3 points matches the hand-computed float64 result", () => {
  // 2-D inputs, ARD lengthscales (0.5, 2), s² = 1.5, noise 0.01; y not standardised.
  const xs = [
    [0, 0],
    [0.5, 1],
    [1, 0.25],
  ];
  const y = [1, 2, 0];
  const h: GpHyper = { lengthscales: [0.5, 2], signalVar: 1.5, noiseVar: 0.01 };
  const k = (a: number[], b: number[]) => {
    const r = Math.hypot((a[0] - b[0]) / 0.5, (a[1] - b[1]) / 2);
    return 1.5 * (1 + Math.sqrt(5) * r + (5 / 3) * r * r) * Math.exp(-Math.sqrt(5) * r);
  };
  const K = xs.map((a, i) => xs.map((b, j) => k(a, b) + (i === j ? 0.01 + 1e-8 : 0)));
  const Ki = inverse3(K);
  const gp = new GaussianProcess(
    xs.map((p) => Float64Array.from(p)),
    y,
    h,
    false,
  );
  for (const p of [
    [0.25, 0.5],
    [0.9, 0.1],
    [0, 0],
  ]) {
    const ks = xs.map((a) => k(a, p));
    const w = Ki.map((row) => row.reduce((s, v, j) => s + v * ks[j], 0));
    const mean = w.reduce((s, v, i) => s + v * y[i], 0);
    const variance = 1.5 - w.reduce((s, v, i) => s + v * ks[i], 0);
    const got = gp.predict(Float64Array.from(p));
    assert.ok(Math.abs(got.mean - mean) < 1e-12, `mean at ${p}: ${got.mean} vs ${mean}`);
    assert.ok(Math.abs(got.std - Math.sqrt(variance)) < 1e-12, `std at ${p}: ${got.std} vs ${Math.sqrt(variance)}`);
  }
  assert.equal(matern52(0), 1);
});

test("the marginal-likelihood gradient matches central finite differences", () => {
  const xs = [
    [0, 0.1],
    [0.4, 0.9],
    [1, 0.3],
    [0.7, 0.6],
  ].map((p) => Float64Array.from(p));
  const z = [0.3, -1.2, 0.8, 0.1];
  const theta = Float64Array.from([Math.log(0.6), Math.log(1.4), Math.log(1.2), Math.log(0.05)]);
  const { grad } = negLogLikelihood(xs, z, theta);
  for (let i = 0; i < theta.length; i++) {
    const e = 1e-6;
    const up = Float64Array.from(theta);
    up[i] += e;
    const dn = Float64Array.from(theta);
    dn[i] -= e;
    const fd = (negLogLikelihood(xs, z, up).value - negLogLikelihood(xs, z, dn).value) / (2 * e);
    assert.ok(Math.abs(fd - grad[i]) < 1e-6 * Math.max(1, Math.abs(fd)), `θ${i}: analytic ${grad[i]} vs finite difference ${fd}`);
  }
});

test("fitting by marginal likelihood gives the irrelevant input the longer lengthscale", () => {
  const xs = Array.from({ length: 8 }, (_, i) => Float64Array.from([i / 7, ((i * 3) % 8) / 7]));
  const y = xs.map((x) => Math.sin(4 * x[0]) + 0.1 * x[1]);
  const h = fitHyper(xs, y);
  // The irrelevant second input gets the longer lengthscale.
  assert.ok(h.lengthscales[1] > h.lengthscales[0], JSON.stringify(h));
});
