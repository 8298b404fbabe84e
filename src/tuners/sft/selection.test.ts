import assert from "node:assert/strict";
import { test } from "node:test";
import { phaseOpensAfter, regrow, reselectionRate, reselectsAfter } from "./selection.js";

test("regrow: the smallest |values| leave, the largest |Σ gradient| candidates not already kept arrive", () => {
  const indices = Int32Array.from([3, 10, 20, 30]);
  const values = [0.5, -0.01, 0.2, 0.001];
  // r = 2: slots 3 (|0.001|) and 1 (|−0.01|) drop, positions 30 and 10. Those two are also the
  // candidates with the largest |Σ gradient|, so they come straight back: nothing moves.
  const g = regrow(indices, values, Int32Array.from([10, 30, 7, 40, 50]), [9, 8, -5, 0.1, 4], 0.5);
  assert.deepEqual([...g.slots], []);
  const h = regrow(indices, values, Int32Array.from([3, 7, 40, 50]), [100, -5, 0.1, 4], 0.5);
  // 3 is kept → not eligible; 7 (|−5|) and 50 (4) arrive into the dropped slots 3 and 1.
  assert.deepEqual([...h.slots], [3, 1]);
  assert.deepEqual([...h.positions], [7, 50]);
  assert.deepEqual([...h.fromCandidate], [1, 3]);
});

test("the authors' schedule: phases close after A, then R·j + A; the first replaces everything", () => {
  const R = 20;
  const A = 5;
  const closes = Array.from({ length: 70 }, (_, i) => i + 1).filter((s) => reselectsAfter(s, R, A));
  assert.deepEqual(closes, [5, 25, 45, 65]);
  const opens = Array.from({ length: 70 }, (_, i) => i + 1).filter((s) => phaseOpensAfter(s, R));
  assert.deepEqual(opens, [19, 39, 59]);
  assert.equal(reselectionRate(5, 5, 100, 0.2), 1);
  assert.ok(Math.abs(reselectionRate(25, 5, 100, 0.2) - 0.15) < 1e-12);
  assert.equal(reselectionRate(100, 5, 100, 0.2), 0);
  assert.ok(Math.abs(reselectionRate(5, 5, 100, 0.2, "cosine") - (0.2 * (1 + Math.cos(Math.PI * 0.05))) / 2) < 1e-12);
  assert.ok(Math.abs(reselectionRate(50, 5, 100, 0.2, "cosine") - 0.1) < 1e-12);
});
