import assert from "node:assert/strict";
import { test } from "node:test";
import { parseDataLine, splitGloss, WordNet } from "./wordnet.js";

// Load time is a benchmark matter, not a unit test's: on a loaded 2-core machine it varies 5×.
const wn = WordNet.load();

test("all four data files load, and every pointer resolves", () => {
  const byFile = new Map<string, number>();
  for (const s of wn.synsets) byFile.set(s.file, (byFile.get(s.file) ?? 0) + 1);
  // WordNet 3.1's synset counts.
  assert.deepEqual(Object.fromEntries(byFile), { noun: 82192, verb: 13789, adj: 18185, adv: 3625 });
  let dangling = 0;
  for (const s of wn.synsets) for (const p of s.pointers) if (!wn.follow(p)) dangling++;
  assert.equal(dangling, 0);
});

test("dog: lemmas, definition, example, hypernyms", () => {
  const dog = wn.get("noun", 2086723)!;
  assert.deepEqual(dog.lemmas, ["dog", "domestic dog", "Canis familiaris"]);
  assert.equal(dog.type, "n");
  assert.equal(
    dog.definition,
    "a member of the genus Canis (probably descended from the common wolf) that has been domesticated by man since prehistoric times; occurs in many breeds",
  );
  assert.deepEqual(dog.examples, ["the dog barked all night"]);
  assert.deepEqual(
    wn.related(dog, ["@"]).map((s) => s.lemmas[0]),
    ["canine", "domestic animal"],
  );
  const poodle = wn.get("noun", 2115987)!;
  assert.deepEqual(poodle.lemmas, ["poodle", "poodle dog"]);
  assert.deepEqual(
    wn.related(poodle, ["@"]).map((s) => s.lemmas[0]),
    ["dog"],
  );
});

test("adjectives and verbs: antonyms, satellites, verb frames skipped", () => {
  const able = wn.get("adj", 1740)!;
  assert.deepEqual(able.lemmas, ["able"]);
  assert.deepEqual(
    wn.related(able, ["!"]).map((s) => s.lemmas[0]),
    ["unable"],
  );
  const breathe = wn.get("verb", 1740)!;
  assert.deepEqual(breathe.lemmas, ["breathe", "take a breath", "respire", "suspire"]);
  assert.equal(breathe.pointers.length, 21);
  assert.equal(breathe.definition, "draw air into, and expel out of, the lungs");
  assert.deepEqual(breathe.examples, ["I can breathe better when the air is clean", "The patient is respiring"]);
  const outback = wn.get("adj", 20141)!;
  assert.equal(outback.type, "s");
  assert.deepEqual(outback.lemmas, ["outback", "remote"]);
  assert.deepEqual(
    wn.related(outback, ["&"]).map((s) => s.type),
    ["a"],
  );
});

test("a hand-written line: hex word count, pointer source/target, instance hypernym", () => {
  const line =
    '00000042 18 n 0b a_b 0 c(p) 1 d 0 e 0 f 0 g 0 h 0 i 0 j 0 k 0 l 0 002 @i 00001234 n 0000 ! 00005678 n 0a0b | the thing; "x y"; "z"  ';
  const s = parseDataLine(line, "noun")!;
  assert.equal(s.offset, 42);
  assert.equal(s.lexFile, 18);
  assert.equal(s.lemmas.length, 11);
  assert.deepEqual(s.lemmas.slice(0, 2), ["a b", "c"]);
  assert.deepEqual(s.pointers[0], { symbol: "@i", offset: 1234, pos: "n", source: 0, target: 0 });
  assert.deepEqual(s.pointers[1], { symbol: "!", offset: 5678, pos: "n", source: 10, target: 11 });
  assert.equal(s.definition, "the thing");
  assert.deepEqual(s.examples, ["x y", "z"]);
  assert.equal(parseDataLine("  1 This software and database is being provided", "noun"), null);
});

test("glosses: definitions with semicolons, examples with attributions, no examples", () => {
  assert.deepEqual(splitGloss('a; b; "c d"-Author; "e"'), { definition: "a; b", examples: ["c d", "e"] });
  assert.deepEqual(splitGloss("only a definition"), { definition: "only a definition", examples: [] });
  assert.deepEqual(splitGloss('"just an example"'), { definition: "", examples: ["just an example"] });
});
