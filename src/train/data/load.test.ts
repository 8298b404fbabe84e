import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { gunzipSync } from "node:zlib";
import { PeftkitError } from "../../engine/errors.js";
import { AutoTokenizer, type PreTrainedTokenizer } from "../../io/tokenizer.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { DatasetError } from "./errors.js";
import { datasetFromRecords, loadDataset } from "./load.js";
import { IGNORE_INDEX } from "./tokenize.js";

const TOK = join(REPO_ROOT, "test/fixtures/tokenizers");
const FIX = join(REPO_ROOT, "test/fixtures/data");
const scratch = mkdtempSync(join(tmpdir(), "peftkit-load-"));
after(() => rmSync(scratch, { recursive: true, force: true }));

let gpt2: PreTrainedTokenizer;
let qwen: PreTrainedTokenizer;
before(async () => {
  gpt2 = await AutoTokenizer.fromPretrained(join(TOK, "gpt2"));
  const q = join(scratch, "qwen3");
  mkdirSync(q);
  writeFileSync(join(q, "tokenizer.json"), gunzipSync(readFileSync(join(TOK, "qwen3", "tokenizer.json.gz"))));
  copyFileSync(join(TOK, "qwen3", "tokenizer_config.json"), join(q, "tokenizer_config.json"));
  qwen = await AutoTokenizer.fromPretrained(q);
});

let n = 0;
function file(name: string, content: string | Uint8Array): string {
  const dir = join(scratch, `f${n++}`);
  mkdirSync(dir);
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
}
const jsonl = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join("\n");
const EOS = "<|endoftext|>";
/** The tokens that carry a loss, decoded. */
const lossText = (tok: PreTrainedTokenizer, ids: number[], labels: number[]) => {
  labels.forEach((l, i) => {
    if (l !== IGNORE_INDEX) assert.equal(l, ids[i], "a label is the token at its own position (the trainer shifts)");
  });
  return tok.decode(ids.filter((_, i) => labels[i] !== IGNORE_INDEX));
};

describe("formats and label masks", () => {
  test("text: loss on every token, EOS appended", async () => {
    const ds = await loadDataset(file("d.jsonl", jsonl([{ text: "Hello world" }, { text: "Second line." }])), {
      tokenizer: gpt2,
      cacheDir: null,
    });
    assert.equal(ds.format, "text");
    assert.deepEqual(ds.examples[0].inputIds, [15496, 995, 50256]);
    assert.deepEqual(ds.examples[0].labels, ds.examples[0].inputIds);
    assert.equal(gpt2.decode(ds.examples[1].inputIds), `Second line.${EOS}`);
  });

  test("prompt_completion: loss on the completion and its EOS only", async () => {
    const p = file("d.jsonl", jsonl([{ prompt: "The capital of France is", completion: " Paris" }]));
    const ds = await loadDataset(p, { tokenizer: gpt2, cacheDir: null });
    assert.equal(ds.format, "prompt_completion");
    const e = ds.examples[0];
    const promptLen = gpt2.encode("The capital of France is", { addSpecialTokens: false }).length;
    assert.deepEqual(e.labels!.slice(0, promptLen), new Array(promptLen).fill(IGNORE_INDEX));
    assert.equal(lossText(gpt2, e.inputIds, e.labels!), ` Paris${EOS}`);
    assert.equal(gpt2.decode(e.inputIds), `The capital of France is Paris${EOS}`);
    assert.equal(e.source, `${p}:1`);
  });

  test("chat (Qwen3 template): loss on the assistant turn only, end-of-turn included", () => {
    const ds = datasetFromRecords(
      [
        {
          messages: [
            { role: "system", content: "Be brief." },
            { role: "user", content: "Hi there" },
            { role: "assistant", content: "Hello! How can I help?" },
          ],
        },
      ],
      { tokenizer: qwen },
    );
    assert.equal(ds.format, "chat");
    const e = ds.examples[0];
    assert.equal(
      qwen.decode(e.inputIds),
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello! How can I help?<|im_end|>\n",
    );
    assert.equal(lossText(qwen, e.inputIds, e.labels!), "<think>\n\n</think>\n\nHello! How can I help?<|im_end|>\n");
  });

  test("chat, multi-turn with a prefix-stable training template: every assistant turn, nothing else", () => {
    const chatml =
      "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    const messages = [
      { role: "user", content: "One?" },
      { role: "assistant", content: "Uno." },
      { role: "user", content: "Two?" },
      { role: "assistant", content: "Dos." },
    ];
    const ds = datasetFromRecords([{ messages }], { tokenizer: qwen, chatTemplate: chatml });
    const e = ds.examples[0];
    // Split the loss positions into contiguous spans and decode each.
    const spans: string[] = [];
    let cur: number[] = [];
    e.labels!.forEach((l, i) => {
      if (l !== IGNORE_INDEX) cur.push(e.inputIds[i]);
      else if (cur.length) {
        spans.push(qwen.decode(cur));
        cur = [];
      }
    });
    if (cur.length) spans.push(qwen.decode(cur));
    assert.deepEqual(spans, ["Uno.<|im_end|>\n", "Dos.<|im_end|>\n"]);
  });

  test("chat: a template that re-renders earlier turns (Qwen3 multi-turn) makes the record bad, with a hint", () => {
    const rec = {
      messages: [
        { role: "user", content: "a" },
        { role: "assistant", content: "b" },
        { role: "user", content: "c" },
        { role: "assistant", content: "d" },
      ],
    };
    assert.throws(
      () => datasetFromRecords([rec], { tokenizer: qwen, name: "chat.jsonl" }),
      (e: Error) =>
        e instanceof DatasetError && /^chat\.jsonl: \[0\]: the chat template does not render .*\(option chatTemplate\)/.test(e.message),
    );
  });

  test("chat: a template that ignores add_generation_prompt stops loading, even in skip mode", () => {
    const always = "{% for m in messages %}{{ m.role + ': ' + m.content + '\\n' }}{% endfor %}{{ 'assistant: ' }}";
    const rec = {
      messages: [
        { role: "user", content: "a" },
        { role: "assistant", content: "b" },
      ],
    };
    assert.throws(
      () => datasetFromRecords([rec], { tokenizer: qwen, chatTemplate: always, onBadRecord: "skip" }),
      /ignores add_generation_prompt/,
    );
  });

  test("chat: no chat template is a clear error; no assistant message is a bad record", () => {
    const rec = {
      messages: [
        { role: "user", content: "a" },
        { role: "assistant", content: "b" },
      ],
    };
    assert.throws(
      () => datasetFromRecords([rec], { tokenizer: gpt2 }),
      (e: Error) => e instanceof DatasetError && /chat records need a chat template, and the tokenizer in .*gpt2 has none/.test(e.message),
    );
    assert.throws(
      () => datasetFromRecords([{ messages: [{ role: "user", content: "a" }] }], { tokenizer: qwen }),
      /records: \[0\]: field "messages" has no "assistant" message/,
    );
    assert.throws(
      () => datasetFromRecords([{ messages: [{ role: "user", content: 3 }] }], { tokenizer: qwen }),
      /field "messages\[0\]\.content" must be a string, got number/,
    );
  });

  test("classification: string labels in sorted order, integer labels as ids, CSV integers as ids", async () => {
    const ds = datasetFromRecords(
      [
        { text: "great", label: "pos" },
        { text: "awful", label: "neg" },
        { text: "meh", label: "neutral" },
        { text: "fine", label: "pos" },
      ],
      { tokenizer: gpt2 },
    );
    assert.equal(ds.format, "classification");
    assert.deepEqual(ds.labelNames, ["neg", "neutral", "pos"]);
    assert.equal(ds.numLabels, 3);
    assert.deepEqual(
      ds.examples.map((e) => e.label),
      [2, 0, 1, 2],
    );
    assert.equal(ds.examples[0].labels, undefined);
    const given = datasetFromRecords([{ text: "x", label: "b" }], { tokenizer: gpt2, labels: ["b", "a"] });
    assert.deepEqual([given.examples[0].label, given.labelNames, given.numLabels], [0, ["b", "a"], 2]);
    const ints = datasetFromRecords(
      [
        { text: "x", label: 4 },
        { text: "y", label: 0 },
      ],
      { tokenizer: gpt2 },
    );
    assert.deepEqual([ints.examples.map((e) => e.label), ints.numLabels, ints.labelNames], [[4, 0], 5, undefined]);
    const csv = await loadDataset(file("d.csv", "text,label\nx,2\ny,10\n"), { tokenizer: gpt2, cacheDir: null });
    assert.deepEqual([csv.examples.map((e) => e.label), csv.numLabels], [[2, 10], 11]);
    const mixed = datasetFromRecords(
      [
        { text: "x", label: "a" },
        { text: "y", label: 1 },
      ],
      { tokenizer: gpt2, onBadRecord: "skip" },
    );
    assert.deepEqual(mixed.skipped, [
      'records: [1]: field "label" is a number, but this dataset\'s labels are strings (e.g. at records: [0])',
    ]);
  });

  test("the classification CSV and Parquet fixtures", async () => {
    const csv = await loadDataset(join(FIX, "edge.csv"), { tokenizer: gpt2, cacheDir: null });
    assert.deepEqual(csv.labelNames, ["neg", "pos"]);
    assert.equal(gpt2.decode(csv.examples[2].inputIds), "multi\r\nline\nfield");
    const pq = join(FIX, "reviews.parquet");
    await assert.rejects(
      loadDataset(pq, { tokenizer: gpt2, cacheDir: null }),
      (e: Error) => e.message === `${pq}: row 2: field "text" must be a string, got null`,
    );
    const ok = await loadDataset(pq, { tokenizer: gpt2, cacheDir: null, onBadRecord: "skip" });
    assert.deepEqual(
      ok.examples.map((e) => [e.source, e.label]),
      [
        [`${pq}: row 0`, 1],
        [`${pq}: row 1`, 0],
        [`${pq}: row 3`, 1],
      ],
    );
    assert.equal(ok.skipped.length, 1);
  });

  test("records in memory: non-objects are bad records", () => {
    const ds = datasetFromRecords(["oops", { text: "fine" }] as unknown as Record<string, unknown>[], {
      tokenizer: gpt2,
      onBadRecord: "skip",
      name: "task",
    });
    assert.deepEqual(ds.skipped, ["task: [0]: expected an object, got string"]);
    assert.equal(ds.examples[0].source, "task: [1]");
  });

  test("a forced format checks the fields it needs", () => {
    assert.throws(
      () => datasetFromRecords([{ text: "a", label: 1 }], { tokenizer: gpt2, format: "prompt_completion" }),
      /records: \[0\]: missing field "prompt"/,
    );
    const t = datasetFromRecords([{ text: "a", label: 1 }], { tokenizer: gpt2, format: "text" });
    assert.equal(t.format, "text");
  });
});

describe("bad records", () => {
  test("error mode: the first bad record stops loading, naming file, line and field", async () => {
    const rows: unknown[] = Array.from({ length: 16 }, (_, i) => ({ prompt: `q${i}`, completion: ` a${i}` }));
    rows.push({ prompt: "q", completion: 5 });
    const p = file("data.jsonl", jsonl(rows));
    await assert.rejects(loadDataset(p, { tokenizer: gpt2, cacheDir: null }), (e: Error) => {
      assert.ok(e instanceof DatasetError && e instanceof PeftkitError);
      assert.equal(e.message, `${p}:17: field "completion" must be a string, got number`);
      return true;
    });
  });

  test("skip mode: every skipped record is reported, in file order", async () => {
    const p = join(FIX, "bad.jsonl");
    const ds = await loadDataset(p, { tokenizer: gpt2, cacheDir: null, onBadRecord: "skip" });
    assert.deepEqual(
      ds.examples.map((e) => e.source),
      [1, 2, 7].map((l) => `${p}:${l}`),
    );
    assert.equal(ds.skipped.length, 4);
    assert.match(ds.skipped[0], new RegExp(`^${p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:3: malformed JSON: `));
    assert.deepEqual(ds.skipped.slice(1), [
      `${p}:4: field "completion" must be a string, got number`,
      `${p}:6: missing field "prompt"`,
      `${p}:8: expected a JSON object, got array`,
    ]);
    await assert.rejects(loadDataset(p, { tokenizer: gpt2, cacheDir: null }), (e: Error) => e.message.startsWith(`${p}:3: malformed JSON`));
  });

  test("an empty dataset, or one with only bad records, is an error", async () => {
    await assert.rejects(loadDataset(file("e.json", "[]"), { tokenizer: gpt2, cacheDir: null }), /no records/);
    await assert.rejects(loadDataset(file("e.jsonl", "\n\n"), { tokenizer: gpt2, cacheDir: null }), /no records/);
    const allBad = file("b.jsonl", jsonl([{ text: "a" }, { text: 1 }]).replace('{"text":"a"}', "{oops"));
    await assert.rejects(
      loadDataset(allBad, { tokenizer: gpt2, cacheDir: null, onBadRecord: "skip", format: "text" }),
      (e: Error) => e instanceof DatasetError && /no usable records: all 2 were bad; the first: .*:1: malformed JSON/.test(e.message),
    );
  });
});

describe("truncation", () => {
  const ids = (s: string) => gpt2.encode(s, { addSpecialTokens: false });
  const eos = 50256;

  test("text keeps the start", () => {
    const body = [...ids("one two three four five six seven"), eos];
    const ds = datasetFromRecords([{ text: "one two three four five six seven" }], { tokenizer: gpt2, maxLength: 4 });
    assert.deepEqual(ds.examples[0].inputIds, body.slice(0, 4));
    assert.equal(ds.truncated, 1);
  });

  test("prompt_completion keeps the completion and the end of the prompt", () => {
    const prompt = ids("a b c d e f g h");
    const completion = ids(" x y");
    const ds = datasetFromRecords([{ prompt: "a b c d e f g h", completion: " x y" }], { tokenizer: gpt2, maxLength: 6 });
    const e = ds.examples[0];
    assert.deepEqual(e.inputIds, [...prompt.slice(prompt.length - 3), ...completion, eos]);
    assert.deepEqual(e.labels, [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, ...completion, eos]);
    // A completion too long to fit: half the room for the prompt's end, the rest for the completion's start.
    const long = ids(" one two three four five six");
    const cut = datasetFromRecords([{ prompt: "a b c d e f g h", completion: " one two three four five six" }], {
      tokenizer: gpt2,
      maxLength: 5,
    }).examples[0];
    assert.deepEqual(cut.inputIds, [...prompt.slice(prompt.length - 2), ...long.slice(0, 3)]);
    assert.deepEqual(cut.labels, [IGNORE_INDEX, IGNORE_INDEX, ...long.slice(0, 3)]);
    const fits = datasetFromRecords([{ prompt: "a b", completion: " x y" }], { tokenizer: gpt2, maxLength: 6 });
    assert.equal(fits.truncated, 0);
  });

  test("chat keeps the start; maxLength below the minimum is rejected", () => {
    const rec = {
      messages: [
        { role: "user", content: "Hello there, how are you?" },
        { role: "assistant", content: "Fine." },
      ],
    };
    const full = datasetFromRecords([rec], { tokenizer: qwen }).examples[0];
    const cut = datasetFromRecords([rec], { tokenizer: qwen, maxLength: 12 }).examples[0];
    assert.deepEqual(cut.inputIds, full.inputIds.slice(0, 12));
    assert.deepEqual(cut.labels, full.labels!.slice(0, 12));
    assert.throws(
      () => datasetFromRecords([{ prompt: "a", completion: "b" }], { tokenizer: gpt2, maxLength: 1 }),
      /maxLength 1 is too short/,
    );
  });
});

describe("tokenisation cache", () => {
  test("a second load reads the cache; changing the data, maxLength or the mode misses", async () => {
    const cacheDir = join(scratch, "cache");
    const p = file(
      "d.jsonl",
      jsonl([
        { prompt: "p1", completion: " c1" },
        { prompt: "p2", completion: 2 },
      ]),
    );
    const opts = { tokenizer: gpt2, cacheDir, onBadRecord: "skip" as const, maxLength: 64 };
    const first = await loadDataset(p, opts);
    assert.equal(first.fromCache, false);
    assert.ok(first.cacheFile?.startsWith(cacheDir));

    // Make tokenising impossible: a hit must not need the tokenizer's encode.
    const encode = gpt2.encode;
    gpt2.encode = () => {
      throw new Error("tokenizer called on a cache hit");
    };
    let second: Awaited<ReturnType<typeof loadDataset>>;
    try {
      second = await loadDataset(p, opts);
    } finally {
      gpt2.encode = encode;
    }
    assert.equal(second.fromCache, true);
    assert.equal(second.cacheFile, first.cacheFile);
    assert.deepEqual([second.examples, second.skipped, second.format], [first.examples, first.skipped, first.format]);

    assert.equal((await loadDataset(p, { ...opts, maxLength: 32 })).fromCache, false);
    await assert.rejects(loadDataset(p, { ...opts, onBadRecord: "error" }), /got number/);
    writeFileSync(p, jsonl([{ prompt: "p1", completion: " changed" }]));
    const third = await loadDataset(p, opts);
    assert.equal(third.fromCache, false);
    assert.notEqual(third.cacheFile, first.cacheFile);
    assert.equal(gpt2.decode(third.examples[0].inputIds), `p1 changed${EOS}`);
    assert.equal((await loadDataset(p, opts)).fromCache, true);
  });

  test("classification and text folders round-trip through the cache; a corrupt cache file is rebuilt", async () => {
    const cacheDir = join(scratch, "cache2");
    const c = file("d.csv", "text,label\ngood,pos\nbad,neg\n");
    const a = await loadDataset(c, { tokenizer: gpt2, cacheDir });
    const b = await loadDataset(c, { tokenizer: gpt2, cacheDir });
    assert.equal(b.fromCache, true);
    assert.deepEqual([b.examples, b.labelNames, b.numLabels], [a.examples, a.labelNames, a.numLabels]);
    writeFileSync(a.cacheFile!, "garbage");
    const rebuilt = await loadDataset(c, { tokenizer: gpt2, cacheDir });
    assert.equal(rebuilt.fromCache, false);
    assert.deepEqual(rebuilt.examples, a.examples);

    const dir = join(scratch, "texts");
    mkdirSync(dir);
    writeFileSync(join(dir, "1.txt"), "alpha");
    writeFileSync(join(dir, "2.txt"), "beta");
    const t1 = await loadDataset(dir, { tokenizer: gpt2, cacheDir });
    assert.equal((await loadDataset(dir, { tokenizer: gpt2, cacheDir })).fromCache, true);
    writeFileSync(join(dir, "3.txt"), "gamma");
    const t2 = await loadDataset(dir, { tokenizer: gpt2, cacheDir });
    assert.equal(t2.fromCache, false);
    assert.equal(t2.examples.length, t1.examples.length + 1);
  });

  test("the cache key includes the tokenizer: another tokenizer misses", async () => {
    const cacheDir = join(scratch, "cache3");
    const p = file("d.jsonl", jsonl([{ text: "hello" }]));
    await loadDataset(p, { tokenizer: gpt2, cacheDir });
    const q = await loadDataset(p, { tokenizer: qwen, cacheDir });
    assert.equal(q.fromCache, false);
    assert.deepEqual(q.examples[0].inputIds, [...qwen.encode("hello", { addSpecialTokens: false }), qwen.eosTokenId]);
  });
});
