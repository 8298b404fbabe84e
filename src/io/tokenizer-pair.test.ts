/**
 * Text pairs: encodePair against @huggingface/tokenizers' encode(text, { text_pair }) on the BERT
 * fixture's TemplateProcessing and on BertProcessing / RobertaProcessing post-processors written
 * into a copy of it; longest_first truncation lengths against the rule of the Rust tokenizers
 * library (transformers' fast tokenizers), worked out by hand.
 */
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Tokenizer } from "@huggingface/tokenizers";
import { REPO_ROOT } from "../testing/paths.js";
import { AutoTokenizer, longestFirstLengths, type PreTrainedTokenizer } from "./tokenizer.js";

const BERT = join(REPO_ROOT, "test/fixtures/tokenizers/bert-base-uncased");
const GPT2 = join(REPO_ROOT, "test/fixtures/tokenizers/gpt2");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-pair-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const PAIRS: [string, string][] = [
  ["Hello world", "a pair of texts"],
  ["The unaffable dog barked.", "A cat, quietly sleeping!"],
  ["one", "two three four five six seven"],
];

/** A copy of the BERT fixture with another post_processor; returns ours and the library's tokenizer. */
async function withPostProcessor(name: string, pp: unknown): Promise<{ ours: PreTrainedTokenizer; lib: Tokenizer }> {
  const dir = join(tmp, name);
  mkdirSync(dir);
  const json = JSON.parse(readFileSync(join(BERT, "tokenizer.json"), "utf8")) as Record<string, unknown>;
  if (pp !== undefined) json.post_processor = pp;
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(json));
  copyFileSync(join(BERT, "tokenizer_config.json"), join(dir, "tokenizer_config.json"));
  const config = JSON.parse(readFileSync(join(BERT, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
  return { ours: await AutoTokenizer.fromPretrained(dir), lib: new Tokenizer(json, config) };
}

describe("encodePair", () => {
  const cases: [string, unknown, string[]][] = [
    ["template", undefined, ["[CLS]", "A", "[SEP]", "B", "[SEP]"]],
    ["bert", { type: "BertProcessing", sep: ["[SEP]", 102], cls: ["[CLS]", 101] }, ["[CLS]", "A", "[SEP]", "B", "[SEP]"]],
    ["roberta", { type: "RobertaProcessing", sep: ["[SEP]", 102], cls: ["[CLS]", 101] }, ["[CLS]", "A", "[SEP]", "[SEP]", "B", "[SEP]"]],
  ];
  for (const [name, pp, layout] of cases) {
    test(`${name} post-processor: the library's pair encoding`, async () => {
      const { ours, lib } = await withPostProcessor(name, pp);
      for (const [a, b] of PAIRS) {
        assert.deepEqual(ours.encodePair(a, b), lib.encode(a, { text_pair: b }).ids, `${a} | ${b}`);
        assert.deepEqual(
          ours.encodePair(a, b, { addSpecialTokens: false }),
          lib.encode(a, { text_pair: b, add_special_tokens: false }).ids,
        );
      }
      const f = ours.pairSpecialFrame();
      const shown = [...f.prefix.map((i) => ours.convertIdsToTokens(i)), "A", ...f.middle.map((i) => ours.convertIdsToTokens(i)), "B"];
      shown.push(...f.suffix.map((i) => ours.convertIdsToTokens(i)));
      assert.deepEqual(shown, layout);
    });
  }

  test("a byte-level post-processor adds nothing: the pair is the two encodings concatenated", async () => {
    // (The library's ByteLevel post-processor drops the second sequence here, so it is no reference.)
    const tok = await AutoTokenizer.fromPretrained(GPT2);
    const [a, b] = PAIRS[1];
    assert.deepEqual(tok.encodePair(a, b), [...tok.encode(a), ...tok.encode(b)]);
  });

  test("maxLength cuts the longer text first and keeps the special tokens", async () => {
    const tok = await AutoTokenizer.fromPretrained(BERT);
    const words = (s: string) => s.split(" ").map((w) => tok.convertTokensToIds(w));
    const a = "one two three four five";
    const b = "six seven eight nine ten";
    const cut = (n: number) => tok.convertIdsToTokens(tok.encodePair(a, b, { maxLength: n }));
    // Equal lengths, room 7: the first gets ⌊7/2⌋ = 3, the second 4.
    assert.deepEqual(cut(10), ["[CLS]", "one", "two", "three", "[SEP]", "six", "seven", "eight", "nine", "[SEP]"]);
    // The short side is kept whole when the long side can absorb the cut.
    const c = tok.encodePair("one", "two three four five six seven", { maxLength: 7 });
    assert.deepEqual(c, [101, ...words("one"), 102, ...words("two three four"), 102]);
    assert.equal(tok.encodePair(a, b, { maxLength: 100 }).length, 13, "no cut when it fits");
    assert.throws(() => tok.encodePair(a, b, { maxLength: 2 }), /leaves no room for the special tokens/);
  });

  test("token type ids: 0 on [CLS] A [SEP], 1 on B [SEP] (the template's type_id of each piece)", async () => {
    const { ours, lib } = await withPostProcessor("types-template", undefined);
    for (const [a, b] of PAIRS) {
      const enc = ours.encodePairWithTypes(a, b);
      const na = ours.encode(a, { addSpecialTokens: false }).length;
      const nb = ours.encode(b, { addSpecialTokens: false }).length;
      assert.deepEqual(enc.tokenTypeIds, [...new Array<number>(na + 2).fill(0), ...new Array<number>(nb + 1).fill(1)], `${a} | ${b}`);
      assert.deepEqual(enc.ids, ours.encodePair(a, b));
      assert.deepEqual(enc.tokenTypeIds, lib.encode(a, { text_pair: b, return_token_type_ids: true }).token_type_ids);
      assert.deepEqual(ours.encodeWithTypes(a, { textPair: b }), enc);
      // Without special tokens the template still types the sequences.
      const bare = ours.encodePairWithTypes(a, b, { addSpecialTokens: false });
      assert.deepEqual(bare.tokenTypeIds, [...new Array<number>(na).fill(0), ...new Array<number>(nb).fill(1)]);
    }
    // Truncation keeps the types aligned with the ids.
    const cut = ours.encodePairWithTypes("one two three four five", "six seven eight nine ten", { maxLength: 10 });
    assert.deepEqual(cut.tokenTypeIds, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    assert.deepEqual(ours.encodeWithTypes("Hello world").tokenTypeIds, [0, 0, 0, 0]);
  });

  test("token type ids follow the template's type_id fields, not a fixed rule", async () => {
    const json = JSON.parse(readFileSync(join(BERT, "tokenizer.json"), "utf8")) as {
      post_processor: { pair: Record<string, { type_id: number }>[] };
    };
    const pp = json.post_processor;
    // Second sequence typed 2, its closing [SEP] 3.
    pp.pair[3].Sequence.type_id = 2;
    pp.pair[4].SpecialToken.type_id = 3;
    const { ours } = await withPostProcessor("types-custom", pp);
    const enc = ours.encodePairWithTypes("one", "two three");
    assert.deepEqual(enc.tokenTypeIds, [0, 0, 0, 2, 2, 3]);
  });

  test("token type ids: BertProcessing 0/1, RobertaProcessing all 0 (as the Rust post-processors)", async () => {
    const bert = await withPostProcessor("types-bert", { type: "BertProcessing", sep: ["[SEP]", 102], cls: ["[CLS]", 101] });
    assert.deepEqual(bert.ours.encodePairWithTypes("one", "two three").tokenTypeIds, [0, 0, 0, 1, 1, 1]);
    const rob = await withPostProcessor("types-roberta", { type: "RobertaProcessing", sep: ["[SEP]", 102], cls: ["[CLS]", 101] });
    assert.deepEqual(rob.ours.encodePairWithTypes("one", "two three").tokenTypeIds, [0, 0, 0, 0, 0, 0, 0]);
  });

  test("longest_first lengths", () => {
    const table: [number, number, number, [number, number]][] = [
      [3, 3, 10, [3, 3]], // fits
      [5, 5, 7, [3, 4]], // both cut: the first ⌊room/2⌋, the second the rest
      [2, 10, 7, [2, 5]], // only the longer is cut
      [10, 2, 7, [5, 2]],
      [9, 8, 7, [4, 3]], // both cut: the shorter gets ⌊room/2⌋
      [8, 9, 6, [3, 3]],
      [0, 9, 4, [0, 4]],
      [4, 4, 0, [0, 0]],
    ];
    for (const [a, b, room, want] of table) assert.deepEqual(longestFirstLengths(a, b, room), want, `${a}, ${b}, room ${room}`);
  });
});
