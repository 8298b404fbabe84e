import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { labelConfig } from "../../io/label-config.js";
import { trainingLabels } from "./labels.js";
import type { Example } from "./tokenize.js";

const ex = (labels: number[]): Example[] => labels.map((label, i) => ({ inputIds: [1, 2], label, source: `d.jsonl:${i + 1}` }));

describe("the classes of a training run", () => {
  test("without labels in config.json: string labels sorted, integer labels as ids with LABEL_i names", () => {
    const s = trainingLabels({ examples: ex([1, 0]), labelNames: ["neg", "pos"], numLabels: 2 }, null, "m/config.json");
    assert.deepEqual([s.labels.names, s.examples.map((e) => e.label), s.warning], [["neg", "pos"], [1, 0], undefined]);
    const n = trainingLabels({ examples: ex([0, 2]), numLabels: 3 }, null, "m/config.json");
    assert.deepEqual(n.labels.names, ["LABEL_0", "LABEL_1", "LABEL_2"]);
  });

  test("string labels among the model's names keep the model's ids (a fine-tuned head keeps its rows)", () => {
    const model = labelConfig(["positive", "negative", "neutral"]);
    // The loader numbered the data's labels in sorted order: negative 0, positive 1.
    const r = trainingLabels({ examples: ex([1, 0, 1]), labelNames: ["negative", "positive"], numLabels: 2 }, model, "m/config.json");
    assert.deepEqual(r.labels.names, ["positive", "negative", "neutral"]);
    assert.deepEqual(
      r.examples.map((e) => e.label),
      [0, 1, 0],
    );
    assert.equal(r.warning, undefined);
  });

  test("string labels the model does not name: the data's, with a warning when the model had real names", () => {
    const r = trainingLabels(
      { examples: ex([0, 1]), labelNames: ["bad", "good"], numLabels: 2 },
      labelConfig(["neg", "pos"]),
      "m/config.json",
    );
    assert.deepEqual(r.labels.names, ["bad", "good"]);
    assert.match(r.warning ?? "", /the labels of m\/config\.json \(neg, pos\) do not include all the data's labels \(bad, good\)/);
    const d = trainingLabels({ examples: ex([0, 1]), labelNames: ["bad", "good"], numLabels: 2 }, labelConfig(["LABEL_0", "LABEL_1"]), "c");
    assert.equal(d.warning, undefined);
  });

  test("integer labels keep the model's classes when they fit, else the data's count", () => {
    const model = labelConfig(["a", "b", "c"]);
    assert.deepEqual(trainingLabels({ examples: ex([0, 1]), numLabels: 2 }, model, "c").labels.names, ["a", "b", "c"]);
    assert.deepEqual(trainingLabels({ examples: ex([0, 3]), numLabels: 4 }, model, "c").labels.names, [
      "LABEL_0",
      "LABEL_1",
      "LABEL_2",
      "LABEL_3",
    ]);
  });
});
