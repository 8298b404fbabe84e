import assert from "node:assert/strict";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { trainableCount } from "../../compare/param-count.js";
import { PreTrainedModel } from "../../models/pretrained.js";
import { runCli } from "../../testing/cli.js";
import { tempDir } from "../../testing/train-cli.js";
import { methodConfig } from "../../train/methods.js";
import { parseFlags } from "../args.js";
import { headFor } from "../load.js";
import { trainCommand } from "./train.js";

const stateFile = (dir: string, method = "bo") => {
  const f = readdirSync(dir).find((n) => n.startsWith("search-") && n.endsWith(`-${method}-s0.jsonl`));
  assert.ok(f, `no state file in ${dir}: ${readdirSync(dir).join(", ")}`);
  return join(dir, f);
};
const keys = (path: string) =>
  readFileSync(path, "utf8")
    .trim()
    .split("\n")
    .map((l) => (JSON.parse(l) as { key: string }).key);

test("search --synthetic killed after 5 evaluations resumes with the same proposals", () => {
  const whole = tempDir("search-whole");
  const args = ["search", "--synthetic", "--budget", "12", "--n-init", "3"];
  assert.equal(runCli([...args, "--output-dir", whole]).code, 0);
  const dir = tempDir("search-killed");
  const killed = runCli([...args, "--output-dir", dir], { PEFTKIT_FAULT_AT: "search-evaluation-recorded#5" });
  assert.equal(killed.signal, "SIGKILL");
  assert.equal(keys(stateFile(dir)).length, 5);
  const resumed = runCli([...args, "--output-dir", dir]);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stdout, /5 evaluation\(s\) already in/);
  assert.deepEqual(keys(stateFile(dir)), keys(stateFile(whole)));
  // Random search in the same folder shares the initial points and reports next to BO.
  assert.equal(runCli([...args, "--method", "random", "--output-dir", dir]).code, 0);
  assert.deepEqual(keys(stateFile(dir, "random")).slice(0, 3), keys(stateFile(whole)).slice(0, 3));
  const report = readFileSync(join(dir, "search.md"), "utf8");
  assert.match(report, /\| bo \| 0 \| 12 \|/);
  assert.match(report, /\| random \| 0 \| 12 \|/);
  assert.match(report, /## Pareto front: bo, seed 0/);
});

test("a space with no valid configuration, or an unknown field, is one line and exit 2", () => {
  const dir = tempDir("search-bad");
  const empty = join(dir, "empty.yaml");
  writeFileSync(empty, "methods:\n  lora:\n    r: [40, 60]\n  prompt:\n    tokens: {values: []}\n");
  let r = runCli(["search", "--space", empty, "--output-dir", join(dir, "out")]);
  assert.equal(r.code, 2);
  assert.equal(
    r.stderr,
    `peftkit: ${empty}: search space has no valid configuration (lora: r range holds no value; prompt: tokens range holds no value)\n`,
  );
  const unknown = join(dir, "unknown.yaml");
  writeFileSync(unknown, "methods:\n  lora:\n    rank: [1, 8]\n");
  r = runCli(["search", "--space", unknown, "--output-dir", join(dir, "out")]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /methods\.lora\.rank: unknown field for lora \(fields: r, target_modules, layers\)\n$/);
  const target = join(dir, "target.yaml");
  writeFileSync(target, "methods:\n  lora:\n    r: [4, 8]\n    target_modules: [[q_proj], [nope_proj]]\n");
  r = runCli(["search", "--space", target, "--output-dir", join(dir, "out")]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /methods\.lora\.target_modules\[1\]: .*matched no module/);
});

test("a real search evaluation is a cached compare run, and its front YAML trains the same configuration", async () => {
  const dir = tempDir("search-real");
  const space = join(dir, "space.yaml");
  writeFileSync(space, "methods:\n  lora:\n    r: [2, 2]\n    target_modules: [[q_proj, v_proj]]\n    layers: true\n");
  const args = [
    "search",
    "--space",
    space,
    "--budget",
    "1",
    "--max-steps",
    "1",
    "--batch-size",
    "2",
    "--eval-examples",
    "4",
    "--output-dir",
    dir,
  ];
  const r = runCli(args);
  assert.equal(r.code, 0, r.stderr);
  const rows = readFileSync(join(dir, "rows.jsonl"), "utf8").trim().split("\n");
  assert.equal(rows.length, 1);
  const row = JSON.parse(rows[0]) as { trainable_params: number; run_id: string; task: string };
  assert.equal(row.task, "kind-of-eval4");
  // Rerun: nothing is trained again.
  const again = runCli(args);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /1 evaluation\(s\) already in/);
  assert.equal(readFileSync(join(dir, "rows.jsonl"), "utf8").trim().split("\n").length, 1);
  // The front's YAML, read as `peftkit train --config`, builds the PEFT config the count came from.
  const front = join(dir, "front", "bo-s0");
  const [yamlFile] = readdirSync(front);
  const flags = parseFlags(["--config", join(front, yamlFile), "--output-dir", join(dir, "train")], trainCommand);
  assert.equal(flags.method, "lora");
  assert.equal(flags.r, 2);
  const layers = (flags.layersToTransform as string[] | undefined)?.map(Number);
  const model = await PreTrainedModel.load(flags.model as string, headFor(flags.model as string));
  try {
    const config = methodConfig("lora", { r: 2, target: flags.target as string[], ...(layers ? { layersToTransform: layers } : {}) });
    assert.equal(trainableCount(model, config), row.trainable_params);
    // layers_to_transform really restricts: the count is the one-layer count times the layers on.
    const perLayer = trainableCount(model, methodConfig("lora", { r: 2, target: ["q_proj", "v_proj"], layersToTransform: [0] }));
    assert.equal(row.trainable_params, perLayer * (layers?.length ?? 4));
  } finally {
    await model.release();
  }
});
