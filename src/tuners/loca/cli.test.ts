/** peftkit train --method loca end to end: phases in metrics.jsonl, save and reload, resume after SIGKILL, bad input. */
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

const CLI = join(REPO_ROOT, "dist/src/cli/main.js");
const MODEL = join(REPO_ROOT, "models/wordnet-llama");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-loca-cli-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, FORCE_COLOR: "0" } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const data = join(tmp, "train.jsonl");
const words = ["dog", "oak", "rose", "car", "apple", "lion"];
const kinds = ["animal", "tree", "flower", "vehicle", "fruit", "animal"];
writeFileSync(
  data,
  `${Array.from({ length: 24 }, (_, i) => JSON.stringify({ prompt: `a ${words[i % 6]} is a kind of`, completion: ` ${kinds[i % 6]}` })).join("\n")}\n`,
);
// Cycles of 1 coefficient step and 2 location steps until step 7: phases 0 1 1 0 1 1 0 0 ...
const TRAIN = [
  ...["--model", MODEL, "--data", data, "--method", "loca", "--batch-size", "4", "--lr", "5e-3", "--eval-fraction", "0", "--seed", "7"],
  ...["--loca-n-frequency", "64", "--loca-cycle", "1,2", "--loca-location-iter", "7", "--loca-location-lr-ratio", "0.5"],
];

describe("peftkit train --method loca", () => {
  test("trains in phases (metrics.jsonl), saves the documented format, and the folder reloads to the same model", async () => {
    const out = join(tmp, "run");
    const t = run(["train", ...TRAIN, "--output-dir", out, "--max-steps", "9"]);
    assert.equal(t.code, 0, t.stderr);
    const phases = readFileSync(join(out, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((r) => r.loss !== undefined)
      .map((r) => r.loca_phase);
    assert.deepEqual(phases, [0, 1, 1, 0, 1, 1, 0, 0, 0]);
    const cfg = JSON.parse(readFileSync(join(out, "adapter_config.json"), "utf8"));
    assert.equal(cfg.peft_type, "LOCA");
    assert.deepEqual(
      [cfg.n_frequency, cfg.scale, cfg.learn_location_iter, cfg.coefficient_steps, cfg.location_steps, cfg.location_lr_ratio],
      [64, 1, 7, 1, 2, 0.5],
    );
    const saved = readSafetensors(join(out, "adapter_model.safetensors")).tensors;
    const key = "base_model.model.model.layers.0.self_attn.q_proj.loca_locations";
    assert.deepEqual(saved[key]?.shape, [2, 64]);
    assert.deepEqual(saved["base_model.model.model.layers.0.self_attn.q_proj.loca_coefficients"]?.shape, [64]);

    // Reloaded, the adapter gives the logits its merged weights give.
    const base = await AutoModelForCausalLM.fromPretrained(MODEL);
    const peft = PeftModel.fromPretrained(base, out);
    const ids = [[5, 17, 99, 300, 42, 7]];
    const a = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
    const merged = peft.mergeAndUnload();
    const b = (await merged.forward({ inputIds: ids })).logits?.data as Float32Array;
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    assert.ok(worst < 1e-4, `merged vs adapter: ${worst}`);
    await base.release();
  });

  test("killed with SIGKILL inside a location phase and resumed, it ends with the weights of an uninterrupted run", async () => {
    const straight = join(tmp, "straight");
    const killed = join(tmp, "killed");
    const args = [...TRAIN, "--max-steps", "9", "--save-steps", "1"];
    assert.equal(run(["train", ...args, "--output-dir", straight]).code, 0);
    const child: ChildProcess = spawn(process.execPath, [CLI, "train", ...args, "--output-dir", killed], { stdio: "ignore" });
    await new Promise<void>((resolve, reject) => {
      const poll = setInterval(() => {
        // After step 5 the next update is the second of a location phase.
        if (existsSync(join(killed, "checkpoint-5"))) {
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

  test("bad input: a spectrum larger than a layer, a malformed cycle", () => {
    const big = run(["train", ...TRAIN, "--loca-n-frequency", "10000000", "--output-dir", join(tmp, "big"), "--max-steps", "1"]);
    assert.equal(big.code, 1);
    assert.match(big.stderr, /LoCA: n_frequency = 10000000 exceeds the \d+ entries of "model\.layers\.0\.self_attn\.q_proj"/);
    const cycle = run(["train", ...TRAIN, "--loca-cycle", "0,2", "--output-dir", join(tmp, "cycle"), "--max-steps", "1"]);
    assert.equal(cycle.code, 2);
    assert.match(cycle.stderr, /--loca-cycle: want two integers A,L with A >= 1 and L >= 0, got "0,2"/);
  });
});
