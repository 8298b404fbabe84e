/**
 * `peftkit train --method light_peft` end to end on models/wordnet-llama (6 estimation + 4 pruned
 * steps): the folder layout (estimation/, pruned_backbone.json, a plain LoRA adapter of the
 * pruned shapes, pruned_model/), the counts the pruning rule gives, `peftkit eval` over the
 * original base and over the written pruned model giving the same numbers, SIGKILL in either
 * phase then --resume giving the uninterrupted result (the importance sums are checkpointed
 * mid-way: the kill in the estimation lands after checkpoint-4, inside the scored second half),
 * and bad input as one line naming the flag.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import type { HostTensor } from "../engine/ir/host.js";
import { readSafetensors } from "../io/safetensors.js";
import { runCli } from "../testing/cli.js";
import { assertSafetensorsClose, MODEL, tempDir, trainWith, writeKindOfData } from "../testing/train-cli.js";

const tmp = tempDir("peftkit-light-peft-cli-");
const data = writeKindOfData(tmp);
const ARGS = [
  ...["--model", MODEL, "--data", data, "--batch-size", "4", "--eval-fraction", "0", "--lr", "1e-3", "--seed", "3"],
  ...["--method", "light_peft", "--r", "4", "--max-steps", "10", "--estimation-steps", "6", "--save-steps", "2", "--threads", "1"],
];

const cli = runCli;
const trainArgs = trainWith(ARGS);
const train = (out: string, extra: string[] = [], env: Record<string, string> = {}) => trainArgs(extra, out, env);
const tensors = (file: string): Record<string, HostTensor> => readSafetensors(file).tensors;
const json = (file: string) => JSON.parse(readFileSync(file, "utf8"));

describe("peftkit train --method light_peft", () => {
  const straight = join(tmp, "straight");

  test("estimation, pruning, phase 2: the folders, the counts, eval over the original and the pruned base", () => {
    const r = train(straight, ["--save-pruned-model"]);
    assert.equal(r.code, 0, r.stderr);
    const est = json(join(straight, "estimation", "adapter_config.json"));
    assert.deepEqual(
      [est.peft_type, est.mask_l1_coef, est.attn_mask_lr_mult, est.ffn_mask_lr_mult, est.module_pruning_ratio, est.rank_pruning_ratio],
      ["LIGHT_PEFT", 1e-4, 100, 50, 0.75, 0.5],
    );
    const cfg = json(join(straight, "adapter_config.json"));
    assert.equal(cfg.peft_type, "LORA");
    // 4 layers × 7 linear layers; ⌊27·0.75⌋+1 = 21 modules go when the importances are distinct.
    assert.ok(cfg.target_modules.length <= 7 && cfg.target_modules.length >= 1, JSON.stringify(cfg.target_modules));
    const plan = json(join(straight, "pruned_backbone.json"));
    assert.equal(plan.format, "peftkit-pruned-heads-ffn");
    // wordnet-llama: 4 heads in 2 KV groups, 688 neurons; ratio 1/3 prunes ⌊1/3⌋+1 = 1 group and ⌊687/3⌋+1 = 230 neurons.
    for (const l of plan.layers) {
      assert.equal(l.kv_heads.length, 1);
      assert.deepEqual(l.heads, l.kv_heads[0] === 0 ? [0, 1] : [2, 3]);
      assert.equal(l.neurons.length, 688 - 230);
    }
    const pcfg = json(join(straight, "pruned_model", "config.json"));
    assert.deepEqual([pcfg.num_attention_heads, pcfg.num_key_value_heads, pcfg.intermediate_size, pcfg.head_dim], [2, 1, 458, 64]);
    const shapes = tensors(join(straight, "adapter_model.safetensors"));
    for (const [k, t] of Object.entries(shapes)) {
      if (/(q|o)_proj\.lora_B/.test(k) && !k.includes("o_proj")) assert.equal(t.shape[0], 128, k);
      if (/down_proj\.lora_A/.test(k)) assert.equal(t.shape[1], 458, k);
    }
    const evalOn = (model: string, file: string) => {
      const e = cli(["eval", "--model", model, "--adapter", straight, "--data", data, "--output", file, "--threads", "1"]);
      assert.equal(e.code, 0, e.stderr);
      return json(file);
    };
    const a = evalOn(MODEL, join(tmp, "eval-a.json"));
    const b = evalOn(join(straight, "pruned_model"), join(tmp, "eval-b.json"));
    assert.ok(Math.abs(a.eval_loss - b.eval_loss) < 1e-6, `${a.eval_loss} vs ${b.eval_loss}`);
  });

  test("SIGKILL in the estimation or in phase 2, then --resume: the uninterrupted result", () => {
    const wantPlan = readFileSync(join(straight, "pruned_backbone.json"), "utf8");
    // Step hits count across the phases: #5 is the estimation's step 5, #9 phase 2's step 3.
    for (const [name, hit, left] of [
      ["estimation", 5, "estimation/checkpoint-4"],
      ["phase2", 9, "checkpoint-2"],
    ] as const) {
      const out = join(tmp, `killed-${name}`);
      const k = train(out, ["--save-pruned-model"], { PEFTKIT_FAULT_AT: `train:step#${hit}` });
      assert.equal(k.signal, "SIGKILL", k.stderr);
      assert.ok(existsSync(join(out, left)) && !existsSync(join(out, "adapter_config.json")), `${name}: ${left} left`);
      const fresh = train(out);
      assert.equal(fresh.code, 1, "a fresh run into the folder is refused");
      assert.match(fresh.stderr, /--resume/);
      const r = train(out, ["--resume", "--save-pruned-model"]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, name === "estimation" ? /resuming from .*estimation.checkpoint-4/ : /estimation in .* is finished/);
      assert.equal(readFileSync(join(out, "pruned_backbone.json"), "utf8"), wantPlan);
      // The estimation folder too: masks, LoRA and the importance sums (checkpointed as adapter tensors).
      for (const file of ["adapter_model.safetensors", "estimation/adapter_model.safetensors"]) {
        assertSafetensorsClose(join(straight, file), join(out, file), () => 1e-6, `${name} ${file} `);
      }
    }
  });

  test("bad input is one line naming the flag", () => {
    for (const [extra, status, pattern] of [
      [["--attn-pruning-ratio", "1"], 2, /--attn-pruning-ratio/],
      [["--rank-pruning-ratio", "-0.1"], 2, /--rank-pruning-ratio/],
      [["--estimation-steps", "10"], 2, /--estimation-steps 10 must be below --max-steps 10/],
      [["--method", "lora", "--estimation-steps", "2"], 2, /--estimation-steps is for --method light_peft/],
      [["--max-steps", "4", "--estimation-steps", "1"], 1, /every LoRA module is pruned .*raise --estimation-steps/],
    ] as const) {
      const bad = join(tmp, "bad");
      rmSync(bad, { recursive: true, force: true });
      const r = train(bad, [...extra]);
      assert.equal(r.code, status, r.stderr);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, pattern);
    }
  });
});
