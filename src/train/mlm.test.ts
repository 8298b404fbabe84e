import assert from "node:assert/strict";
import { test } from "node:test";
import { Rng } from "../util/rng.js";
import { IGNORE_INDEX, maskTokens } from "./mlm.js";

const MASK = 4;
const opts = { maskTokenId: MASK, vocabSize: 1000, specialIds: new Set([0, 1, 2]) };

function rows(n: number, len: number): number[][] {
  return Array.from({ length: n }, (_, r) => [0, ...Array.from({ length: len }, (_, t) => 10 + ((r * 31 + t * 7) % 900)), 2, 1, 1]);
}

test("15% of ordinary tokens are selected; 80/10/10 mask/random/kept; labels -100 elsewhere", () => {
  const input = rows(400, 200);
  const { inputIds, labels } = maskTokens(input, new Rng(7), opts);
  let ordinary = 0;
  let selected = 0;
  let masked = 0;
  let kept = 0;
  let random = 0;
  input.forEach((row, r) => {
    row.forEach((id, t) => {
      const lab = labels[r][t];
      if (opts.specialIds.has(id)) {
        assert.equal(lab, IGNORE_INDEX, "special tokens are never selected");
        assert.equal(inputIds[r][t], id);
        return;
      }
      ordinary++;
      if (lab === IGNORE_INDEX) {
        assert.equal(inputIds[r][t], id, "unselected tokens are unchanged");
        return;
      }
      selected++;
      assert.equal(lab, id, "the label is the original token");
      if (inputIds[r][t] === MASK) masked++;
      else if (inputIds[r][t] === id) kept++;
      else random++;
    });
  });
  // 80 000 ordinary tokens: binomial standard deviations are well under the tolerances below.
  assert.ok(Math.abs(selected / ordinary - 0.15) < 0.005, `selected ${selected / ordinary}`);
  assert.ok(Math.abs(masked / selected - 0.8) < 0.01, `masked ${masked / selected}`);
  assert.ok(Math.abs(random / selected - 0.1) < 0.01, `random ${random / selected}`);
  // A random draw can hit the original token (1 in 1000), which then counts as kept.
  assert.ok(Math.abs(kept / selected - 0.1) < 0.01, `kept ${kept / selected}`);
});

test("the same seed gives the same masking; another seed another", () => {
  const input = rows(8, 50);
  assert.deepEqual(maskTokens(input, new Rng(3), opts), maskTokens(input, new Rng(3), opts));
  assert.notDeepEqual(maskTokens(input, new Rng(3), opts).labels, maskTokens(input, new Rng(4), opts).labels);
});
