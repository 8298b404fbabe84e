/**
 * `peftkit train --method mezo|sparse_mezo` end to end on the embedded model: full weights and
 * over LoRA, a run SIGKILLed after a checkpoint and resumed ends bit-identical to an
 * uninterrupted one (z is a function of (seed, step); Sparse MeZO's thresholds come from the
 * checkpoint, not from the moved weights), and the usage errors are one line naming the flag.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { readSafetensors } from "../../io/safetensors.js";
import { runCli } from "../../testing/cli.js";
import { GOLDEN_MODELS } from "../../testing/paths.js";
import { kindOfTrainArgs, MODEL, tempDir, trainWith, writeKindOfData } from "../../testing/train-cli.js";

const tmp = tempDir("peftkit-mezo-cli-");
const data = writeKindOfData(tmp);
const train = trainWith([...kindOfTrainArgs(data), "--max-steps", "6", "--seed", "5", "--save-steps", "3"]);

const metrics = (dir: string) =>
  readFileSync(join(dir, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { loss: number; projected_grad: number; lr: number });

/** `peftkit eval`'s eval loss for an output folder (an adapter, or trained base tensors). */
function peftkitEvalLoss(adapter: string, data: string): number {
  const out = join(adapter, "peftkit-eval.json");
  const r = runCli(["eval", "--model", MODEL, "--adapter", adapter, "--data", data, "--batch-size", "4", "--output", out]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(readFileSync(out, "utf8")).eval_loss as number;
}

function assertResumeExact(args: string[], file: string, name: string): void {
  const straight = join(tmp, `${name}-straight`);
  const r = train(args, straight);
  assert.equal(r.code, 0, r.stderr);
  const killed = join(tmp, `${name}-killed`);
  const k = train(args, killed, { PEFTKIT_FAULT_AT: "train:step#5" });
  assert.equal(k.signal, "SIGKILL", k.stderr);
  assert.ok(existsSync(join(killed, "checkpoint-3")) && !existsSync(join(killed, file)));
  const again = train([...args, "--resume"], killed);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /resuming from .*checkpoint-3 \(step 3\)/);
  assert.deepEqual(metrics(killed), metrics(straight));
  const want = readSafetensors(join(straight, file)).tensors;
  const got = readSafetensors(join(killed, file)).tensors;
  assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
  for (const [key, t] of Object.entries(want)) assert.deepEqual(got[key].data, t.data, key);
}

describe("peftkit train --method mezo / sparse_mezo", () => {
  test("full weights: the constant lr default, the saved form, and SIGKILL + --resume ends bit-identical", () => {
    assertResumeExact(["--method", "mezo", "--lr", "1e-5", "--target", "q_proj,v_proj"], "trained_tensors.safetensors", "full");
    const dir = join(tmp, "full-straight");
    const m = metrics(dir);
    assert.ok(
      m.every((x) => x.lr === 1e-5),
      "constant schedule by default",
    );
    assert.ok(m.every((x) => Number.isFinite(x.projected_grad) && x.projected_grad !== 0));
    const cfg = JSON.parse(readFileSync(join(dir, "selective_config.json"), "utf8"));
    assert.deepEqual([cfg.method, cfg.zo.zo_eps, cfg.zo.zo_sparsity, cfg.steps], ["mezo", 1e-3, null, 6]);
    const names = Object.keys(readSafetensors(join(dir, "trained_tensors.safetensors")).tensors);
    assert.equal(names.length, 8, names.join(", "));
    assert.ok(names.every((n) => /\.(q|v)_proj\.weight$/.test(n)));
  });

  test("sparse_mezo over LoRA: resume is exact (thresholds from the checkpoint)", () => {
    assertResumeExact(
      ["--method", "sparse_mezo", "--zo-over", "lora", "--r", "2", "--zo-sparsity", "0.5", "--lr", "1e-2", "--zo-eps", "1e-2"],
      "adapter_model.safetensors",
      "sparse-lora",
    );
    assert.ok(existsSync(join(tmp, "sparse-lora-straight", "adapter_config.json")));
  });

  test("--zo-split trains every weight to the same values bit for bit (the looked-up rows, the blocked head)", () => {
    const runs = ["one-graph", "split"].map((name) => {
      const dir = join(tmp, name);
      const r = train(["--method", "mezo", "--lr", "1e-5", ...(name === "split" ? ["--zo-split"] : [])], dir);
      assert.equal(r.code, 0, r.stderr);
      return { dir, tensors: readSafetensors(join(dir, "trained_tensors.safetensors")).tensors };
    });
    assert.deepEqual(metrics(runs[1].dir), metrics(runs[0].dir));
    assert.ok(Object.keys(runs[0].tensors).some((n) => n.includes("embed_tokens")));
    for (const [key, t] of Object.entries(runs[0].tensors)) assert.deepEqual(runs[1].tensors[key].data, t.data, key);
  });

  test("--eval-data / --eval-steps: evaluated every N steps and at the end, on the weights as they stand", () => {
    const evalData = join(tmp, "train.jsonl");
    const evalRows = (dir: string) =>
      readFileSync(join(dir, "metrics.jsonl"), "utf8")
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { step: number; eval_loss?: number; eval_exact_match?: number })
        .filter((r) => r.eval_loss !== undefined);
    // over LoRA: the last evaluation is what `peftkit eval` gives the saved adapter
    const lora = join(tmp, "eval-lora");
    const args = [
      "--method",
      "mezo",
      "--zo-over",
      "lora",
      "--lr",
      "1e-1",
      "--zo-eps",
      "1e-2",
      "--eval-data",
      evalData,
      "--eval-steps",
      "4",
    ];
    const r = train(args, lora);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /eval at step 4: eval_loss/);
    const rows = evalRows(lora);
    assert.deepEqual(
      rows.map((x) => x.step),
      [4, 6],
    );
    assert.ok(rows.every((x) => x.eval_exact_match !== undefined));
    const want = peftkitEvalLoss(lora, evalData);
    assert.ok(Math.abs((rows[1].eval_loss as number) - want) < 1e-5 * want, `${rows[1].eval_loss} vs peftkit eval ${want}`);
    // full weights, trained in place: evaluating along the way changes nothing, and the last
    // evaluation equals that of a run evaluated only at its end
    const full = ["--method", "mezo", "--lr", "1e-4", "--eval-data", evalData];
    const along = train([...full, "--eval-steps", "2"], join(tmp, "eval-full"));
    const once = train(full, join(tmp, "eval-full-once"));
    assert.equal(along.code + once.code, 0, along.stderr + once.stderr);
    const losses = evalRows(join(tmp, "eval-full")).map((x) => x.eval_loss as number);
    assert.equal(losses.length, 3);
    assert.equal(new Set(losses).size, 3, `evaluations did not change: ${losses}`);
    assert.deepEqual(
      evalRows(join(tmp, "eval-full-once")).map((x) => x.eval_loss),
      [losses[2]],
    );
    // `peftkit eval --adapter` takes the trained-tensors folder too, and agrees
    const got = peftkitEvalLoss(join(tmp, "eval-full"), evalData);
    assert.ok(Math.abs(got - losses[2]) < 1e-5 * got, `${got} vs ${losses[2]}`);
    const other = runCli(["eval", "--model", join(GOLDEN_MODELS, "llama_basic"), "--adapter", join(tmp, "eval-full"), "--data", evalData]);
    assert.equal(other.code, 1, other.stderr);
    assert.match(other.stderr, /selective_config\.json: base_model \S+ is not this model's weights/);
  });

  test("usage errors name the flag (exit 2, one line)", () => {
    const cases: [string[], RegExp][] = [
      [["--method", "sparse_mezo", "--zo-sparsity", "1"], /--zo-sparsity must be in \[0, 1\), got 1/],
      [["--method", "mezo", "--grad-accum", "2"], /--grad-accum 2: --method mezo takes one batch per step/],
      [["--method", "mezo", "--zo-sparsity", "0.5"], /--zo-sparsity is for --method sparse_mezo, not mezo/],
      [["--method", "lora", "--zo-over", "lora"], /--zo-over is for --method mezo or sparse_mezo, not lora/],
      [["--method", "lora", "--zo-split"], /--zo-split is for --method mezo or sparse_mezo, not lora/],
      [
        ["--method", "mezo", "--early-stopping-patience", "2"],
        /--early-stopping-patience: --method mezo evaluates \(--eval-steps\) but does not stop early/,
      ],
      [["--method", "mezo", "--zo-eps", "0"], /--zo-eps must be > 0, got 0/],
    ];
    for (const [args, re] of cases) {
      const r = train(args, join(tmp, "bad"));
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, re);
    }
  });
});
