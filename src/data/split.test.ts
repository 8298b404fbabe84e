import assert from "node:assert/strict";
import { test } from "node:test";
import { heldOutBlocks, pretrainingBlocks, synsetText } from "./corpus.js";
import { fnv1a, isHeldOut, splitSynsets } from "./split.js";
import { WordNet } from "./wordnet.js";

const wn = WordNet.load();

test("the split hash is deterministic and spreads offsets evenly", () => {
  assert.equal(fnv1a("noun:2086723"), fnv1a("noun:2086723"));
  assert.notEqual(fnv1a("noun:2086723"), fnv1a("verb:2086723"));
  const buckets = new Array(10).fill(0);
  for (let i = 0; i < 100000; i++) buckets[Math.floor((fnv1a(`noun:${i}`) / 4294967296) * 10)]++;
  for (const b of buckets) assert.ok(Math.abs(b - 10000) < 500, `bucket ${b}`);
});

test("about 10% of synsets are held out, in every part of speech, and the split is stable", () => {
  const { train, heldOut } = splitSynsets(wn.synsets);
  assert.equal(train.length + heldOut.length, wn.synsets.length);
  // Pinned: models/wordnet-llama was pretrained on this split; a change would leak eval items into it.
  assert.equal(heldOut.length, 11805);
  const frac = heldOut.length / wn.synsets.length;
  assert.ok(frac > 0.09 && frac < 0.11, `held out ${frac}`);
  for (const f of ["noun", "verb", "adj", "adv"]) {
    const all = wn.synsets.filter((s) => s.file === f);
    const h = all.filter((s) => isHeldOut(s.file, s.offset)).length / all.length;
    assert.ok(h > 0.08 && h < 0.12, `${f}: ${h}`);
  }
  // A random sample's membership does not depend on anything but (file, offset).
  for (let i = 0; i < 50; i++) {
    const s = wn.synsets[Math.floor(Math.random() * wn.synsets.length)];
    assert.equal(isHeldOut(s.file, s.offset), heldOut.includes(s));
  }
});

test("no held-out gloss, example or 'lemma: definition' line reaches the pretraining text", () => {
  const blocks = pretrainingBlocks(wn, 1);
  const trainLines = new Set(blocks.flatMap((b) => b.split("\n")));
  // A line may legitimately occur when a training synset has the very same text.
  const trainText = new Set(wn.synsets.filter((s) => !isHeldOut(s.file, s.offset)).flatMap((s) => synsetText(s).split("\n")));
  let checked = 0;
  for (const s of wn.synsets) {
    if (!isHeldOut(s.file, s.offset)) continue;
    for (const line of synsetText(s).split("\n")) {
      if (!line || trainText.has(line)) continue;
      assert.ok(!trainLines.has(line), `held-out line in corpus: ${line}`);
      checked++;
    }
  }
  assert.ok(checked > 10000, `checked ${checked}`);
  assert.equal(blocks.length + heldOutBlocks(wn).length, wn.synsets.filter((s) => synsetText(s).length > 0).length);
  assert.deepEqual(pretrainingBlocks(wn, 1).slice(0, 20), blocks.slice(0, 20), "same seed, same order");
  assert.notDeepEqual(pretrainingBlocks(wn, 2).slice(0, 20), blocks.slice(0, 20), "another seed, another order");
});

test("a synset's block: 'lemma: definition' then its examples", () => {
  assert.equal(synsetText(wn.get("noun", 2086723)!).split("\n")[1], "the dog barked all night");
  assert.ok(synsetText(wn.get("noun", 2086723)!).startsWith("dog: a member of the genus Canis"));
});
