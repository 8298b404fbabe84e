import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { readSuiteFile, resolveSuite } from "./suite.js";

const tmp = mkdtempSync(join(tmpdir(), "peftkit-suite-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
writeFileSync(join(tmp, "train.jsonl"), '{"text":"a","label":"x"}\n');
writeFileSync(join(tmp, "eval.jsonl"), '{"text":"b","label":"x"}\n');

function suite(yaml: string): string {
  const p = join(tmp, `s${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(p, yaml);
  return p;
}

const TASK = "  - name: t1\n    model: .\n    train: train.jsonl\n    eval: eval.jsonl\n    metric: accuracy\n";

describe("suite files", () => {
  test("a valid suite resolves its paths against the file's folder", () => {
    const s = readSuiteFile(suite(`name: mine\ntasks:\n${TASK}    chance: 0.5\n`));
    assert.equal(s.name, "mine");
    assert.equal(s.tasks[0].train, join(tmp, "train.jsonl"));
    assert.equal(s.tasks[0].chance, 0.5);
  });

  test("per-task settings: max_steps, batch_size, max_length", () => {
    const s = readSuiteFile(suite(`name: mine\ntasks:\n${TASK}    max_steps: 50\n    batch_size: 4\n    max_length: 64\n`));
    assert.deepEqual([s.tasks[0].maxSteps, s.tasks[0].batchSize, s.tasks[0].maxLength], [50, 4, 64]);
    assert.equal(readSuiteFile(suite(`name: mine\ntasks:\n${TASK}`)).tasks[0].maxSteps, undefined);
  });

  test("malformed suites: one line naming the file and the field", () => {
    const cases: [string, RegExp][] = [
      ["name: x\ntasks: []\n", /: tasks: must be a non-empty list/],
      [`tasks:\n${TASK}`, /: name: must be a string/],
      [`name: x\ntasks:\n${TASK.replace("accuracy", "bleu")}`, /tasks\[0\]\.metric: must be one of accuracy, .*got "bleu"/],
      [`name: x\ntasks:\n${TASK.replace("    train: train.jsonl\n", "")}`, /tasks\[0\]\.train: missing/],
      [`name: x\ntasks:\n${TASK.replace("train.jsonl", "nope.jsonl")}`, /tasks\[0\]\.train: nope\.jsonl: no such file/],
      [`name: x\ntasks:\n${TASK.replace("name: t1", "name: T 1")}`, /tasks\[0\]\.name: "T 1" must match/],
      [`name: x\ntasks:\n${TASK}${TASK}`, /tasks\[1\]\.name: "t1" is used by an earlier task/],
      [`name: x\ntasks:\n${TASK}    epochs: 3\n`, /tasks\[0\]\.epochs: unknown field/],
      [`name: x\ntasks:\n${TASK}    chance: high\n`, /tasks\[0\]\.chance: must be a number/],
      [`name: x\ntasks:\n${TASK}    max_steps: 0\n`, /tasks\[0\]\.max_steps: must be a whole number ≥ 1, got 0/],
      [`name: x\ntasks:\n${TASK}    batch_size: big\n`, /tasks\[0\]\.batch_size: must be a whole number ≥ 1, got "big"/],
      [`name: x\ntasks:\n${TASK}    max_length: 1.5\n`, /tasks\[0\]\.max_length: must be a whole number ≥ 1, got 1\.5/],
      ["name: x\ntasks: [\n", /not valid YAML/],
    ];
    for (const [yaml, re] of cases) {
      const p = suite(yaml);
      assert.throws(
        () => readSuiteFile(p),
        (e: Error) => re.test(e.message) && e.message.includes(p) && !e.message.includes("\n"),
        `${yaml} → ${re}`,
      );
    }
  });

  test("an unknown suite name lists the built-in suites", async () => {
    await assert.rejects(resolveSuite("glue", tmp), /--suite glue: unknown suite \(built-in suites: /);
  });
});
