import assert from "node:assert/strict";
import { test } from "node:test";
import { binomial, layerCount, scoreUpdate, weightedDraw } from "./sampling.js";

test("IST layer counts: round(f·L), at least 1 (8 and 16 of 32 as the authors' int(f·L))", () => {
  assert.deepEqual(
    [
      layerCount(0.25, 32),
      layerCount(0.5, 32),
      layerCount(0.25, 4),
      layerCount(0.5, 4),
      layerCount(0.25, 2),
      layerCount(0.25, 30),
      layerCount(1, 3),
    ],
    [8, 16, 1, 2, 1, 8, 3],
  );
  assert.deepEqual([binomial(4, 2), binomial(32, 16), binomial(2, 1)], [6, 601080390, 2]);
});

test("IST draws without replacement: each set's frequency over a grid of uniforms = Σ over orders of Π w_i / (remaining weight)", () => {
  const w = [0.1, 0.5, 0.15, 0.25, 0.4];
  const total = w.reduce((x, y) => x + y, 0);
  // Exact probability of the unordered pair {i, j}: first i then j, or first j then i.
  const exact = (i: number, j: number) => (w[i] / total) * (w[j] / (total - w[i])) + (w[j] / total) * (w[i] / (total - w[j]));
  // Each draw inverts the CDF of the remaining weights, so midpoints of an M×M grid of (u1, u2)
  // integrate the distribution; the error is at most (boundaries crossed)/M per set.
  const M = 800;
  const counts = new Map<string, number>();
  for (let a = 0; a < M; a++)
    for (let b = 0; b < M; b++) {
      const u = [(a + 0.5) / M, (b + 0.5) / M];
      let n = 0;
      const set = weightedDraw(w, 2, () => u[n++]).join(",");
      counts.set(set, (counts.get(set) ?? 0) + 1);
    }
  let sum = 0;
  for (let i = 0; i < w.length; i++)
    for (let j = i + 1; j < w.length; j++) {
      const got = (counts.get(`${i},${j}`) ?? 0) / (M * M);
      sum += exact(i, j);
      assert.ok(Math.abs(got - exact(i, j)) < 6 / M, `{${i}, ${j}}: grid ${got}, exact ${exact(i, j)}`);
    }
  assert.ok(Math.abs(sum - 1) < 1e-12);
  assert.equal(
    [...counts.keys()].every((k) => k.split(",").length === 2 && k.split(",")[0] < k.split(",")[1]),
    true,
  );
  // Zero weights are never drawn while others remain.
  for (let t = 0; t < 50; t++) assert.deepEqual(weightedDraw([0, 1, 0, 2], 2, Math.random), [1, 3]);
});

test("IST score update: s_i += (r_k − mean r)·σ(s_i)(1 − σ(s_i))·lr over the trials that suppressed i, r = exp(−loss), σ before the update", () => {
  const got = scoreUpdate(
    [0, 1, -1, 0.5],
    [
      [0, 1],
      [1, 2],
      [2, 3],
    ],
    [1, 2, 0.5],
    10,
  );
  // By hand (float64): r = (e^-1, e^-2, e^-0.5), mean 0.369915…; σ(s)(1−σ(s)) = (0.25, 0.196612, 0.196612, 0.235004).
  const want = [-0.005089217171967836, 0.5347856288292758, -0.9959975966925344, 1.0560552830756889];
  for (const [i, v] of got.entries()) assert.ok(Math.abs(v - want[i]) < 1e-12, `s_${i}: ${v} vs ${want[i]}`);
  // A layer no trial suppressed keeps its score.
  assert.deepEqual(scoreUpdate([0.3, 0.7], [[0], [0]], [1, 2], 10)[1], 0.7);
});
