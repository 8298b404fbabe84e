/**
 * `peftkit train --method pat` end to end on the embedded model: the flags reach the config, the
 * schedule and kept-channel count reach metrics.jsonl, a run killed with SIGKILL resumes to the
 * adapter of an uninterrupted run, and `peftkit merge --prune` writes a smaller model folder
 * (hidden_size = kept channels) that computes what the adapter computes and that `peftkit eval`
 * and `peftkit generate` load.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { readSafetensors } from "../../io/safetensors.js";
import { AutoModelForCausalLM } from "../../models/auto.js";
import { runCli } from "../../testing/cli.js";
import { assertSafetensorsClose, kindOfTrainArgs, MODEL, tempDir, trainWith, writeKindOfData } from "../../testing/train-cli.js";
import { maxAbsDiff } from "../conformance.js";
import { PeftModel } from "../peft-model.js";

const tmp = tempDir("peftkit-pat-cli-");
const data = writeKindOfData(tmp);
const ARGS = [
  ...kindOfTrainArgs(data),
  "--max-steps",
  "8",
  "--lr",
  "1e-2",
  "--method",
  "pat",
  "--target",
  "q_proj,v_proj",
  "--pat-keep-dim",
  "192",
  "--pat-hsm-rank",
  "16",
  "--seed",
  "3",
];

const cli = runCli;
const train = trainWith(ARGS);

describe("peftkit train --method pat", () => {
  test("flags → config, schedule metrics, SIGKILL + --resume is exact; merge --prune writes a smaller model that eval and generate load", async () => {
    const straight = join(tmp, "straight");
    const r = train(["--save-steps", "4", "--log-steps", "1"], straight);
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(straight, "adapter_config.json"), "utf8"));
    assert.deepEqual([cfg.peft_type, cfg.keep_dim, cfg.hsm_rank, cfg.schedule_steps, cfg.identity_loss], ["PAT", 192, 16, 8, true]);
    const metrics = readFileSync(join(straight, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((m) => typeof m.loss === "number");
    assert.equal(metrics.length, 8);
    // From t = ⌊0.8·8⌋ = 6 updates on the mask is frozen; b(t) = max(½ − t/8, 0).
    assert.deepEqual(
      metrics.map((m) => m.pat_mask_trains),
      [1, 1, 1, 1, 1, 0, 0, 0],
    );
    assert.equal(metrics[1].pat_bias, 0.25);
    const file = readSafetensors(join(straight, "adapter_model.safetensors")).tensors;
    assert.ok(!Object.keys(file).some((k) => k.includes("pat_schedule")));
    const kept = metrics[7].pat_kept as number;
    assert.ok(kept > 0 && kept < 256, `kept ${kept}`);

    // Killed at the start of step 6: resumes from checkpoint-4 (schedule and mask in the checkpoint).
    const killed = join(tmp, "killed");
    const k = train(["--save-steps", "4"], killed, { PEFTKIT_FAULT_AT: "train:step#6" });
    assert.equal(k.signal, "SIGKILL", k.stderr);
    const again = train(["--save-steps", "4", "--resume"], killed);
    assert.equal(again.code, 0, again.stderr);
    assertSafetensorsClose(join(straight, "adapter_model.safetensors"), join(killed, "adapter_model.safetensors"), () => 1e-6);

    const pruned = join(tmp, "pruned");
    const m = cli(["merge", "--model", MODEL, "--adapter", straight, "--output-dir", pruned, "--prune"]);
    assert.equal(m.code, 0, m.stderr);
    assert.match(m.stdout, new RegExp(`hidden_size 256 → ${kept}`));
    const pcfg = JSON.parse(readFileSync(join(pruned, "config.json"), "utf8"));
    assert.deepEqual([pcfg.hidden_size, pcfg.head_dim, pcfg.tie_word_embeddings], [kept, 64, false]);
    assert.ok(existsSync(join(pruned, "tokenizer.json")));
    const base = await AutoModelForCausalLM.fromPretrained(MODEL);
    const small = await AutoModelForCausalLM.fromPretrained(pruned);
    try {
      const peft = PeftModel.fromPretrained(base, straight);
      const ids = [[5, 17, 99, 300, 42, 7]];
      const want = (await peft.forward({ inputIds: ids })).logits?.data as Float32Array;
      const have = (await small.forward({ inputIds: ids })).logits?.data as Float32Array;
      assert.ok(maxAbsDiff(have, want) < 1e-4, `pruned vs adapter ${maxAbsDiff(have, want)}`);
    } finally {
      await base.release();
      await small.release();
    }
    const ev = cli(["eval", "--model", pruned, "--data", data, "--output", join(tmp, "eval.json")]);
    assert.equal(ev.code, 0, ev.stderr);
    const gen = cli(["generate", "--model", pruned, "--prompt", "a dog is a kind of", "--max-new-tokens", "3"]);
    assert.equal(gen.code, 0, gen.stderr);
  });

  test("bad settings are one line each", () => {
    const bad = train(["--pat-keep-dim", "256"], join(tmp, "bad"));
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr.trim().split("\n").length, 1);
    assert.match(bad.stderr, /field "keep_dim" must be an integer in \[1, 256\) \(hidden_size 256\), got 256/);
    const lora = join(tmp, "lora");
    assert.equal(cli(["train", ...ARGS.slice(0, 8), "--method", "lora", "--max-steps", "1", "--output-dir", lora]).code, 0);
    const np = cli(["merge", "--model", MODEL, "--adapter", lora, "--output-dir", join(tmp, "np"), "--prune"]);
    assert.notEqual(np.code, 0);
    assert.match(np.stderr.trim(), /^peftkit: adapter "default" is LORA: only a PAT adapter says which hidden channels to prune$/);
  });
});
