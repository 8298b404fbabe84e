import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { LabelConfigError, labelConfig, labelConfigFields, parseLabelFields, readLabelConfig, writeLabelConfig } from "./label-config.js";

const tmp = mkdtempSync(join(tmpdir(), "peftkit-label-config-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe("label_config.json", () => {
  test("written with transformers' keys and shapes, read back", () => {
    writeLabelConfig(tmp, labelConfig(["neg", "pos"]));
    assert.deepEqual(JSON.parse(readFileSync(join(tmp, "label_config.json"), "utf8")), {
      num_labels: 2,
      id2label: { "0": "neg", "1": "pos" },
      label2id: { neg: 0, pos: 1 },
    });
    assert.deepEqual(readLabelConfig(tmp)?.names, ["neg", "pos"]);
    assert.equal(readLabelConfig(join(tmp, "nowhere")), null);
  });

  test("a malformed file names the file and the field", () => {
    const good = labelConfigFields(labelConfig(["a", "b", "c"]));
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ ...good, num_labels: undefined }, /label_config\.json: missing field "num_labels"/],
      [{ ...good, label2id: undefined }, /label_config\.json: missing field "label2id"/],
      [{ ...good, num_labels: 2 }, /label_config\.json: field "num_labels" is 2, but "id2label" has 3 labels/],
      [{ ...good, num_labels: 1.5 }, /label_config\.json: field "num_labels" must be a positive integer, got 1\.5/],
      [{ ...good, id2label: ["a", "b", "c"] }, /label_config\.json: field "id2label" must be an object/],
      [{ ...good, id2label: { "0": "a", "2": "c", "3": "b" } }, /label_config\.json: field "id2label" must have the keys "0" to "2"/],
      [{ ...good, id2label: { "0": "a", "1": 7, "2": "c" } }, /label_config\.json: field "id2label\.1" must be a string, got 7/],
      [{ ...good, id2label: { "0": "a", "1": "a", "2": "c" } }, /label_config\.json: field "id2label" names the class "a" twice/],
      [{ ...good, label2id: { a: 0, b: 2, c: 1 } }, /label_config\.json: field "label2id" .* is not the inverse of "id2label"/],
    ];
    for (const [raw, message] of cases) {
      writeFileSync(join(tmp, "label_config.json"), JSON.stringify(raw));
      assert.throws(
        () => readLabelConfig(tmp),
        (e: Error) => e instanceof LabelConfigError && message.test(e.message),
        message.source,
      );
    }
    writeFileSync(join(tmp, "label_config.json"), "[1, 2]");
    assert.throws(() => readLabelConfig(tmp), /label_config\.json: expected a JSON object/);
  });

  test("a model's config.json is read as transformers reads it", () => {
    // id2label wins over num_labels; label2id is not consulted; num_labels alone gives LABEL_i.
    assert.deepEqual(parseLabelFields({ num_labels: 5, id2label: { "0": "x", "1": "y" }, label2id: { q: 3 } }, "config.json")?.names, [
      "x",
      "y",
    ]);
    assert.deepEqual(parseLabelFields({ num_labels: 3 }, "config.json")?.names, ["LABEL_0", "LABEL_1", "LABEL_2"]);
    assert.equal(parseLabelFields({ model_type: "llama" }, "config.json"), null);
    assert.throws(
      () => parseLabelFields({ id2label: { "1": "x" } }, "m/config.json"),
      /m\/config\.json: field "id2label" must have the keys/,
    );
  });
});
