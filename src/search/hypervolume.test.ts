import assert from "node:assert/strict";
import { test } from "node:test";
import { Rng } from "../util/rng.js";
import { expectedHvImprovement, hvImprovement, hypervolume, type Point2 } from "./hypervolume.js";

test("hypervolume of a known staircase", () => {
  // Steps of width 1, 1, 2 at heights 1, 2, 3 above the reference score 0: 1 + 2 + 6 = 9 (hand-computed).
  const pts: Point2[] = [
    { cost: 1, score: 1 },
    { cost: 2, score: 2 },
    { cost: 3, score: 3 },
    { cost: 2.5, score: 1.5 }, // dominated by (2, 2)
    { cost: 6, score: 9 }, // outside the reference box
  ];
  assert.equal(hypervolume(pts, { cost: 5, score: 0 }), 1 * 1 + 1 * 2 + 2 * 3);
  assert.equal(hypervolume([], { cost: 5, score: 0 }), 0);
  // A point below the reference score adds nothing; the reference score shifts every height.
  assert.equal(hypervolume(pts, { cost: 5, score: 1 }), 1 * 1 + 2 * 2);
});

test("hvImprovement is the hypervolume difference", () => {
  const front: Point2[] = [
    { cost: 1, score: 0.2 },
    { cost: 2, score: 0.5 },
    { cost: 3.5, score: 0.8 },
  ];
  const ref = { cost: 5, score: 0 };
  for (const [c, y] of [
    [0.5, 0.1],
    [1.5, 0.6],
    [2, 0.9],
    [4, 0.3],
    [3, 0.7],
  ])
    assert.ok(
      Math.abs(hvImprovement(front, c, y, ref) - (hypervolume([...front, { cost: c, score: y }], ref) - hypervolume(front, ref))) < 1e-12,
    );
});

test("closed-form 2-D EHVI matches Monte Carlo on a fixed front (1e-3)", () => {
  const front: Point2[] = [
    { cost: 3.2, score: 0.3 },
    { cost: 4, score: 0.45 },
    { cost: 4.7, score: 0.6 },
    { cost: 5.3, score: 0.62 },
  ];
  const ref = { cost: 6.5, score: 0 };
  const base = hypervolume(front, ref);
  const rng = new Rng(7);
  for (const [c, mu, sigma] of [
    [3.6, 0.5, 0.1],
    [4.5, 0.55, 0.2],
    [2.5, 0.1, 0.05],
    [5, 0.4, 0.3],
  ]) {
    const n = 400_000;
    let s = 0;
    for (let i = 0; i < n; i++) s += hypervolume([...front, { cost: c, score: mu + sigma * rng.normal() }], ref) - base;
    const mc = s / n;
    const cf = expectedHvImprovement(front, c, mu, sigma, ref);
    assert.ok(Math.abs(mc - cf) < 1e-3, `cost ${c} mu ${mu} sigma ${sigma}: closed form ${cf} vs Monte Carlo ${mc}`);
  }
  // sigma → 0: the improvement at the mean.
  assert.ok(Math.abs(expectedHvImprovement(front, 3.6, 0.5, 0, ref) - hvImprovement(front, 3.6, 0.5, ref)) < 1e-12);
});
