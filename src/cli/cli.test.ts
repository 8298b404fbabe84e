/**
 * End-to-end tests of the peftkit command on the embedded model: train, eval, generate, merge,
 * info; resume after SIGKILL; bad input.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { readSafetensors } from "../io/safetensors.js";
import { AutoModelForCausalLM } from "../models/auto.js";
import { REPO_ROOT } from "../testing/paths.js";
import { latestCheckpoint } from "../train/checkpoint.js";
import { PeftModel } from "../tuners/peft-model.js";

const CLI = join(REPO_ROOT, "dist/src/cli/main.js");
const MODEL = join(REPO_ROOT, "models/wordnet-llama");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-cli-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, FORCE_COLOR: "0" } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const KINDS: Record<string, string> = {
  dog: "animal",
  cat: "animal",
  oak: "tree",
  rose: "flower",
  car: "vehicle",
  boat: "vehicle",
  apple: "fruit",
  pear: "fruit",
  lion: "animal",
  maple: "tree",
  tulip: "flower",
  bus: "vehicle",
};
const data = join(tmp, "train.jsonl");
writeFileSync(
  data,
  `${Array.from({ length: 48 }, (_, i) => {
    const w = Object.keys(KINDS)[i % 12];
    return JSON.stringify({ prompt: `a ${w} is a kind of`, completion: ` ${KINDS[w]}` });
  }).join("\n")}\n`,
);
const TRAIN = ["--model", MODEL, "--data", data, "--batch-size", "4", "--lr", "2e-3", "--r", "4", "--eval-fraction", "0", "--seed", "7"];

describe("peftkit CLI", () => {
  test("train → eval → generate → merge → the merged folder reproduces base + adapter", async () => {
    const out = join(tmp, "run");
    const t = run(["train", ...TRAIN, "--output-dir", out, "--max-steps", "6", "--save-steps", "3"]);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, /Summary/);
    for (const f of ["adapter_config.json", "adapter_model.safetensors", "training_args.json", "metrics.jsonl", "loss_curve.svg"])
      assert.ok(existsSync(join(out, f)), f);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.equal(cfg.peft_type, "LORA");
    assert.equal(cfg.r, 4);

    const e = run(["eval", "--model", MODEL, "--adapter", out, "--data", data]);
    assert.equal(e.code, 0, e.stderr);
    const metrics = JSON.parse(readFileSync(join(out, "eval_results.json"), "utf8"));
    assert.ok(Number.isFinite(metrics.eval_loss) && metrics.eval_exact_match >= 0);

    const g1 = run(["generate", "--model", MODEL, "--adapter", out, "--prompt", "a dog is a kind of", "--max-new-tokens", "5"]);
    assert.equal(g1.code, 0, g1.stderr);
    assert.ok(g1.stdout.startsWith("a dog is a kind of"));

    const merged = join(tmp, "merged");
    const m = run(["merge", "--model", MODEL, "--adapter", out, "--output-dir", merged]);
    assert.equal(m.code, 0, m.stderr);
    const g2 = run(["generate", "--model", merged, "--prompt", "a dog is a kind of", "--max-new-tokens", "5"]);
    assert.equal(g2.stdout, g1.stdout);

    // The merged weights give the logits of base + adapter.
    const base = await AutoModelForCausalLM.fromPretrained(MODEL);
    const peft = PeftModel.fromPretrained(base, out);
    const reloaded = await AutoModelForCausalLM.fromPretrained(merged);
    const ids = [[5, 17, 99, 300, 42, 7]];
    const a = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    const b = (await reloaded.forward({ inputIds: ids })).logits?.data as Float32Array;
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    assert.ok(worst < 1e-4, `merged vs adapter: ${worst}`);
    await base.release();
    await reloaded.release();

    const info = run(["info", out]);
    assert.equal(info.code, 0);
    assert.match(info.stdout, /peft_type\s+LORA/);
  });

  test("a run killed with SIGKILL and resumed ends with the weights of an uninterrupted run", async () => {
    const straight = join(tmp, "straight");
    const killed = join(tmp, "killed");
    const args = [...TRAIN, "--max-steps", "30", "--save-steps", "4", "--dropout", "0.1"];
    assert.equal(run(["train", ...args, "--output-dir", straight]).code, 0);
    const child: ChildProcess = spawn(process.execPath, [CLI, "train", ...args, "--output-dir", killed], { stdio: "ignore" });
    await new Promise<void>((resolve, reject) => {
      const poll = setInterval(() => {
        if (existsSync(join(killed, "checkpoint-8"))) {
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
    const r = run(["train", ...args, "--output-dir", killed, "--resume"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /resuming from .*checkpoint-\d+/);
    const want = readSafetensors(join(straight, "adapter_model.safetensors")).tensors;
    const got = readSafetensors(join(killed, "adapter_model.safetensors")).tensors;
    for (const [k, t] of Object.entries(want)) {
      const g = got[k].data as Float32Array;
      (t.data as Float32Array).forEach((v, i) => {
        assert.ok(Math.abs(v - g[i]) <= 1e-6, `${k}[${i}] ${v} vs ${g[i]}`);
      });
    }
  });

  test("SIGINT saves a checkpoint, exits 1, and the run resumes to completion", async () => {
    const out = join(tmp, "sigint");
    const args = [...TRAIN, "--max-steps", "400", "--save-steps", "1000", "--output-dir", out];
    const child: ChildProcess = spawn(process.execPath, [CLI, "train", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr?.on("data", (d) => {
      stderr += String(d);
    });
    const code = await new Promise<number | null>((resolve) => {
      const poll = setInterval(() => {
        // Interrupt once training is under way (metrics.jsonl has lines).
        if (existsSync(join(out, "metrics.jsonl")) && readFileSync(join(out, "metrics.jsonl"), "utf8").split("\n").length > 3) {
          clearInterval(poll);
          child.kill("SIGINT");
        }
      }, 5);
      child.on("exit", (c) => {
        clearInterval(poll);
        resolve(c);
      });
    });
    assert.equal(code, 1, stderr);
    assert.match(stderr, /interrupt: finishing this step and saving a checkpoint/);
    assert.ok(!existsSync(join(out, "adapter_config.json")), "an interrupted run must not look finished");
    const ck = latestCheckpoint(out);
    assert.ok(ck, "no checkpoint after SIGINT");
    const r = run(["train", ...args, "--resume"]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(existsSync(join(out, "adapter_config.json")));
  });

  describe("bad input: one line, exit code 1 or 2, no finished-looking output", () => {
    const check = (args: string[], code: number, pattern: RegExp, out: string) => {
      const r = run(args);
      assert.equal(r.code, code, r.stderr);
      const lines = r.stderr.trim().split("\n");
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], pattern);
      assert.ok(!existsSync(join(out, "adapter_config.json")));
    };
    test("a corrupt JSONL line names the file and line", () => {
      const bad = join(tmp, "bad.jsonl");
      writeFileSync(bad, `${readFileSync(data, "utf8").split("\n").slice(0, 3).join("\n")}\n{"prompt": "x", "completion": \n`);
      const out = join(tmp, "bad-out");
      check(["train", ...TRAIN.slice(0, 2), "--data", bad, "--output-dir", out, "--max-steps", "2"], 1, /bad\.jsonl:4/, out);
    });
    test("a missing model file", () => {
      const broken = join(tmp, "broken-model");
      cpSync(MODEL, broken, { recursive: true });
      rmSync(join(broken, "model.safetensors"));
      const out = join(tmp, "missing-out");
      check(["train", "--model", broken, "--data", data, "--output-dir", out, "--max-steps", "2"], 1, /model\.safetensors/, out);
    });
    test("an unknown --method", () => {
      const out = join(tmp, "method-out");
      check(["train", ...TRAIN, "--method", "magic", "--output-dir", out], 2, /--method must be one of .*lora/, out);
    });
    test("a negative learning rate", () => {
      const out = join(tmp, "lr-out");
      check(["train", ...TRAIN, "--lr", "-1", "--output-dir", out], 2, /--lr must be > 0/, out);
    });
  });
});
