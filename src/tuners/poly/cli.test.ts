/**
 * `peftkit train --method poly` end to end on the embedded model: a `task` field in the data
 * becomes the routing table (task_table.json beside the adapter and its checkpoints), the flags
 * reach PEFT's PolyConfig fields, a SIGKILLed run resumes to the adapter of an uninterrupted one,
 * `eval`/`generate --task` route by name, MHR-z trains only the routers and MHR-μ writes a plain
 * LoRA; bad task ids and settings are one line each.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { readSafetensors } from "../../io/safetensors.js";
import { runCli, writeJsonl } from "../../testing/cli.js";
import { assertAdapterChangesOutputs, assertSafetensorsClose, MODEL, tempDir, trainWith } from "../../testing/train-cli.js";

const tmp = tempDir("peftkit-poly-cli-");
const KIND = ["dog animal", "oak tree", "rose flower", "car vehicle", "pear fruit", "bus vehicle", "cat animal", "tulip flower"];
const rows = KIND.flatMap((s) => {
  const [w, k] = s.split(" ");
  return [
    { prompt: `a ${w} is a kind of`, completion: ` ${k}`, task: "kind" },
    { prompt: `the word ${w} has letters`, completion: ` ${w.length}`, task: "count" },
  ];
});
const data = writeJsonl(tmp, "multi.jsonl", rows);
const ARGS = ["--model", MODEL, "--data", data, "--batch-size", "4", "--eval-fraction", "0", "--lr", "1e-2", "--seed", "5"];
const train = trainWith([...ARGS, "--method", "poly", "--r", "2", "--poly-n-skills", "3", "--poly-n-splits", "2", "--max-steps", "8"]);
const trainOnly = trainWith(ARGS);
// One poly step on another data file (for errors in its task column).
const polyStepOn = (file: string, out: string) =>
  trainWith(["--model", MODEL, "--data", file, "--method", "poly", "--max-steps", "1", "--eval-fraction", "0"])([], out);
const f32 = (file: string, key: string) => readSafetensors(file).tensors[key].data as Float32Array;

describe("peftkit train --method poly", () => {
  const straight = join(tmp, "straight");

  test("task field → routing table, flags → PolyConfig, folder loads back; SIGKILL + --resume is exact", async () => {
    const r = train(["--save-steps", "4"], straight);
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(straight, "adapter_config.json"), "utf8"));
    assert.deepEqual([cfg.peft_type, cfg.r, cfg.n_tasks, cfg.n_skills, cfg.n_splits, cfg.poly_type], ["POLY", 2, 2, 3, 2, "poly"]);
    for (const dir of [straight, join(straight, "checkpoint-4")])
      assert.deepEqual(JSON.parse(readFileSync(join(dir, "task_table.json"), "utf8")).tasks, ["count", "kind"]);
    const keys = Object.keys(readSafetensors(join(straight, "adapter_model.safetensors")).tensors);
    assert.ok(keys.includes("base_model.model.model.layers.0.self_attn.q_proj.poly_router.module_logits"), keys.join(", "));
    await assertAdapterChangesOutputs(MODEL, straight, { inspect: (peft) => peft.useTask(1) });

    const killed = join(tmp, "killed");
    const k = train(["--save-steps", "4"], killed, { PEFTKIT_FAULT_AT: "train:step#6" });
    assert.equal(k.signal, "SIGKILL", k.stderr);
    assert.ok(existsSync(join(killed, "checkpoint-4")) && !existsSync(join(killed, "adapter_config.json")));
    const again = train(["--save-steps", "4", "--resume"], killed);
    assert.equal(again.code, 0, again.stderr);
    assertSafetensorsClose(join(straight, "adapter_model.safetensors"), join(killed, "adapter_model.safetensors"), () => 1e-6);
  });

  test("eval and generate route by --task or by each record's task; an absent task is one line", () => {
    const evalData = writeJsonl(tmp, "eval.jsonl", rows.slice(0, 6));
    const byRecord = runCli(["eval", "--model", MODEL, "--adapter", straight, "--data", evalData, "--output", join(tmp, "e1.json")]);
    assert.equal(byRecord.code, 0, byRecord.stderr);
    const one = runCli([
      "eval",
      "--model",
      MODEL,
      "--adapter",
      straight,
      "--data",
      evalData,
      "--task",
      "kind",
      "--output",
      join(tmp, "e2.json"),
    ]);
    assert.equal(one.code, 0, one.stderr);
    const [l1, l2] = ["e1", "e2"].map((f) => JSON.parse(readFileSync(join(tmp, `${f}.json`), "utf8")).eval_loss as number);
    assert.notEqual(l1, l2, "routing every record as 'kind' changes the loss");
    // The task's eval-mode mixture as a plain LoRA scores the same as the POLY adapter routed to it.
    const exp = join(tmp, "exported");
    const x = runCli(["poly-export", "--model", MODEL, "--adapter", straight, "--task", "kind", "--output-dir", exp]);
    assert.equal(x.code, 0, x.stderr);
    assert.equal(JSON.parse(readFileSync(join(exp, "adapter_config.json"), "utf8")).peft_type, "LORA");
    const e3 = runCli(["eval", "--model", MODEL, "--adapter", exp, "--data", evalData, "--output", join(tmp, "e3.json")]);
    assert.equal(e3.code, 0, e3.stderr);
    const l3 = JSON.parse(readFileSync(join(tmp, "e3.json"), "utf8")).eval_loss as number;
    assert.ok(Math.abs(l3 - l2) < 1e-4, `exported ${l3} vs routed ${l2}`);
    const bad = runCli(["eval", "--model", MODEL, "--adapter", straight, "--data", evalData, "--task", "synonyms"]);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr.trim(), 'peftkit: --task: task "synonyms" is absent from the routing table (2 tasks: "count", "kind")');
    const far = runCli(["generate", "--model", MODEL, "--adapter", straight, "--prompt", "a dog is a kind of", "--task", "2"]);
    assert.equal(far.code, 2);
    assert.match(far.stderr.trim(), /^peftkit: --task: task id 2 is absent from the routing table \(2 tasks/);
    const unknown = writeJsonl(tmp, "unknown.jsonl", [{ prompt: "a x is", completion: " y", task: "other" }]);
    const u = runCli(["eval", "--model", MODEL, "--adapter", straight, "--data", unknown]);
    assert.equal(u.code, 1);
    assert.match(u.stderr.trim(), /unknown\.jsonl:1: task "other" is absent from the routing table \(2 tasks: "count", "kind"\)$/);
    const none = writeJsonl(tmp, "none.jsonl", [{ prompt: "a x is", completion: " y" }]);
    const n = runCli(["eval", "--model", MODEL, "--adapter", straight, "--data", none]);
    assert.equal(n.code, 1);
    assert.match(n.stderr.trim(), /routes by task: give a task id per example .* routing table has 2 tasks$/);
    const g = runCli([
      "generate",
      "--model",
      MODEL,
      "--adapter",
      straight,
      "--prompt",
      "a dog is a kind of",
      "--task",
      "kind",
      "--max-new-tokens",
      "2",
    ]);
    assert.equal(g.code, 0, g.stderr);
  });

  test("MHR-z trains only the routers; MHR-μ writes the averaged skills as a LoRA (alpha 1) and trains it", () => {
    const z = join(tmp, "z");
    const rz = trainOnly(["--method", "poly", "--poly-finetune", "z", "--poly-from", straight, "--max-steps", "3"], z);
    assert.equal(rz.code, 0, rz.stderr);
    const src = join(straight, "adapter_model.safetensors");
    const got = join(z, "adapter_model.safetensors");
    const a = "base_model.model.model.layers.1.mlp.down_proj.poly_lora_A";
    const b = "base_model.model.model.layers.1.mlp.down_proj.poly_lora_B";
    const lg = "base_model.model.model.layers.1.mlp.down_proj.poly_router.module_logits";
    assert.deepEqual(f32(got, a), f32(src, a));
    assert.deepEqual(f32(got, b), f32(src, b));
    assert.ok(
      f32(got, lg).some((x) => Math.abs(x) > 1e-3),
      "the routers moved beyond their U(±1e-3) start",
    );
    // 4 layers × 7 linears × 2 tasks × (2 splits × 3 skills) routing logits.
    assert.match(rz.stdout, /trainable 336 of/);

    const mu = join(tmp, "mu");
    const rm = trainOnly(["--method", "poly", "--poly-finetune", "mu", "--poly-from", straight, "--max-steps", "2"], mu);
    assert.equal(rm.code, 0, rm.stderr);
    const cfg = JSON.parse(readFileSync(join(mu, "adapter_config.json"), "utf8"));
    assert.deepEqual([cfg.peft_type, cfg.r, cfg.lora_alpha], ["LORA", 2, 1]);
    assert.ok(!existsSync(join(mu, "task_table.json")));
  });

  test("bad settings are one line each", () => {
    const noFrom = trainOnly(["--method", "poly", "--poly-finetune", "z", "--max-steps", "1"], join(tmp, "b1"));
    assert.equal(noFrom.code, 2, noFrom.stderr);
    assert.equal(
      noFrom.stderr.trim(),
      "peftkit: --poly-finetune z starts from trained skills: give --poly-from DIR (a POLY adapter folder)",
    );
    const other = trainOnly(["--method", "lora", "--poly-n-skills", "2", "--max-steps", "1"], join(tmp, "b2"));
    assert.equal(other.code, 2);
    assert.equal(other.stderr.trim(), "peftkit: --poly-n-skills is for --method poly, not lora");
    const split = trainOnly(["--method", "poly", "--poly-n-splits", "3", "--max-steps", "1"], join(tmp, "b3"));
    assert.equal(split.code, 1);
    assert.match(
      split.stderr.trim(),
      /^peftkit: POLY config: n_splits = 3 does not divide in_features = \d+ of ".*" \(tensor .*poly_lora_A\)$/,
    );
    const mixed = writeJsonl(tmp, "mixed.jsonl", [...rows.slice(0, 3), { prompt: "a x is", completion: " y" }]);
    const m = polyStepOn(mixed, join(tmp, "b4"));
    assert.equal(m.code, 1);
    assert.match(m.stderr.trim(), /^peftkit: .*mixed\.jsonl:4: no task given; the routing table has 2 tasks: "count", "kind"$/);
    const badType = writeJsonl(tmp, "badtype.jsonl", [{ prompt: "a x is", completion: " y", task: -1 }]);
    const t = polyStepOn(badType, join(tmp, "b5"));
    assert.equal(t.code, 1);
    assert.match(t.stderr.trim(), /badtype\.jsonl:1: field "task" must be a task name or a non-negative integer, got -1$/);
  });
});
