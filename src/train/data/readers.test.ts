import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { PeftkitError } from "../../engine/errors.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { DatasetError } from "./errors.js";
import { detectFormat, formatOfFields } from "./formats.js";
import { writeParquet } from "./parquet-writer.test-util.js";
import { readSource, sourceFingerprint } from "./readers.js";

const FIX = join(REPO_ROOT, "test/fixtures/data");
const scratch = mkdtempSync(join(tmpdir(), "peftkit-readers-"));
after(() => rmSync(scratch, { recursive: true, force: true }));
let n = 0;
function file(name: string, content: string | Uint8Array): string {
  const dir = join(scratch, String(n++));
  mkdirSync(dir);
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
}

describe("JSONL", () => {
  test("records keep their line numbers; bad lines become errors, blank lines are not records", async () => {
    const p = join(FIX, "bad.jsonl");
    const { records, kind } = await readSource(p);
    assert.equal(kind, "jsonl");
    assert.deepEqual(
      records.map((r) => r.where),
      [1, 2, 3, 4, 6, 7, 8].map((l) => `${p}:${l}`),
    );
    assert.deepEqual(records[0].value, { prompt: "The capital of France is", completion: " Paris" });
    assert.match(records[2].error!, /^malformed JSON: /);
    assert.equal(records[3].value!.completion, 7);
    assert.equal(records[6].error, "expected a JSON object, got array");
  });

  test("CRLF line ends and a byte-order mark", async () => {
    const p = file("d.jsonl", '\ufeff{"text":"a"}\r\n\r\n{"text":"b"}\r\n');
    const { records } = await readSource(p);
    assert.deepEqual(
      records.map((r) => [r.where, r.value]),
      [
        [`${p}:1`, { text: "a" }],
        [`${p}:3`, { text: "b" }],
      ],
    );
  });
});

describe("JSON", () => {
  test("a top-level array: records are named by index", async () => {
    const p = file("d.json", JSON.stringify([{ text: "a" }, 5, { text: "c" }]));
    const { records } = await readSource(p);
    assert.deepEqual(
      records.map((r) => r.where),
      [0, 1, 2].map((i) => `${p}: [${i}]`),
    );
    assert.equal(records[1].error, "expected an object, got number");
    assert.deepEqual(records[2].value, { text: "c" });
  });

  test('an object with a "data" or "train" array', async () => {
    for (const key of ["data", "train"]) {
      const p = file("d.json", JSON.stringify({ version: 1, [key]: [{ text: "x" }] }));
      const { records } = await readSource(p);
      assert.deepEqual(records, [{ where: `${p}: ${key}[0]`, value: { text: "x" } }]);
    }
  });

  test("other shapes and malformed JSON are file-level DatasetErrors", async () => {
    const p = file("d.json", JSON.stringify({ rows: [] }));
    await assert.rejects(
      readSource(p),
      (e: Error) => e instanceof DatasetError && /"data" or "train" array; found keys \["rows"\]/.test(e.message),
    );
    const q = file("d.json", '[\n{"text": "a"},\n{"text": }\n]');
    await assert.rejects(
      readSource(q),
      (e: Error) => e instanceof PeftkitError && e.message.startsWith(`${q}`) && /malformed JSON/.test(e.message),
    );
  });
});

describe("CSV", () => {
  test("the edge-case fixture: quotes, embedded newlines, CRLF, blank line", async () => {
    const p = join(FIX, "edge.csv");
    const { records } = await readSource(p);
    assert.deepEqual(
      records.map((r) => [r.where, r.value, r.fromText]),
      [
        [`${p}:2`, { text: "Hello, world", label: "pos" }, true],
        [`${p}:3`, { text: 'She said "hi"', label: "neg" }, true],
        [`${p}:4`, { text: "multi\r\nline\nfield", label: "pos" }, true],
        [`${p}:7`, { text: "plain", label: "neg" }, true],
        [`${p}:9`, { text: "", label: "pos" }, true],
      ],
    );
  });

  test("a row with the wrong number of fields is a bad record; a duplicate column is a file error", async () => {
    const p = file("d.csv", "prompt,completion\na,b\nonly one\nc,d,e\n");
    const { records } = await readSource(p);
    assert.deepEqual(
      records.map((r) => [r.where, r.error]),
      [
        [`${p}:2`, undefined],
        [`${p}:3`, "has 1 field, but the header has 2"],
        [`${p}:4`, "has 3 fields, but the header has 2"],
      ],
    );
    const q = file("d.csv", "text,text\na,b\n");
    await assert.rejects(readSource(q), /names column "text" twice/);
    await assert.rejects(readSource(file("e.csv", "")), /empty CSV file/);
  });
});

describe("Parquet", () => {
  test("a file from our own writer, with every column type and nulls, read back by row", async () => {
    const texts = Array.from({ length: 37 }, (_, i) => (i % 7 === 3 ? null : `row ${i}: ${'é,"\n'.repeat(i % 4)}${Math.random()}`));
    const ints = Array.from({ length: 37 }, () => Math.floor(Math.random() * 2 ** 31) - 2 ** 30);
    const bigs = Array.from({ length: 37 }, () => BigInt(Math.floor(Math.random() * 2 ** 50)));
    const dbl = Array.from({ length: 37 }, () => Math.random());
    const p = file(
      "d.parquet",
      writeParquet([
        { name: "text", type: "string", values: texts },
        { name: "n", type: "int32", values: ints },
        { name: "label", type: "int64", values: bigs },
        { name: "x", type: "double", values: dbl },
      ]),
    );
    const { records, kind } = await readSource(p);
    assert.equal(kind, "parquet");
    assert.equal(records.length, 37);
    records.forEach((r, i) => {
      assert.equal(r.where, `${p}: row ${i}`);
      assert.deepEqual(r.value, { text: texts[i], n: ints[i], label: Number(bigs[i]), x: dbl[i] });
    });
  });

  test("the committed fixture is what the writer produces, and reads as expected", async () => {
    const p = join(FIX, "reviews.parquet");
    const rebuilt = writeParquet([
      { name: "text", type: "string", values: ["a great film", "dull and slow", null, "ça marche, « oui »"] },
      { name: "label", type: "int64", values: [1n, 0n, 1n, 1n] },
    ]);
    assert.deepEqual(new Uint8Array(readFileSync(p)), rebuilt);
    const { records } = await readSource(p);
    assert.deepEqual(
      records.map((r) => r.value),
      [
        { text: "a great film", label: 1 },
        { text: "dull and slow", label: 0 },
        { text: null, label: 1 },
        { text: "ça marche, « oui »", label: 1 },
      ],
    );
  });

  test("a file that is not Parquet", async () => {
    await assert.rejects(
      readSource(file("d.parquet", "not parquet at all")),
      (e: Error) => e instanceof DatasetError && /cannot read Parquet file/.test(e.message),
    );
  });
});

describe("text files", () => {
  test("a folder: every .txt file (recursively, in path order) is one text record", async () => {
    const dir = join(scratch, "corpus");
    mkdirSync(join(dir, "sub"), { recursive: true });
    writeFileSync(join(dir, "b.txt"), "second");
    writeFileSync(join(dir, "a.txt"), "first\nline two");
    writeFileSync(join(dir, "sub", "c.txt"), "third");
    writeFileSync(join(dir, "notes.md"), "ignored");
    const { records, kind, fingerprint } = await readSource(dir);
    assert.equal(kind, "txt");
    assert.deepEqual(
      records.map((r) => [r.where, r.value]),
      [
        [join(dir, "a.txt"), { text: "first\nline two" }],
        [join(dir, "b.txt"), { text: "second" }],
        [join(dir, "sub", "c.txt"), { text: "third" }],
      ],
    );
    assert.equal((await sourceFingerprint(dir)).fingerprint, fingerprint);
    // The folder fingerprint follows sizes and modification times.
    utimesSync(join(dir, "b.txt"), new Date(2001, 1, 1), new Date(2001, 1, 1));
    assert.notEqual((await sourceFingerprint(dir)).fingerprint, fingerprint);
    const empty = join(scratch, "empty");
    mkdirSync(empty);
    await assert.rejects(readSource(empty), /holds no \.txt files/);
  });

  test("a single .txt file is one record", async () => {
    const p = file("one.txt", "hello");
    assert.deepEqual((await readSource(p)).records, [{ where: p, value: { text: "hello" } }]);
  });

  test("unknown extensions and missing paths", async () => {
    await assert.rejects(readSource(file("d.xlsx", "")), /unknown dataset file type "\.xlsx"/);
    await assert.rejects(readSource(join(scratch, "nope.jsonl")), /no such file or folder/);
  });
});

describe("format detection", () => {
  test("from the fields present", () => {
    assert.equal(formatOfFields({ text: "a" }), "text");
    assert.equal(formatOfFields({ text: "a", label: 1 }), "classification");
    assert.equal(formatOfFields({ prompt: "a", completion: "b", id: 3 }), "prompt_completion");
    assert.equal(formatOfFields({ messages: [] }), "chat");
    assert.equal(formatOfFields({ prompt: "a" }), null);
  });

  test("from the first readable record; no readable record or unknown fields is an error naming the location", () => {
    assert.equal(
      detectFormat(
        [
          { where: "f:1", error: "malformed JSON" },
          { where: "f:2", value: { prompt: "p", completion: "c" } },
        ],
        "f",
      ),
      "prompt_completion",
    );
    assert.throws(
      () => detectFormat([{ where: "f:2", value: { question: "q", answer: "a" } }], "f"),
      /^DatasetError: f:2: cannot tell the record format from fields \["question","answer"\]/,
    );
    assert.throws(() => detectFormat([{ where: "f:1", error: "malformed JSON: x" }], "f"), /f:1: malformed JSON: x/);
    assert.throws(() => detectFormat([], "f"), /f: no records/);
  });
});
