/**
 * `peftkit train --method snella` end to end on the embedded model: the allocator's numbers in
 * metrics.jsonl, the saved adapter reloads to the same outputs, and a run killed with SIGKILL
 * resumes to the weights (and fed ratios) of an uninterrupted run.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { readSafetensors } from "../../io/safetensors.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { maxAbsDiff } from "../conformance.js";
import { PeftModel } from "../peft-model.js";

const CLI = join(REPO_ROOT, "dist/src/cli/main.js");
const MODEL = join(REPO_ROOT, "models/wordnet-llama");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-snell-cli-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function run(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, FORCE_COLOR: "0" } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const data = join(tmp, "train.jsonl");
const WORDS = ["dog", "oak", "rose", "car", "apple", "lion"];
const KIND = ["animal", "tree", "flower", "vehicle", "fruit", "animal"];
writeFileSync(
  data,
  `${Array.from({ length: 24 }, (_, i) => JSON.stringify({ prompt: `a ${WORDS[i % 6]} is a kind of`, completion: ` ${KIND[i % 6]}` })).join("\n")}\n`,
);
const TRAIN = [
  "train",
  "--model",
  MODEL,
  "--data",
  data,
  "--method",
  "snella",
  "--r",
  "4",
  "--target",
  "q_proj,v_proj",
  "--snella-target-ratio",
  "0.7",
  "--snella-mask-interval",
  "2",
  "--batch-size",
  "4",
  "--lr",
  "2e-3",
  "--eval-fraction",
  "0",
  "--seed",
  "7",
  "--max-steps",
  "12",
  "--save-steps",
  "3",
];

test("snella: trains with the allocator's sparsity in metrics.jsonl, saves, reloads to the same outputs", async () => {
  const out = join(tmp, "run");
  const r = run([...TRAIN, "--output-dir", out]);
  assert.equal(r.code, 0, r.stderr);
  const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
  assert.equal(cfg.peft_type, "SNELLA");
  assert.equal(cfg.target_ratio, 0.7);
  const records = readFileSync(join(out, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))
    .filter((x) => x.loss !== undefined);
  assert.ok(records.every((x) => typeof x.sparsity === "number" && typeof x.budget === "number"));
  // The budget decreases to the target: the last sparsity is the target ratio (up to truncation).
  assert.ok(Math.abs(records[records.length - 1].sparsity - 0.7) < 1e-3, JSON.stringify(records.at(-1)));
  assert.ok(records[0].sparsity < 0.5);
  const base = await AutoModelForCausalLM.fromPretrained(MODEL);
  const peft = PeftModel.fromPretrained(base, out);
  const ids = [[5, 9, 13, 2, 7]];
  const a = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
  const b = await peft.disableAdapter(async () => (await peft.forward({ inputIds: ids })).logits?.data as Float32Array);
  assert.ok(maxAbsDiff(a, b) > 0, "the adapter changes nothing");
  peft.mergeAdapter();
  const m = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
  assert.ok(maxAbsDiff(a, m) < 1e-4, `merged ${maxAbsDiff(a, m)}`);
  await base.release();
});

test("snella: a run killed with SIGKILL and resumed ends with the weights of an uninterrupted run", async () => {
  const straight = join(tmp, "straight");
  const killed = join(tmp, "killed");
  assert.equal(run([...TRAIN, "--output-dir", straight]).code, 0);
  const child: ChildProcess = spawn(process.execPath, [CLI, ...TRAIN, "--output-dir", killed], { stdio: "ignore" });
  await new Promise<void>((resolve, reject) => {
    const poll = setInterval(() => {
      if (existsSync(join(killed, "checkpoint-6"))) {
        clearInterval(poll);
        child.kill("SIGKILL");
      }
    }, 5);
    child.on("exit", (_code, signal) => {
      clearInterval(poll);
      if (signal === "SIGKILL") resolve();
      else reject(new Error("the run finished before it could be killed"));
    });
  });
  assert.ok(!existsSync(join(killed, "adapter_config.json")), "a killed run must not look finished");
  const r = run([...TRAIN, "--output-dir", killed, "--resume"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /resuming from .*checkpoint-\d+/);
  const want = readSafetensors(join(straight, "adapter_model.safetensors")).tensors;
  const got = readSafetensors(join(killed, "adapter_model.safetensors")).tensors;
  assert.ok(Object.keys(want).some((k) => k.endsWith(".snella_ratio")));
  for (const [k, t] of Object.entries(want)) {
    const d = maxAbsDiff(t.data as Float32Array, got[k].data as Float32Array);
    assert.ok(d <= 1e-6, `${k}: ${d}`);
  }
});
