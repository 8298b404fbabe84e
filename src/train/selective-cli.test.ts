/**
 * `peftkit train --method lisa|hft` end to end on the embedded model: the layers switch during
 * the run (metrics.jsonl's selection), the saved tensors load onto the base, a run killed with
 * SIGKILL after a switch and resumed ends bit-identical to an uninterrupted one, and γ above the
 * layer count is one usage line.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { readSafetensors } from "../io/safetensors.js";
import { AutoModelForCausalLM } from "../models/auto.js";
import { kindOfTrainArgs, MODEL, tempDir, trainWith, writeKindOfData } from "../testing/train-cli.js";
import { applyTrainedTensors } from "./selective-run.js";

const tmp = tempDir("peftkit-lisa-cli-");
const data = writeKindOfData(tmp);
const ARGS = [...kindOfTrainArgs(data), "--max-steps", "8", "--lr", "1e-3", "--seed", "3"];
const LISA = ["--method", "lisa", "--lisa-layers", "1", "--lisa-interval", "3", "--save-steps", "4"];

const train = trainWith(ARGS);

const selections = (dir: string) =>
  readFileSync(join(dir, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l).selection as string);

describe("peftkit train --method lisa / hft", () => {
  test("LISA: layers switch every K steps; the saved tensors load onto the base; SIGKILL + --resume ends bit-identical", async () => {
    const straight = join(tmp, "straight");
    const r = train(LISA, straight);
    assert.equal(r.code, 0, r.stderr);
    const sel = selections(straight);
    assert.equal(sel.length, 8);
    // intervals [0,3) [3,6) [6,8): one key per interval
    assert.equal(new Set(sel.slice(0, 3)).size, 1);
    assert.equal(new Set(sel.slice(3, 6)).size, 1);
    assert.ok(new Set(sel).size >= 2, `selections ${sel}`);
    const cfg = JSON.parse(readFileSync(join(straight, "selective_config.json"), "utf8"));
    assert.deepEqual([cfg.method, cfg.lisa_layers, cfg.lisa_interval, cfg.seed, cfg.steps], ["lisa", 1, 3, 3, 8]);
    const file = readSafetensors(join(straight, "trained_tensors.safetensors")).tensors;
    assert.ok(file["model.embed_tokens.weight"] && file["model.norm.weight"]);
    const base = await AutoModelForCausalLM.fromPretrained(MODEL);
    try {
      const ids = [[5, 17, 99, 300, 42, 7]];
      const before = (await base.forward({ inputIds: ids })).logits?.data as Float32Array;
      applyTrainedTensors(base, straight);
      const afterLoad = (await base.forward({ inputIds: ids })).logits?.data as Float32Array;
      assert.ok(afterLoad.some((v, i) => Math.abs(v - before[i]) > 1e-4));
      assert.equal(base.weights.get("lm_head.weight"), base.weights.get("model.embed_tokens.weight"));
    } finally {
      await base.release();
    }

    // Killed at the start of step 7: checkpoint-4 sits inside the second interval (steps 4–6).
    const killed = join(tmp, "killed");
    const k = train(LISA, killed, { PEFTKIT_FAULT_AT: "train:step#7" });
    assert.equal(k.signal, "SIGKILL", k.stderr);
    assert.ok(existsSync(join(killed, "checkpoint-4")) && !existsSync(join(killed, "trained_tensors.safetensors")));
    const again = train([...LISA, "--resume"], killed);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /resuming from .*checkpoint-4 \(step 4\)/);
    assert.deepEqual(selections(killed), sel);
    const got = readSafetensors(join(killed, "trained_tensors.safetensors")).tensors;
    assert.deepEqual(Object.keys(got).sort(), Object.keys(file).sort());
    for (const [key, t] of Object.entries(file)) assert.deepEqual(got[key].data, t.data, key);
  });

  test("HFT trains half of the block matrices (one stage); γ above the layer count is one usage line (exit 2)", () => {
    const out = join(tmp, "hft");
    const r = train(["--method", "hft", "--max-steps", "2", "--save-steps", "0"], out);
    assert.equal(r.code, 0, r.stderr);
    const names = Object.keys(readSafetensors(join(out, "trained_tensors.safetensors")).tensors);
    // 4 layers × 7 matrices / 2; no embeddings, norms or head
    assert.equal(names.length, 14);
    assert.ok(
      names.every((n) => /layers\.\d\.(self_attn|mlp)\.\w+_proj\.weight$/.test(n)),
      names.join(", "),
    );
    const bad = train(["--method", "lisa", "--lisa-layers", "5"], join(tmp, "bad"));
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr.trim().split("\n").length, 1, bad.stderr);
    assert.match(bad.stderr, /--lisa-layers: 5 is not a layer count in 1\.\.4 \(the model has 4 layers\)/);
  });
});
