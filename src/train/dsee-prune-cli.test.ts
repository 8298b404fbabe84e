/**
 * `peftkit train --method dsee --dsee-prune-at N` end to end on the embedded model: phase 1 in
 * OUT/phase1, the pruned base as OUT/dsee_pruned_base.safetensors (−W at the pruned positions,
 * the base's fingerprint) named by the adapter's config, phase 2 re-tuned on it; the pruned
 * entries are 0 in the final model; `peftkit delta apply` + the adapter give the logits of the
 * trained model (whose own eval loss metrics.jsonl records); SIGKILL in either phase resumes exactly.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { loadModelAndAdapter } from "../cli/load.js";
import { AutoModelForCausalLM } from "../models/auto.js";
import { loadSparseDeltas } from "../sparse/file.js";
import { runCli } from "../testing/cli.js";
import { REPO_ROOT } from "../testing/paths.js";
import { assertSafetensorsClose, assertTwoPhaseKillResume } from "../testing/train-cli.js";
import { PeftModel } from "../tuners/peft-model.js";
import { weightsFingerprint } from "../util/fingerprint.js";

const MODEL = join(REPO_ROOT, "models/wordnet-llama");
const tmp = mkdtempSync(join(tmpdir(), "peftkit-dsee-prune-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const lines = (pairs: string[]) =>
  `${pairs
    .map((s) => {
      const [w, k] = s.split(" ");
      return JSON.stringify({ prompt: `a ${w} is a kind of`, completion: ` ${k}` });
    })
    .join("\n")}\n`;
const data = join(tmp, "train.jsonl");
writeFileSync(
  data,
  lines(["dog animal", "oak tree", "rose flower", "car vehicle", "pear fruit", "bus vehicle", "cat animal", "tulip flower"]),
);
const evalData = join(tmp, "eval.jsonl");
writeFileSync(evalData, lines(["cow animal", "pine tree", "van vehicle"]));

// Phase 1: steps 1–3, pruning, phase 2: steps 1–3 again (checkpoints every 2 steps).
const ARGS = [
  "--model",
  MODEL,
  "--data",
  data,
  "--eval-data",
  evalData,
  "--batch-size",
  "4",
  "--max-steps",
  "6",
  "--lr",
  "1e-2",
  "--method",
  "dsee",
  "--dsee-prune-at",
  "3",
  "--save-steps",
  "2",
  "--seed",
  "3",
];

const train = (out: string, extra: string[] = [], env: Record<string, string> = {}) =>
  runCli(["train", ...ARGS, ...extra, "--output-dir", out], env);

const IDS = [[5, 17, 99, 300, 42, 7, 12]];

describe("peftkit train --method dsee with pruning", () => {
  const straight = join(tmp, "straight");

  test("two phases; the pruned base is a sparse delta of −W for the base; delta apply + adapter = the trained model", async () => {
    const r = train(straight);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /dsee: pruned [\d,]+\/[\d,]+ entries of the other linear weights by \|W\| \(ratio 0\.2\)/);
    const cfg = JSON.parse(readFileSync(join(straight, "adapter_config.json"), "utf8"));
    assert.deepEqual(
      [cfg.peft_type, cfg.pruning_ratio, cfg.ad_pruning_ratio, cfg.base_delta],
      ["DSEE", 0.2, 0.2, "dsee_pruned_base.safetensors"],
    );
    assert.ok(existsSync(join(straight, "phase1", "adapter_config.json")));
    const deltaFile = join(straight, "dsee_pruned_base.safetensors");
    const set = loadSparseDeltas(deltaFile);

    const base = await AutoModelForCausalLM.fromPretrained(MODEL);
    assert.equal(set.baseModel, weightsFingerprint(base.weights));
    const names = [...set.deltas.keys()];
    for (const m of ["k_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "q_proj", "v_proj"])
      assert.ok(
        names.some((n) => n.includes(m)),
        `${m} pruned`,
      );
    assert.ok(!names.some((n) => n.includes("lm_head") || n.includes("embed")));
    for (const [name, d] of set.deltas) {
      const w = base.weights.get(name)?.data as Float32Array;
      d.indices.forEach((p, i) => {
        assert.equal(d.values[i], -w[p], `${name}[${p}]`);
      });
    }
    const other = [...set.deltas].filter(([n]) => !/q_proj|v_proj/.test(n));
    const n = other.reduce((s, [, d]) => s + d.shape[0] * d.shape[1], 0);
    assert.equal(
      other.reduce((s, [, d]) => s + d.indices.length, 0),
      Math.round(0.2 * n),
    );

    // The model as peftkit eval loads it (the delta applied): its eval loss is the trainer's last one.
    const metrics = readFileSync(join(straight, "metrics.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    const evalLoss = metrics.filter((m) => typeof m.eval_loss === "number").pop()?.eval_loss as number;
    const ev = runCli(["eval", "--model", MODEL, "--adapter", straight, "--data", evalData, "--output", join(tmp, "ev.json")]);
    assert.equal(ev.code, 0, ev.stderr);
    const got = JSON.parse(readFileSync(join(tmp, "ev.json"), "utf8")).eval_loss as number;
    assert.ok(Math.abs(got - evalLoss) <= 1e-5, `eval loss ${got} vs the trainer's ${evalLoss}`);

    // peftkit delta apply, then the adapter on the merged folder.
    const merged = join(tmp, "merged");
    const ap = runCli(["delta", "apply", "--model", MODEL, "--input", deltaFile, "--output-dir", merged]);
    assert.equal(ap.code, 0, ap.stderr);
    const applied = await AutoModelForCausalLM.fromPretrained(merged);
    const viaApply = (await PeftModel.fromPretrained(applied, straight).forward({ inputIds: IDS })).logits?.data as Float32Array;
    const loaded = await loadModelAndAdapter(MODEL, { adapter: straight });
    const peft = loaded.peft as PeftModel;
    const viaLoad = (await peft.forward({ inputIds: IDS })).logits?.data as Float32Array;
    let worst = 0;
    viaLoad.forEach((v, i) => {
      worst = Math.max(worst, Math.abs(v - viaApply[i]));
    });
    assert.ok(worst <= 1e-5, `max |logit difference| ${worst}`);
    const unpruned = (await PeftModel.fromPretrained(base, straight).forward({ inputIds: IDS })).logits?.data as Float32Array;
    assert.ok(
      unpruned.some((v, i) => Math.abs(v - viaLoad[i]) > 1e-3),
      "the pruning changes the logits",
    );
    // A folder the delta is already applied to loads with the adapter as it is.
    const again = await loadModelAndAdapter(merged, { adapter: straight });
    const viaBoth = (await (again.peft as PeftModel).forward({ inputIds: IDS })).logits?.data as Float32Array;
    assert.deepEqual([...viaBoth], [...viaApply]);

    // The pruned entries are exactly 0 after phase 2: in the base, and in the merged model outside q/v.
    for (const [name, d] of set.deltas) {
      const w = loaded.model.weights.get(name)?.data as Float32Array;
      for (const p of d.indices) assert.equal(w[p], 0, `${name}[${p}] in the base`);
    }
    const final = peft.mergeAndUnload();
    for (const [name, d] of set.deltas) {
      const fw = final.weights.get(name)?.data as Float32Array;
      if (!/q_proj|v_proj/.test(name)) for (const p of d.indices) assert.equal(fw[p], 0, `${name}[${p}] merged`);
    }
    await Promise.all([base.release(), applied.release(), loaded.model.release(), again.model.release()]);
  });

  test("SIGKILL in phase 1 or in phase 2, then --resume: the uninterrupted result", () => {
    // Step hits count across the phases: #3 is phase 1's step 3, #6 phase 2's step 3 (checkpoint-2 of each).
    assertTwoPhaseKillResume(
      train,
      tmp,
      [
        ["phase1", 3, "phase1/checkpoint-2"],
        ["phase2", 6, "checkpoint-2"],
      ],
      (phase, out) => {
        for (const file of ["adapter_model.safetensors", "dsee_pruned_base.safetensors"])
          assertSafetensorsClose(join(straight, file), join(out, file), (key) => (/indices$/.test(key) ? 0 : 1e-6), `${phase} ${file} `);
      },
    );
  });

  test("bad pruning settings are one line naming the flag", () => {
    for (const [extra, status, pattern] of [
      [["--dsee-prune-ratio", "1"], 2, /--dsee-prune-ratio/],
      [["--dsee-ad-prune-ratio", "-0.1"], 2, /--dsee-ad-prune-ratio/],
      [["--dsee-prune-at", "6"], 2, /--dsee-prune-at 6 must be below --max-steps 6/],
      [["--method", "lora"], 2, /--dsee-prune-at is for --method dsee/],
    ] as const) {
      const r = train(join(tmp, "bad"), [...extra]);
      assert.equal(r.code, status, r.stderr);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, pattern);
    }
  });
});
