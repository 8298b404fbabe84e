import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { AutoTokenizer } from "../../io/tokenizer.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { BatchStream } from "./batching.js";
import { loadDataset } from "./load.js";
import { assignTaskIds, taskTableOf } from "./tasks.js";
import type { Example } from "./tokenize.js";

const dir = mkdtempSync(join(tmpdir(), "peftkit-tasks-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const write = (name: string, rows: object[]) => {
  const p = join(dir, name);
  writeFileSync(p, rows.map((r) => JSON.stringify(r)).join("\n"));
  return p;
};

test("a record's task field survives tokenising and the cache, and becomes the batch's taskIds", async () => {
  const tokenizer = await AutoTokenizer.fromPretrained(join(REPO_ROOT, "models/wordnet-llama"));
  const file = write("d.jsonl", [
    { prompt: "a dog is", completion: " animal", task: "kind" },
    { prompt: "dog has", completion: " 3", task: "count" },
    { text: "ignored", prompt: "b", completion: " c", task: "kind" },
  ]);
  for (const pass of ["fresh", "cached"]) {
    const ds = await loadDataset(file, { tokenizer, maxLength: 64, cacheDir: join(dir, "cache") });
    assert.equal(ds.fromCache, pass === "cached");
    assert.deepEqual(
      ds.examples.map((e) => e.task),
      ["kind", "count", "kind"],
    );
    const { table, count } = taskTableOf(ds.examples);
    assert.deepEqual([table.names, count], [["count", "kind"], 2]);
    assignTaskIds(ds.examples, table, count, false);
    const b = new BatchStream(ds.examples, { batchSize: 3, seed: 0, padId: 0, shuffle: false }).batch(0, 0);
    assert.deepEqual(b.taskIds, [1, 0, 1]);
    assert.throws(
      () => new BatchStream(ds.examples, { batchSize: 3, seed: 0, padId: 0, pack: true, seqLen: 16 }),
      /packing puts several examples in one row, but task ids are per row/,
    );
  }
});

test("task tables: sorted names, integer rows, no mixing; a missing task is named", () => {
  const ex = (task?: string | number, source = "d.jsonl:1"): Example => ({ inputIds: [1], labels: [1], source, task });
  assert.deepEqual(taskTableOf([ex(2), ex(0)]), { table: { names: [] }, count: 3 });
  assert.deepEqual(taskTableOf([ex(), ex()]), { table: { names: [] }, count: 1 });
  assert.throws(
    () => taskTableOf([ex("a"), ex(1, "d.jsonl:2")]),
    /d\.jsonl:2: field "task" is a number, but other records name their tasks/,
  );
  const none = [ex(), ex()];
  assignTaskIds(none, { names: [] }, 1, true);
  assert.deepEqual(
    none.map((e) => e.taskId),
    [0, 0],
  );
  const some = [ex("a"), ex(undefined, "d.jsonl:7")];
  assert.throws(() => assignTaskIds(some, { names: ["a"] }, 1, true), /d\.jsonl:7: no task given; the routing table has 1 task: "a"/);
  const mixed = [ex("a"), ex("b")];
  mixed[0].taskId = 0;
  assert.throws(() => new BatchStream(mixed, { batchSize: 2, seed: 0, padId: 0 }), /d\.jsonl:1: this example has no task, but others do/);
});
