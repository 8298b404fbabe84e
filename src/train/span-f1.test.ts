import assert from "node:assert/strict";
import { test } from "node:test";
import { isSpanTagSet, spanScores, spansOf } from "./span-f1.js";

const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} != ${b}`);

test("spans: typed and untyped BIO, as seqeval's get_entities chunks them", () => {
  // seqeval's docstring example.
  assert.deepEqual(spansOf(["B-PER", "I-PER", "O", "B-LOC"]), [
    { type: "PER", start: 0, end: 1 },
    { type: "LOC", start: 3, end: 3 },
  ]);
  // Untyped tags (wordnet-bench's lemma-tag): type "_"; B after I closes the span and opens one.
  assert.deepEqual(spansOf(["O", "B", "I", "B", "O", "B"]), [
    { type: "_", start: 1, end: 2 },
    { type: "_", start: 3, end: 3 },
    { type: "_", start: 5, end: 5 },
  ]);
  // A type change inside a span closes it and opens another.
  assert.deepEqual(spansOf(["B-PER", "I-LOC", "I-LOC"]), [
    { type: "PER", start: 0, end: 0 },
    { type: "LOC", start: 1, end: 2 },
  ]);
  assert.deepEqual(spansOf(["O", "O"]), []);
  assert.deepEqual(spansOf([]), []);
});

test("spans: a stray I starts a span (seqeval's default mode, not strict IOB2)", () => {
  assert.deepEqual(spansOf(["O", "I", "I", "O"]), [{ type: "_", start: 1, end: 2 }]);
  assert.deepEqual(spansOf(["I"]), [{ type: "_", start: 0, end: 0 }]);
  // I of another type than the open span: a new span.
  assert.deepEqual(spansOf(["B-PER", "I-PER", "I-LOC", "O", "I-PER"]), [
    { type: "PER", start: 0, end: 1 },
    { type: "LOC", start: 2, end: 2 },
    { type: "PER", start: 4, end: 4 },
  ]);
});

test("spans: E and S close spans (IOBES read in the same default mode)", () => {
  assert.deepEqual(spansOf(["S-X", "B-Y", "E-Y", "I-Y"]), [
    { type: "X", start: 0, end: 0 },
    { type: "Y", start: 1, end: 2 },
    { type: "Y", start: 3, end: 3 },
  ]);
});

test("span P/R/F1: micro over spans, exact type, start and end (closed forms)", () => {
  // seqeval's f1_score docstring: gold MISC 3-5 and PER 0-1; predicted MISC 2-5 (wrong start), PER 0-1.
  const s = spanScores([
    [
      ["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"],
      ["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"],
    ],
    [
      ["B-PER", "I-PER", "O"],
      ["B-PER", "I-PER", "O"],
    ],
  ]);
  assert.deepEqual([s.gold, s.predicted, s.correct], [2, 2, 1]);
  close(s.f1, 0.5);
  // A span cut short is wrong: gold 0-1 and 3-3, predicted 0-0 and 3-3 → P = R = 1/2.
  const cut = spanScores([
    [
      ["B", "I", "O", "B"],
      ["B", "O", "O", "B"],
    ],
  ]);
  close(cut.precision, 1 / 2);
  close(cut.recall, 1 / 2);
  close(cut.f1, 1 / 2);
  // Two right, one extra: P = 2/3, R = 1, F1 = 2·(2/3)/(5/3) = 4/5.
  const extra = spanScores([
    [
      ["B", "O", "B", "O"],
      ["B", "O", "B", "B"],
    ],
  ]);
  close(extra.precision, 2 / 3);
  close(extra.recall, 1);
  close(extra.f1, 4 / 5);
  // Right place, wrong type: no credit.
  close(spanScores([[["B-PER"], ["B-LOC"]]]).f1, 0);
});

test("span P/R/F1: predicting no span scores 0 (the all-O floor), and spans do not cross sequences", () => {
  const none = spanScores([
    [
      ["O", "B", "I", "O"],
      ["O", "O", "O", "O"],
    ],
  ]);
  assert.deepEqual(none, { precision: 0, recall: 0, f1: 0, gold: 1, predicted: 0, correct: 0 });
  assert.deepEqual(spanScores([]), { precision: 0, recall: 0, f1: 0, gold: 0, predicted: 0, correct: 0 });
  // Joined, ["O", "B"] + ["I", "O"] would be one span 1-2; per sequence they are two spans.
  const s = spanScores([
    [
      ["O", "B"],
      ["O", "B"],
    ],
    [
      ["I", "O"],
      ["O", "O"],
    ],
  ]);
  assert.deepEqual([s.gold, s.predicted, s.correct], [2, 1, 1]);
  close(s.f1, (2 * 1 * 0.5) / 1.5);
});

test("span tag sets: BIO/IOBES names with or without a type; anything else gets no span metrics", () => {
  assert.ok(isSpanTagSet(["B", "I", "O"]));
  assert.ok(isSpanTagSet(["O", "B-PER", "I-PER", "S-LOC", "E-LOC"]));
  assert.ok(!isSpanTagSet(["O", "NOUN", "VERB"]));
  assert.ok(!isSpanTagSet(["LABEL_0", "LABEL_1"]));
  assert.ok(!isSpanTagSet(["B-", "O"]));
  assert.ok(!isSpanTagSet([]));
  assert.throws(() => spansOf(["B", "NOUN"]), /"NOUN" is not a BIO tag/);
  assert.throws(() => spanScores([[["O"], ["O", "O"]]]), /1 gold tags but 2 predicted/);
});
