/**
 * The encoder tasks' record formats: pair_classification {text, text_pair, label} and
 * token_classification {tokens, tags}: detection, tokenisation, label alignment (first
 * sub-token of each word, as transformers' run_ner.py with label_all_tokens=False), class ids,
 * truncation and bad records.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AutoTokenizer, type PreTrainedTokenizer } from "../../io/tokenizer.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { DatasetError } from "./errors.js";
import { datasetFromRecords, loadDataset } from "./load.js";
import { IGNORE_INDEX } from "./tokenize.js";

const TOK = join(REPO_ROOT, "test/fixtures/tokenizers");
const scratch = mkdtempSync(join(tmpdir(), "peftkit-encfmt-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

let bert: PreTrainedTokenizer;
let gpt2: PreTrainedTokenizer;
before(async () => {
  bert = await AutoTokenizer.fromPretrained(join(TOK, "bert-base-uncased"));
  gpt2 = await AutoTokenizer.fromPretrained(join(TOK, "gpt2"));
});

let n = 0;
function file(rows: unknown[]): string {
  const dir = join(scratch, `f${n++}`);
  mkdirSync(dir);
  const p = join(dir, "d.jsonl");
  writeFileSync(p, rows.map((r) => JSON.stringify(r)).join("\n"));
  return p;
}
const rejects = (p: Promise<unknown>, re: RegExp) => assert.rejects(p, (e: Error) => e instanceof DatasetError && re.test(e.message));

describe("pair_classification", () => {
  test("detected from text + text_pair + label; encoded with the pair template; string labels in sorted order", async () => {
    const p = file([
      { text: "a dog", text_pair: "an animal", label: "hypernym" },
      { text: "a dog", text_pair: "a cat", label: "cohyponym" },
    ]);
    const ds = await loadDataset(p, { tokenizer: bert, cacheDir: null });
    assert.equal(ds.format, "pair_classification");
    assert.deepEqual(ds.labelNames, ["cohyponym", "hypernym"]);
    assert.deepEqual(
      ds.examples.map((e) => e.label),
      [1, 0],
    );
    assert.deepEqual(bert.convertIdsToTokens(ds.examples[0].inputIds), ["[CLS]", "a", "dog", "[SEP]", "an", "animal", "[SEP]"]);
    assert.deepEqual(ds.examples[0].inputIds, bert.encodePair("a dog", "an animal"));
    assert.equal(ds.examples[0].labels, undefined);
    assert.equal(ds.examples[1].source, `${p}:2`);
  });

  test("integer labels are class ids; maxLength cuts the longer text first", async () => {
    const ds = datasetFromRecords([{ text: "one two three four five", text_pair: "six", label: 3 }], { tokenizer: bert, maxLength: 7 });
    assert.equal(ds.numLabels, 4);
    assert.equal(ds.truncated, 1);
    assert.deepEqual(bert.convertIdsToTokens(ds.examples[0].inputIds), ["[CLS]", "one", "two", "three", "[SEP]", "six", "[SEP]"]);
    assert.throws(
      () => datasetFromRecords([{ text: "a", text_pair: "b", label: 0 }], { tokenizer: bert, maxLength: 4 }),
      /maxLength 4 is too short for pair_classification records with this tokenizer \(at least 5\)/,
    );
  });

  test("the eval file's labels go through the training classes", async () => {
    const p = file([{ text: "a", text_pair: "b", label: "synonym" }]);
    await rejects(
      loadDataset(p, { tokenizer: bert, cacheDir: null, labels: ["antonym", "hypernym"] }),
      /d\.jsonl:1: field "label": "synonym" is not one of the labels \["antonym","hypernym"\]/,
    );
  });

  test("bad records name the file, line and field", async () => {
    await rejects(
      loadDataset(
        file([
          { text: "a", text_pair: "b", label: "x" },
          { text: "a", label: "x" },
        ]),
        { tokenizer: bert, cacheDir: null },
      ),
      /d\.jsonl:2: missing field "text_pair"/,
    );
    await rejects(
      loadDataset(file([{ text: "a", text_pair: 7, label: "x" }]), { tokenizer: bert, cacheDir: null }),
      /d\.jsonl:1: field "text_pair" must be a string, got number/,
    );
    await rejects(
      loadDataset(file([{ text: "a", text_pair: "b", label: [1] }]), { tokenizer: bert, cacheDir: null }),
      /d\.jsonl:1: field "label" must be an integer or a string, got array/,
    );
    await rejects(
      loadDataset(
        file([
          { text: "a", text_pair: "b", label: "x" },
          { text: "a", text_pair: "b", label: 1 },
        ]),
        { tokenizer: bert, cacheDir: null },
      ),
      /d\.jsonl:2: field "label" is a number, but this dataset's labels are strings/,
    );
  });
});

test("both formats come back from the dataset cache as they were built", async () => {
  const cacheDir = join(scratch, "cache");
  const pair = file([{ text: "a dog", text_pair: "an animal", label: "yes" }]);
  const tags = file([{ tokens: ["the", "unaffable", "dog"], tags: ["O", "ADJ", "NOUN"] }]);
  for (const p of [pair, tags]) {
    const built = await loadDataset(p, { tokenizer: bert, cacheDir });
    const cached = await loadDataset(p, { tokenizer: bert, cacheDir });
    assert.equal(built.fromCache, false);
    assert.equal(cached.fromCache, true);
    const plain = (d: typeof built) => ({ ...d, fromCache: undefined, cacheFile: undefined });
    assert.deepEqual(plain(cached), plain(built));
  }
});

describe("token_classification", () => {
  test("the tag goes to a word's first sub-token; the others and the special tokens get -100", async () => {
    const p = file([{ tokens: ["The", "unaffable", "dog"], tags: ["O", "ADJ", "NOUN"] }]);
    const ds = await loadDataset(p, { tokenizer: bert, cacheDir: null });
    assert.equal(ds.format, "token_classification");
    assert.deepEqual(ds.labelNames, ["ADJ", "NOUN", "O"]);
    const e = ds.examples[0];
    assert.deepEqual(bert.convertIdsToTokens(e.inputIds), ["[CLS]", "the", "una", "##ffa", "##ble", "dog", "[SEP]"]);
    assert.deepEqual(e.labels, [IGNORE_INDEX, 2, 0, IGNORE_INDEX, IGNORE_INDEX, 1, IGNORE_INDEX]);
    assert.equal(e.label, undefined);
    // The words are joined with single spaces: the ids are the joined text's encoding.
    assert.deepEqual(e.inputIds, bert.encode("The unaffable dog"));
  });

  test("byte-level BPE: words after the first are encoded with their leading space, as in the joined text", () => {
    const ds = datasetFromRecords([{ tokens: ["unaffable", "hypernym", "x"], tags: [1, 2, 0] }], { tokenizer: gpt2 });
    const e = ds.examples[0];
    assert.deepEqual(gpt2.convertIdsToTokens(e.inputIds.slice(0, 6)), ["un", "aff", "able", "Ġhyper", "ny", "m"]);
    assert.deepEqual(e.inputIds.slice(0, 7), gpt2.encode("unaffable hypernym x"));
    assert.deepEqual(e.labels, [1, IGNORE_INDEX, IGNORE_INDEX, 2, IGNORE_INDEX, IGNORE_INDEX, 0, ...e.labels!.slice(7)]);
    assert.ok(
      e.labels!.slice(7).every((l) => l === IGNORE_INDEX),
      "special tokens carry no tag",
    );
    assert.equal(ds.numLabels, 3);
    assert.equal(ds.labelNames, undefined);
  });

  test("a tokenizer that marks word starts itself (Metaspace): words split from growing prefixes of the text", async () => {
    // Encoding " unaffable" alone gives an extra "▁" here, so the per-word split does not add up.
    const mistral = await AutoTokenizer.fromPretrained(join(TOK, "mistral"));
    const ds = datasetFromRecords([{ tokens: ["The", "unaffable", "dog"], tags: ["O", "ADJ", "NOUN"] }], { tokenizer: mistral });
    const e = ds.examples[0];
    assert.deepEqual(mistral.convertIdsToTokens(e.inputIds), ["<s>", "▁The", "▁una", "ff", "able", "▁dog"]);
    assert.deepEqual(e.labels, [IGNORE_INDEX, 2, 0, IGNORE_INDEX, IGNORE_INDEX, 1]);
  });

  test("truncation keeps the special tokens and the first sub-tokens", () => {
    const ds = datasetFromRecords([{ tokens: ["a", "unaffable", "dog"], tags: ["O", "ADJ", "NOUN"] }], { tokenizer: bert, maxLength: 4 });
    assert.equal(ds.truncated, 1);
    assert.deepEqual(bert.convertIdsToTokens(ds.examples[0].inputIds), ["[CLS]", "a", "una", "[SEP]"]);
    assert.deepEqual(ds.examples[0].labels, [IGNORE_INDEX, 2, 0, IGNORE_INDEX]);
  });

  test("given labels (a trained model's classes) map string tags; an unknown tag is a bad record", async () => {
    const ds = datasetFromRecords([{ tokens: ["a", "b"], tags: ["X", "O"] }], { tokenizer: bert, labels: ["O", "X"] });
    assert.deepEqual(ds.examples[0].labels, [IGNORE_INDEX, 1, 0, IGNORE_INDEX]);
    await rejects(
      loadDataset(file([{ tokens: ["a", "b"], tags: ["O", "Y"] }]), { tokenizer: bert, cacheDir: null, labels: ["O", "X"] }),
      /d\.jsonl:1: field "tags\[1\]": "Y" is not one of the labels \["O","X"\]/,
    );
    await rejects(
      loadDataset(file([{ tokens: ["a", "b"], tags: [0, 2] }]), { tokenizer: bert, cacheDir: null, labels: ["O", "X"] }),
      /d\.jsonl:1: field "tags\[1\]": class id 2 is out of range for 2 labels/,
    );
  });

  test("bad records name the file, line and field; skip leaves them out", async () => {
    const rows = [
      { tokens: ["a", "b"], tags: ["O", "X"] },
      { tokens: ["a", "b", "c"], tags: ["O", "X"] },
      { tokens: "a b", tags: ["O"] },
      { tokens: ["a", 5], tags: ["O", "X"] },
      { tokens: ["a b"], tags: ["O"] },
      { tokens: [], tags: [] },
      { tokens: ["a"], tags: [1] },
      { tokens: ["a"], tags: [null] },
      { tokens: ["a"], tags: [-1] },
    ];
    const p = file(rows);
    await rejects(loadDataset(p, { tokenizer: bert, cacheDir: null }), /d\.jsonl:2: field "tags" has 2 entries, but "tokens" has 3/);
    const ds = await loadDataset(p, { tokenizer: bert, cacheDir: null, onBadRecord: "skip" });
    assert.equal(ds.examples.length, 1);
    assert.deepEqual(ds.skipped, [
      `${p}:2: field "tags" has 2 entries, but "tokens" has 3; they must have one tag per token`,
      `${p}:3: field "tokens" must be a list, got string`,
      `${p}:4: field "tokens[1]" must be a string, got number`,
      `${p}:5: field "tokens[0]" must be one word (non-empty, no whitespace), got "a b"`,
      `${p}:6: field "tokens" is an empty list`,
      `${p}:7: field "tags[0]" is a number, but this dataset's labels are strings (e.g. at ${p}:1)`,
      `${p}:8: field "tags[0]" must be an integer or a string, got null`,
      `${p}:9: field "tags[0]" must be a non-negative integer or a string, got -1`,
    ]);
  });
});
