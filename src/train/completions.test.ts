/** Exact-match items: the completion is the last labelled span, the prompt all before it. */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Example } from "./data/index.js";
import { IGNORE_INDEX } from "./data/index.js";
import { completionItems } from "./run.js";

const X = IGNORE_INDEX;
const tok = { eosTokenId: 0, decode: (ids: readonly number[]) => ids.join(" ") };
const ex = (inputIds: number[], labels: number[]) => ({ inputIds, labels }) as unknown as Example;

test("prompt/completion: the labelled tail (eos dropped) after the prompt", () => {
  assert.deepEqual(completionItems([ex([5, 6, 7, 8, 0], [X, X, 7, 8, 0])], tok, 10), [{ prompt: [5, 6], completion: "7 8" }]);
});

test("multi-turn chat: only the final assistant turn is the completion", () => {
  // user 5 6 | assistant 7 | user 8 | assistant 9 10 | eos
  const items = completionItems([ex([5, 6, 7, 8, 9, 10, 0], [X, X, 7, X, 9, 10, 0])], tok, 10);
  assert.deepEqual(items, [{ prompt: [5, 6, 7, 8], completion: "9 10" }]);
});

test("no prompt or no labels: skipped; the limit holds", () => {
  assert.deepEqual(completionItems([ex([7, 8], [7, 8]), ex([5, 6], [X, X])], tok, 10), []);
  assert.equal(completionItems([ex([5, 7], [X, 7]), ex([5, 8], [X, 8])], tok, 1).length, 1);
});
