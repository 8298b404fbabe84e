/**
 * Crash tests of checkpointing through the real CLI: PEFTKIT_FAULT_AT kills the run (SIGKILL) at
 * each named point of a checkpoint, metrics or final-adapter write, and `--resume` must then start
 * from the newest complete checkpoint and end with the adapter of an uninterrupted run. The same
 * hook sends SIGINT at the last step, its eval and the final save: the run must finish.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { readSafetensors } from "../io/safetensors.js";
import { REPO_ROOT } from "../testing/paths.js";
import { latestCheckpoint } from "./checkpoint.js";

const CLI = join(REPO_ROOT, "dist/src/cli/main.js");
const MODEL = join(REPO_ROOT, "models/wordnet-llama");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-fault-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const data = join(tmp, "train.jsonl");
const WORDS = ["dog animal", "oak tree", "rose flower", "car vehicle", "apple fruit", "bus vehicle"];
writeFileSync(
  data,
  `${Array.from({ length: 24 }, (_, i) => {
    const [w, k] = WORDS[i % WORDS.length].split(" ");
    return JSON.stringify({ prompt: `a ${w} is a kind of`, completion: ` ${k}` });
  }).join("\n")}\n`,
);
// 4 steps, checkpoints at 2 and 4 (the final one), only the newest kept.
const ARGS = [
  "train",
  "--model",
  MODEL,
  "--data",
  data,
  "--batch-size",
  "4",
  "--lr",
  "2e-3",
  "--r",
  "4",
  "--dropout",
  "0.1",
  "--eval-fraction",
  "0",
  "--seed",
  "7",
  "--max-steps",
  "4",
  "--save-steps",
  "2",
  "--save-total-limit",
  "1",
];

/** Rewrites a checkpoint in place with its own contents (argv[1]: the checkpoint folder). */
const REWRITE_CHECKPOINT = `
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
const { loadCheckpoint, saveCheckpoint } = await import(${JSON.stringify(join(REPO_ROOT, "dist/src/train/checkpoint.js"))});
const ck = process.argv[1];
const { state, optimizer } = loadCheckpoint(ck);
saveCheckpoint(dirname(ck), state, optimizer, (dir) => {
  mkdirSync(dir, { recursive: true });
  for (const f of ["adapter_model.safetensors", "adapter_config.json"]) copyFileSync(join(ck, f), join(dir, f));
});
`;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[], fault?: string): Run {
  const env: NodeJS.ProcessEnv = { ...process.env, FORCE_COLOR: "0" };
  delete env.PEFTKIT_FAULT_AT;
  if (fault) env.PEFTKIT_FAULT_AT = fault;
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

function crash(args: string[], fault: string): void {
  const r = cli(args, fault);
  assert.equal(r.signal, "SIGKILL", `${fault} was never reached (exit ${r.code}): ${r.stderr}`);
}

function adapterOf(dir: string): Record<string, Float32Array> {
  const t = readSafetensors(join(dir, "adapter_model.safetensors")).tensors;
  return Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v.data as Float32Array]));
}

function metricSteps(dir: string): number[] {
  return readFileSync(join(dir, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l).step as number);
}

/** The newest checkpoint after a crash must be a whole one: state, optimizer and adapter all load. */
function checkNewest(dir: string, step: number, label: string): void {
  const ck = latestCheckpoint(dir);
  if (step === 0) {
    assert.equal(ck, null, `${label}: ${ck}`);
    return;
  }
  assert.ok(ck && new RegExp(`checkpoint-${step}(\\.old-\\d+)?$`).test(ck), `${label}: newest is ${ck}, want checkpoint-${step}`);
  assert.equal(JSON.parse(readFileSync(join(ck, "trainer_state.json"), "utf8")).step, step, label);
  readSafetensors(join(ck, "optimizer.safetensors"));
  adapterOf(ck);
  JSON.parse(readFileSync(join(ck, "adapter_config.json"), "utf8"));
}

describe("checkpoints survive a crash at any point", () => {
  const straight = join(tmp, "straight");
  let want: Record<string, Float32Array> = {};

  const resumeAndCompare = (dir: string, step: number, label: string) => {
    const r = cli([...ARGS, "--output-dir", dir, "--resume"]);
    assert.equal(r.code, 0, `${label}: ${r.stderr}`);
    if (step === 0) assert.match(r.stdout, /no checkpoint in .*starting from scratch/, label);
    else assert.match(r.stdout, new RegExp(`resuming from .*checkpoint-${step} \\(step ${step}\\)`), label);
    const got = adapterOf(dir);
    assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort(), label);
    for (const [k, w] of Object.entries(want))
      w.forEach((v, i) => {
        assert.ok(Math.abs(v - got[k][i]) <= 1e-6, `${label}: ${k}[${i}] ${v} vs ${got[k][i]}`);
      });
    assert.deepEqual(metricSteps(dir), [1, 2, 3, 4], label);
    const junk = readdirSync(dir).filter((n) => /\.(tmp|old)-/.test(n));
    assert.deepEqual(junk, [], label);
  };

  test("an uninterrupted run (the reference)", () => {
    const r = cli([...ARGS, "--output-dir", straight]);
    assert.equal(r.code, 0, r.stderr);
    want = adapterOf(straight);
    assert.deepEqual(metricSteps(straight), [1, 2, 3, 4]);
  });

  // [fault point, step of the newest complete checkpoint it leaves]
  const POINTS: [string, number][] = [
    ["write:adapter_model.safetensors#1", 0], // first checkpoint, adapter half written
    ["checkpoint:optimizer#1", 0],
    ["checkpoint:state#1", 0], // whole folder written, not yet renamed in
    ["checkpoint:saved#1", 2],
    ["write:trainer_state.json#2", 2], // second checkpoint: the first must survive
    ["checkpoint:state#2", 2],
    ["dir:removing#1", 4], // pruning the older one cut short
    ["write:adapter_model.safetensors#3", 4], // the final adapter
    ["write:adapter_config.json#3", 4],
  ];
  for (const [point, step] of POINTS) {
    test(`killed at ${point}: resumes from ${step ? `checkpoint-${step}` : "scratch"} to the same adapter`, () => {
      const dir = join(tmp, point.replace(/[^a-z0-9]+/gi, "_"));
      crash([...ARGS, "--output-dir", dir], point);
      assert.ok(!existsSync(join(dir, "adapter_config.json")), `${point}: a crashed run must not look finished`);
      checkNewest(dir, step, point);
      if (point === "checkpoint:state#2") {
        // metrics.jsonl has steps 3-4 past checkpoint-2: kill the resume while it rewrites the file.
        crash([...ARGS, "--output-dir", dir, "--resume"], "write:metrics.jsonl#1");
        checkNewest(dir, step, `${point}, then metrics.jsonl`);
      }
      resumeAndCompare(dir, step, point);
    });
  }

  test("killed while a checkpoint of the same step is replaced: it is never lost", () => {
    // A run that crashed writing its final adapter leaves checkpoint-2 and checkpoint-4.
    const setup = join(tmp, "replace-setup");
    crash([...ARGS, "--save-total-limit", "3", "--output-dir", setup], "write:adapter_config.json#3");
    // A fresh run there would leave checkpoints of two runs side by side: refused.
    const fresh = cli([...ARGS, "--save-total-limit", "3", "--output-dir", setup]);
    assert.equal(fresh.code, 1, fresh.stderr);
    assert.match(fresh.stderr, /holds checkpoints of an earlier run \(checkpoint-4\); pass --resume/);
    // The CLI therefore never rewrites a step's checkpoint; the library can (a Trainer run into a
    // used folder), so saveCheckpoint rewrites checkpoint-4 in a child process that is killed.
    for (const point of ["dir:old-moved#1", "dir:replaced#1"]) {
      const dir = join(tmp, point.replace(/[^a-z0-9]+/gi, "_"));
      cpSync(setup, dir, { recursive: true });
      const r = spawnSync(process.execPath, ["--input-type=module", "-e", REWRITE_CHECKPOINT, join(dir, "checkpoint-4")], {
        encoding: "utf8",
        env: { ...process.env, PEFTKIT_FAULT_AT: point },
      });
      assert.equal(r.signal, "SIGKILL", `${point} was never reached (exit ${r.status}): ${r.stderr}`);
      checkNewest(dir, 4, point);
      resumeAndCompare(dir, 4, point);
    }
  });
});

describe("SIGINT at the end of a run", () => {
  const cases: [string, string[]][] = [
    ["train:step#4@SIGINT", ["--save-steps", "0"]], // during the last step, no periodic checkpoints
    ["train:eval#1@SIGINT", ["--eval-fraction", "0.25"]], // during the final evaluation
    ["train:final-save#1@SIGINT", []],
  ];
  for (const [point, extra] of cases) {
    test(`${point}: the run finishes with the final adapter and checkpoint`, () => {
      const dir = join(tmp, point.replace(/[^a-z0-9]+/gi, "_"));
      const r = cli([...ARGS, ...extra, "--output-dir", dir], point);
      assert.equal(r.code, 0, r.stderr);
      // (During the synchronous final save the handler may only run after the run is done.)
      if (!point.startsWith("train:final-save")) assert.match(r.stderr, /interrupt: finishing this step/);
      assert.match(r.stdout, /steps\s+4 \(max steps\)/);
      assert.ok(existsSync(join(dir, "adapter_config.json")));
      assert.ok(latestCheckpoint(dir)?.endsWith("checkpoint-4"));
    });
  }

  test("train:step#3@SIGINT with --save-steps 0: exit 1 and a checkpoint at step 3 that resumes", () => {
    const dir = join(tmp, "sigint-mid");
    const args = [...ARGS, "--save-steps", "0", "--output-dir", dir];
    const r = cli(args, "train:step#3@SIGINT");
    assert.equal(r.code, 1, r.stderr);
    assert.ok(!existsSync(join(dir, "adapter_config.json")));
    assert.ok(latestCheckpoint(dir)?.endsWith("checkpoint-3"));
    const again = cli([...args, "--resume"]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /resuming from .*checkpoint-3/);
  });
});
