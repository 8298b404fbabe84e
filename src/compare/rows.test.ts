import assert from "node:assert/strict";
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { appendRow, type CompareRow, readRows, repairRows } from "./rows.js";

const tmp = mkdtempSync(join(tmpdir(), "peftkit-rows-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const row = (id: string) => ({ run_id: id, task: "t", method: "lora", metric_value: 1 }) as unknown as CompareRow;

describe("rows.jsonl", () => {
  test("appended rows read back; a torn last line is dropped and cut off before the next append", () => {
    const p = join(tmp, "a.jsonl");
    appendRow(p, row("a"));
    appendRow(p, row("b"));
    appendFileSync(p, '{"run_id":"c","ta');
    const r = readRows(p);
    assert.deepEqual(
      r.rows.map((x) => x.run_id),
      ["a", "b"],
    );
    assert.equal(r.torn, true);
    repairRows(p);
    appendRow(p, row("c"));
    assert.deepEqual(
      readRows(p).rows.map((x) => x.run_id),
      ["a", "b", "c"],
    );
    assert.equal(readFileSync(p, "utf8").split("\n").length, 4);
  });

  test("a bad line before the last is an error naming the line", () => {
    const p = join(tmp, "b.jsonl");
    writeFileSync(p, '{"run_id":"a"}\nnot json\n{"run_id":"b"}\n');
    assert.throws(() => readRows(p), /b\.jsonl: line 2 is not a JSON row/);
  });

  test("a whole last line that is not JSON (with its newline) is not a torn write", () => {
    const p = join(tmp, "c.jsonl");
    writeFileSync(p, '{"run_id":"a"}\nnot json\n');
    assert.throws(() => readRows(p), /line 2/);
  });

  test("an absent file has no rows", () => {
    assert.deepEqual(readRows(join(tmp, "none.jsonl")).rows, []);
  });
});
