import assert from "node:assert/strict";
import { test } from "node:test";
import { synsetText } from "../../src/data/corpus.js";
import { isHeldOut } from "../../src/data/split.js";
import { WordNet } from "../../src/data/wordnet.js";
import { encoderPretrainingBlocks, packRows } from "./corpus.js";

test("no held-out synset's gloss, example or 'lemma: definition' line reaches the encoder's pretraining text", () => {
  const wn = WordNet.load();
  const blocks = encoderPretrainingBlocks(wn, 1234);
  const corpusLines = new Set(blocks.flatMap((b) => b.split("\n")));
  // A line may legitimately occur when a training synset has the very same text.
  const trainText = new Set(wn.synsets.filter((s) => !isHeldOut(s.file, s.offset)).flatMap((s) => synsetText(s).split("\n")));
  let checked = 0;
  for (const s of wn.synsets) {
    if (!isHeldOut(s.file, s.offset)) continue;
    for (const line of synsetText(s).split("\n")) {
      if (!line || trainText.has(line)) continue;
      assert.ok(!corpusLines.has(line), `held-out line in the encoder corpus: ${line}`);
      checked++;
    }
  }
  assert.ok(checked > 10000, `checked ${checked}`);
  // Every training synset with text is there, once.
  assert.equal(blocks.length, wn.synsets.filter((s) => !isHeldOut(s.file, s.offset) && synsetText(s).length > 0).length);
});

test("rows are <s>, content running across blocks (each ended by </s>), </s>; a partial tail is dropped", () => {
  const rows = packRows([[10, 11, 12], [13], [14, 15, 16, 17]], 6, 0, 2);
  assert.deepEqual(rows, [
    [0, 10, 11, 12, 2, 2],
    [0, 13, 2, 14, 15, 2],
  ]);
});
