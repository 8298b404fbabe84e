/**
 * peftkit train --method triadaptlora end to end on the embedded model: ranks grow during the run
 * (metrics.jsonl and the progress line show them), the folder reloads, merges to the same logits,
 * a killed run resumes to the uninterrupted one's weights, and an impossible schedule is one line.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { readSafetensors } from "../../io/safetensors.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { REPO_ROOT } from "../../testing/paths.js";
import { PeftModel } from "../peft-model.js";
import type { TriadaptloraConfig } from "./config.js";
import { triadaptloraKeys, triadaptloraLayers } from "./layers.js";

const CLI = join(REPO_ROOT, "dist/src/cli/main.js");
const MODEL = join(REPO_ROOT, "models/wordnet-llama");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-triadaptlora-cli-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, FORCE_COLOR: "0" } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const WORDS = ["dog", "cat", "oak", "rose", "car", "boat", "apple", "pear"];
const KIND = ["animal", "animal", "tree", "flower", "vehicle", "vehicle", "fruit", "fruit"];
const data = join(tmp, "train.jsonl");
writeFileSync(
  data,
  `${Array.from({ length: 32 }, (_, i) => JSON.stringify({ prompt: `a ${WORDS[i % 8]} is a kind of`, completion: ` ${KIND[i % 8]}` })).join("\n")}\n`,
);
// 8 modules (q, v of 4 layers), reference rank 4 in blocks of 2 from rank 1: budget 32.
const TRAIN = [
  "train",
  "--model",
  MODEL,
  "--data",
  data,
  "--method",
  "triadaptlora",
  "--r",
  "4",
  "--target",
  "q_proj,v_proj",
  "--init-warmup",
  "1",
  "--incre-interval",
  "2",
  "--batch-size",
  "4",
  "--lr",
  "5e-3",
  "--eval-fraction",
  "0",
  "--seed",
  "7",
  "--log-steps",
  "1",
];

describe("peftkit train --method triadaptlora", () => {
  test("ranks grow, metrics show them, the folder reloads and merges to the same logits", async () => {
    const out = join(tmp, "run");
    const t = run([...TRAIN, "--output-dir", out, "--max-steps", "8", "--save-steps", "4"]);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /step 8\/8 loss \d+\.\d{4} method_loss \S+ rank_total \d+ threshold \S+ tokens\/s/);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.equal(cfg.peft_type, "TRIADAPTLORA");
    assert.equal(cfg.reference_rank, 4);
    const ranks = Object.values(cfg.rank_pattern as Record<string, number>);
    assert.equal(ranks.length, 8);
    assert.ok(
      ranks.some((r) => r > 1),
      JSON.stringify(cfg.rank_pattern),
    );
    const records = readFileSync(join(out, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((r) => r.loss !== undefined);
    assert.equal(records[0].rank_total, 8);
    assert.equal(
      records.at(-1).rank_total,
      ranks.reduce((a, b) => a + b, 0),
    );

    const base = await AutoModelForCausalLM.fromPretrained(MODEL);
    const peft = PeftModel.fromPretrained(base, out);
    const c = peft.adapter("default").config as TriadaptloraConfig;
    for (const l of triadaptloraLayers(peft.info, c)) {
      const R = c.rankPattern?.[l.key] as number;
      assert.deepEqual(peft.adapter("default").tensors.get(triadaptloraKeys(l.key).lower)?.shape, [R, R]);
    }
    const merged = join(tmp, "merged");
    const m = run(["merge", "--model", MODEL, "--adapter", out, "--output-dir", merged]);
    assert.equal(m.code, 0, m.stderr);
    const reloaded = await AutoModelForCausalLM.fromPretrained(merged);
    const ids = [[5, 17, 99, 300, 42, 7]];
    const a = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    const b = (await reloaded.forward({ inputIds: ids })).logits?.data as Float32Array;
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    assert.ok(worst < 1e-3, `merged vs adapter: ${worst}`);
    const noAdapter = (await (await AutoModelForCausalLM.fromPretrained(MODEL)).forward({ inputIds: ids })).logits?.data as Float32Array;
    assert.ok(
      a.some((v, i) => Math.abs(v - noAdapter[i]) > 1e-3),
      "the trained adapter changes nothing",
    );
    await base.release();
    await reloaded.release();
  });

  test("a run killed with SIGKILL and resumed ends with the weights and ranks of an uninterrupted run", async () => {
    const straight = join(tmp, "straight");
    const killed = join(tmp, "killed");
    const args = [...TRAIN, "--max-steps", "12", "--save-steps", "3"];
    assert.equal(run([...args, "--output-dir", straight]).code, 0);
    const child: ChildProcess = spawn(process.execPath, [CLI, ...args, "--output-dir", killed], { stdio: "ignore" });
    await new Promise<void>((resolve, reject) => {
      const poll = setInterval(() => {
        if (existsSync(join(killed, "checkpoint-3"))) {
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
    const r = run([...args, "--output-dir", killed, "--resume"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /resuming from .*checkpoint-\d+/);
    const cfg = (dir: string) => JSON.parse(readFileSync(join(dir, "adapter_config.json"), "utf8"));
    assert.deepEqual(cfg(killed).rank_pattern, cfg(straight).rank_pattern);
    const want = readSafetensors(join(straight, "adapter_model.safetensors")).tensors;
    const got = readSafetensors(join(killed, "adapter_model.safetensors")).tensors;
    for (const [k, t] of Object.entries(want)) {
      const g = got[k].data as Float32Array;
      (t.data as Float32Array).forEach((v, i) => {
        assert.ok(Math.abs(v - g[i]) <= 1e-6, `${k}[${i}] ${v} vs ${g[i]}`);
      });
    }
  });

  test("a warm-up that leaves no step for growth is one line, exit 1", () => {
    const r = run([...TRAIN, "--output-dir", join(tmp, "bad"), "--max-steps", "3", "--init-warmup", "3"]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /init_warmup \(3\) leaves no step for growth in 3 total steps/);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  });
});
