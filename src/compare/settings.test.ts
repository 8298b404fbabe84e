import assert from "node:assert/strict";
import { test } from "node:test";
import { runId } from "./plan.js";
import { effectiveSettings } from "./settings.js";
import type { CompareTask } from "./task.js";

const task: CompareTask = { name: "t", description: "", model: "m", train: "a", eval: "b", metric: "accuracy" };
const cli = { lr: 1e-3, maxSteps: 100, runSeconds: null, batchSize: 8, maxLength: 256, warmup: 0.1 };

test("the task's own fields win over the command line; max length stops at the model's positions", () => {
  assert.deepEqual(effectiveSettings(task, cli, null), cli);
  assert.equal(effectiveSettings(task, cli, 128).maxLength, 128);
  assert.equal(effectiveSettings(task, { ...cli, maxLength: 64 }, 128).maxLength, 64);
  const own = effectiveSettings({ ...task, maxSteps: 30, batchSize: 4, maxLength: 512 }, cli, 128);
  assert.deepEqual(own, { ...cli, maxSteps: 30, batchSize: 4, maxLength: 128 });
  // Prompt/prefix soft tokens take positions too.
  assert.equal(effectiveSettings(task, cli, 128, 20).maxLength, 108);
  assert.equal(effectiveSettings(task, { ...cli, maxLength: 64 }, 128, 20).maxLength, 64);
  assert.equal(effectiveSettings(task, cli, null, 20).maxLength, 256);
});

test("a changed task budget gives new run ids (no reuse of rows trained otherwise)", () => {
  const id = (t: CompareTask) => runId(t.name, "lora", { knob: "r", value: 8 }, 0, effectiveSettings(t, cli, 128));
  assert.notEqual(id({ ...task, maxSteps: 30 }), id(task));
  assert.notEqual(id({ ...task, batchSize: 4 }), id(task));
  assert.notEqual(id({ ...task, maxLength: 64 }), id(task));
  assert.equal(id({ ...task, maxLength: 300 }), id(task), "both clamp to 128");
});
