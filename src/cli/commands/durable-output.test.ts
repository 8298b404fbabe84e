/**
 * `merge` and `eval --output` write their files crash-safely: every file fsynced before it is
 * renamed into place (or moved with its folder), and each folder fsynced after the rename.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { durabilityProblems, traceFs } from "../../testing/fs-trace.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { getPeftModel } from "../../tuners/index.js";
import { evalCommand } from "./eval.js";
import { mergeCommand } from "./merge.js";

const MODEL = join(REPO_ROOT, "models/wordnet-llama");
const root = mkdtempSync(join(tmpdir(), "peftkit-durable-"));
after(() => rmSync(root, { recursive: true, force: true }));

const quietly = async <T>(fn: () => Promise<T>): Promise<T> => {
  const log = console.log;
  console.log = () => {};
  try {
    return await fn();
  } finally {
    console.log = log;
  }
};

describe("CLI outputs are written fsync-then-rename", () => {
  const adapter = join(root, "adapter");
  test("merge", async () => {
    const model = await AutoModelForCausalLM.fromPretrained(MODEL);
    getPeftModel(model, { peftType: "LORA", r: 2, targetModules: ["q_proj"] }).savePretrained(adapter);
    await model.release();
    const out = join(root, "merged");
    const { result, events } = await traceFs(() =>
      quietly(() => mergeCommand.run({ model: MODEL, adapter, outputDir: out, dtype: "f32", safeMerge: true })),
    );
    assert.equal(result, 0);
    assert.ok(
      events.some((e) => e.op === "copy" && e.path.endsWith("tokenizer.json")),
      "the tokenizer is copied",
    );
    assert.deepEqual(durabilityProblems(events, root), []);
    assert.ok(existsSync(join(out, "config.json")) && existsSync(join(out, "tokenizer.json")));
    assert.deepEqual(
      readdirSync(root).filter((n) => n.includes(".tmp-")),
      [],
    );
  });

  test("eval --output", async () => {
    const data = join(root, "eval.jsonl");
    writeFileSync(data, `${JSON.stringify({ text: "a poodle is a kind of dog" })}\n`);
    const output = join(root, "results.json");
    const { result, events } = await traceFs(() =>
      quietly(() =>
        evalCommand.run({ model: MODEL, adapter, data, output, batchSize: 4, maxLength: 64, exactMatchLimit: 0, onBadRecord: "error" }),
      ),
    );
    assert.equal(result, 0);
    assert.ok(existsSync(output));
    assert.deepEqual(durabilityProblems(events, root), []);
  });
});
