import assert from "node:assert/strict";
import { test } from "node:test";
import { CATEGORIES, categoryOf, categoryPair, demoTask, exactMatch, KIND_OF } from "./demo-task.js";
import { isHeldOut } from "./split.js";
import { WordNet } from "./wordnet.js";

const wn = WordNet.load({ files: ["noun"] });
const noun = (offset: number) => wn.get("noun", offset)!;

test("categories come from the hypernym closure, nearest first", () => {
  assert.equal(categoryOf(wn, noun(2115987)), "animal"); // poodle → dog → … → animal
  assert.equal(categoryOf(wn, noun(2086723)), "animal"); // dog
  assert.equal(categoryOf(wn, noun(10974490)), "person"); // Einstein, through an instance hypernym
  assert.equal(categoryOf(wn, noun(14146526)), "disease"); // measles
  assert.equal(categoryOf(wn, noun(2837983)), "vehicle"); // bicycle: vehicle is nearer than device
  assert.equal(categoryOf(wn, noun(4691171)), null); // beauty: an attribute, no category
  assert.equal(categoryOf(wn, noun(15568)), null); // animal itself
  for (const c of CATEGORIES) assert.ok(noun(c.offset).lemmas.includes(c.label) || c.label === "act", c.label);
  const p = categoryPair(wn, noun(2115987), 200)!;
  assert.equal(p.completion, " animal");
  assert.equal(p.prompt, `poodle: ${noun(2115987).definition}\npoodle ${KIND_OF}`);
});

test("train pairs come from training synsets, eval pairs from held-out ones; balanced; deterministic", () => {
  const task = demoTask({ wordnet: wn, maxEval: 300 });
  assert.equal(task.eval.length, 300);
  assert.ok(task.train.length > 10000, `train ${task.train.length}`);
  const heldOutPrompts = new Set<string>();
  const trainPrompts = new Set<string>();
  for (const s of wn.synsets) {
    const p = categoryPair(wn, s);
    if (p) (isHeldOut(s.file, s.offset) ? heldOutPrompts : trainPrompts).add(p.prompt);
  }
  for (const p of task.eval) assert.ok(heldOutPrompts.has(p.prompt) && !trainPrompts.has(p.prompt), p.prompt);
  for (const p of task.train) assert.ok(trainPrompts.has(p.prompt), p.prompt);
  // Every category is equally represented in the first rounds, so a constant guess scores ~1/12.
  const counts = new Map<string, number>();
  for (const p of task.eval) counts.set(p.completion, (counts.get(p.completion) ?? 0) + 1);
  assert.equal(counts.size, CATEGORIES.length);
  for (const n of counts.values()) assert.equal(n, 25);
  const again = demoTask({ wordnet: wn, maxTrain: 50, maxEval: 10 });
  assert.deepEqual(again.train, task.train.slice(0, 50));
  assert.deepEqual(again.eval, task.eval.slice(0, 10));
});

test("exact match cuts at a newline or the end-of-text token", () => {
  assert.ok(exactMatch(" dog", " dog"));
  assert.ok(exactMatch(" dog\npoodle: …", " dog"));
  assert.ok(exactMatch(" dog<|endoftext|>", " dog"));
  assert.ok(!exactMatch(" dogs", " dog"));
  assert.ok(!exactMatch(" hunting dog", " dog"));
  assert.ok(!exactMatch("\n dog", " dog"));
});
