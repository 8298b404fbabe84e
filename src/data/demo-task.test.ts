import assert from "node:assert/strict";
import { test } from "node:test";
import { demoTask, exactMatch, hypernymPair, KIND_OF } from "./demo-task.js";
import { isHeldOut } from "./split.js";
import { WordNet } from "./wordnet.js";

const wn = WordNet.load({ files: ["noun"] });

test("poodle is a kind of dog", () => {
  const p = hypernymPair(wn, wn.get("noun", 2115987)!, 200)!;
  assert.equal(p.completion, " dog");
  assert.ok(p.prompt.startsWith("poodle: an intelligent dog"));
  assert.ok(p.prompt.endsWith(`\npoodle ${KIND_OF}`));
  // dog's definition names neither "canine" nor "domestic animal" as a word, so it is not used.
  assert.equal(hypernymPair(wn, wn.get("noun", 2086723)!, 1000), null);
});

test("train pairs come from training synsets, eval pairs from held-out ones; deterministic", () => {
  const task = demoTask({ wordnet: wn, maxEval: 400 });
  assert.equal(task.eval.length, 400);
  assert.ok(task.train.length > 10000, `train ${task.train.length}`);
  const heldOutPrompts = new Set<string>();
  const trainPrompts = new Set<string>();
  for (const s of wn.synsets) {
    const p = hypernymPair(wn, s);
    if (p) (isHeldOut(s.file, s.offset) ? heldOutPrompts : trainPrompts).add(p.prompt);
  }
  for (const p of task.eval) assert.ok(heldOutPrompts.has(p.prompt) && !trainPrompts.has(p.prompt), p.prompt);
  for (const p of task.train.slice(0, 2000)) assert.ok(trainPrompts.has(p.prompt), p.prompt);
  for (const p of [...task.train.slice(0, 500), ...task.eval]) {
    const def = p.prompt.split("\n")[0].toLowerCase();
    assert.match(p.completion, /^ [a-z]{3,12}$/);
    assert.ok(new RegExp(`\\b${p.completion.trim()}\\b`).test(def), `${p.completion} in ${def}`);
  }
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
