import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Tokenizer } from "@huggingface/tokenizers";
import { bytesToUnicode, countWords, ROBERTA_SPECIAL_TOKENS, saveRobertaTokenizer, saveTokenizer, trainBpe } from "./bpe-trainer.js";
import { AutoTokenizer } from "./tokenizer.js";

async function roundTrip<T>(
  bpe: ReturnType<typeof trainBpe>,
  fn: (tok: Awaited<ReturnType<typeof AutoTokenizer.fromPretrained>>) => Promise<T>,
) {
  const dir = mkdtempSync(join(tmpdir(), "bpe-"));
  try {
    saveTokenizer(dir, bpe, { chatTemplate: "{% for m in messages %}{{ m['content'] }}\n{% endfor %}" });
    return await fn(await AutoTokenizer.fromPretrained(dir));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("byte→unicode table is a bijection onto printable characters", () => {
  const t = bytesToUnicode();
  assert.equal(new Set(t).size, 256);
  assert.equal(t[65], "A");
  assert.equal(t[32], "Ġ"); // GPT-2's well-known space character
  assert.equal(t[10], "Ċ");
  for (const ch of t) assert.ok(!/\s/.test(ch), `whitespace ${JSON.stringify(ch)}`);
});

test("a tiny corpus learns the merges worked out by hand, and they apply in order", async () => {
  // Pair counts: (a,b) 5, (b,a) 2 → merge "ab"; then (ab,ab) 2 → "abab"; then nothing reaches 2.
  const bpe = trainBpe(["abab", "abab", "ab"], { vocabSize: 1000 });
  assert.deepEqual(bpe.merges, [
    ["a", "b"],
    ["ab", "ab"],
  ]);
  assert.equal(bpe.vocab.get("<|endoftext|>"), 0);
  assert.equal(bpe.vocab.size, 1 + 256 + 2);
  await roundTrip(bpe, async (tok) => {
    assert.deepEqual(tok.convertIdsToTokens(tok.encode("ababab")), ["abab", "ab"]);
    assert.deepEqual(tok.convertIdsToTokens(tok.encode("bab")), ["b", "ab"]);
    assert.deepEqual(tok.encode("<|endoftext|>"), [0]);
    assert.equal(tok.eosTokenId, 0);
    assert.equal(tok.padTokenId, 0);
    assert.equal(tok.bosTokenId, 0);
    assert.deepEqual(tok.allSpecialIds, [0]);
  });
});

test("ties are broken by the token strings, and vocabSize caps the merges", () => {
  // (x,y), (Ġ,p) and (p,q) all occur 3 times; "p" < "x" < "Ġ" (U+0120), so (p,q) merges first,
  // then (x,y) beats (Ġ,pq); the vocabulary is then full.
  const bpe = trainBpe(["xy pq", "xy pq", "xy pq"], { vocabSize: 1 + 256 + 2 });
  assert.deepEqual(bpe.merges, [
    ["p", "q"],
    ["x", "y"],
  ]);
  const again = trainBpe(["pq xy", "pq xy", "pq xy"], { vocabSize: 1 + 256 + 2 });
  assert.deepEqual(again.merges, bpe.merges);
});

test("words are split with GPT-2's regex (space joins the next word; contractions apart)", () => {
  const c = countWords(["I'll see  it, 42 times"]);
  assert.deepEqual([...c.keys()], ["I", "'ll", "Ġsee", "Ġ", "Ġit", ",", "Ġ42", "Ġtimes"]);
});

test("decode(encode(x)) == x on varied Unicode; the file loads through AutoTokenizer", async () => {
  const corpus = [
    "the quick brown fox jumps over the lazy dog",
    "a member of the genus Canis that has been domesticated by man",
    "naïve café déjà vu — “quotes” and ‘apostrophes’",
    "数字 and 日本語のテキスト, Ελληνικά, русский",
  ];
  const bpe = trainBpe([...corpus, ...corpus, ...corpus], { vocabSize: 400, specialTokens: ["<|endoftext|>", "<|pad|>"] });
  const cases = [
    ...corpus,
    "",
    " leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n",
    "emoji 🐕‍🦺 👩🏽‍💻 and flags 🇯🇵",
    "zero\u200bwidth and \u0000 nul and \u00ad soft hyphen",
    "mixed 123,456.78 numbers; punctuation!?… (brackets) [x] {y}",
    "the dog<|endoftext|>a cat",
  ];
  for (let i = 0; i < 20; i++) {
    let s = "";
    const n = Math.floor(Math.random() * 30);
    for (let k = 0; k < n; k++) {
      const r = Math.random();
      const cp =
        r < 0.5
          ? 32 + Math.floor(Math.random() * 95)
          : r < 0.8
            ? 0xa0 + Math.floor(Math.random() * 0x2000)
            : 0x1f300 + Math.floor(Math.random() * 0x300);
      s += String.fromCodePoint(cp);
    }
    cases.push(s);
  }
  await roundTrip(bpe, async (tok) => {
    assert.equal(tok.vocabSize, 400);
    for (const x of cases) assert.equal(tok.decode(tok.encode(x)), x, `round trip of ${JSON.stringify(x)}`);
    const ids = tok.encode("the dog<|endoftext|>a cat");
    assert.ok(ids.includes(0), "the special token is matched as one id");
    // Learned merges are used: a frequent word becomes one token.
    assert.deepEqual(tok.convertIdsToTokens(tok.encode(" the")), ["Ġthe"]);
  });
});

test("tokenizer.json has the fields Hugging Face tokenizers expects", () => {
  const dir = mkdtempSync(join(tmpdir(), "bpe-"));
  try {
    saveTokenizer(dir, trainBpe(["hello hello"], { vocabSize: 300 }), { modelMaxLength: 256 });
    const j = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
    assert.equal(j.model.type, "BPE");
    assert.equal(j.pre_tokenizer.type, "ByteLevel");
    assert.equal(j.decoder.type, "ByteLevel");
    assert.deepEqual(j.added_tokens[0].content, "<|endoftext|>");
    assert.equal(j.added_tokens[0].special, true);
    const ids = Object.values(j.model.vocab as Record<string, number>).sort((a, b) => a - b);
    assert.deepEqual(ids, [...ids.keys()], "ids are 0..n-1");
    const cfg = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
    assert.equal(cfg.eos_token, "<|endoftext|>");
    assert.equal(cfg.model_max_length, 256);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a RoBERTa tokenizer: <s> A </s>, pairs <s> A </s></s> B </s> (checked with HF tokenizers), <mask> takes its space", async () => {
  const dir = mkdtempSync(join(tmpdir(), "bpe-roberta-"));
  try {
    const bpe = trainBpe(["the dog barks at the cat", "a cat sat"], { vocabSize: 300, specialTokens: ROBERTA_SPECIAL_TOKENS });
    saveRobertaTokenizer(dir, bpe, { modelMaxLength: 128 });
    const tok = await AutoTokenizer.fromPretrained(dir);
    assert.deepEqual(
      ROBERTA_SPECIAL_TOKENS.map((t) => tok.convertTokensToIds(t)),
      [0, 1, 2, 3, 4],
    );
    assert.equal(tok.padTokenId, 1);
    const a = tok.encode("the dog", { addSpecialTokens: false });
    const b = tok.encode("a cat", { addSpecialTokens: false });
    assert.deepEqual(tok.encode("the dog"), [0, ...a, 2]);
    // The reference for pairs: the HF tokenizers package itself, run on the written files.
    const hf = new Tokenizer(
      JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")),
      JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")),
    );
    assert.deepEqual(hf.encode("the dog").ids, [0, ...a, 2]);
    assert.deepEqual(hf.encode("the dog", { text_pair: "a cat" }).ids, [0, ...a, 2, 2, ...b, 2]);
    assert.deepEqual(tok.encode("the dog", { textPair: "a cat" }), [0, ...a, 2, 2, ...b, 2]);
    assert.deepEqual(tok.encode("the dog", { textPair: "a cat", addSpecialTokens: false }), [...a, ...b]);
    // lstrip: the space before <mask> belongs to the mask, as roberta-base's "The <mask> barks".
    assert.deepEqual(tok.encode("the <mask> barks", { addSpecialTokens: false }), [
      ...tok.encode("the", { addSpecialTokens: false }),
      4,
      ...tok.encode(" barks", { addSpecialTokens: false }),
    ]);
    const cfg = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
    assert.equal(cfg.tokenizer_class, "RobertaTokenizer");
    assert.equal(cfg.mask_token, "<mask>");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
