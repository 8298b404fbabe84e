/**
 * `peftkit train --method lt_sft` end to end on models/wordnet-llama (4 + 4 steps): the kept
 * entries are the closed-form global top-K of phase 1's |θ₁ − θ₀|; merging the result changes
 * exactly those entries (every other base value bit-identical); the sparse-delta file equals the
 * adapter (and `peftkit delta export` of it); runs killed by SIGKILL in either phase resume to the
 * uninterrupted result (indices exactly, values within 1e-6).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import type { HostTensor } from "../engine/ir/host.js";
import { readSafetensors } from "../io/safetensors.js";
import { runCli } from "../testing/cli.js";
import { assertSafetensorsClose, assertTwoPhaseKillResume, MODEL, tempDir, trainWith, writeKindOfData } from "../testing/train-cli.js";

const tmp = tempDir("peftkit-lt-sft-cli-");
const data = writeKindOfData(tmp);
const TARGETS = ["q_proj", "v_proj", "down_proj"];
const ARGS = [
  ...["--model", MODEL, "--data", data, "--batch-size", "4", "--eval-fraction", "0", "--lr", "1e-3", "--seed", "3"],
  ...["--method", "lt_sft", "--target", TARGETS.join(","), "--density", "0.01", "--max-steps", "8", "--full-steps", "4"],
  ...["--save-steps", "2", "--threads", "1"],
];

const cli = runCli;
const trainArgs = trainWith(ARGS);
const train = (out: string, extra: string[] = [], env: Record<string, string> = {}) => trainArgs(extra, out, env);

const tensors = (file: string): Record<string, HostTensor> => readSafetensors(file).tensors;
/** "base_model.model.<module>.sft_delta.indices" → module. */
const moduleOf = (key: string) => key.replace(/^base_model\.model\./, "").replace(/\.sft_delta\.(indices|values)$/, "");

describe("peftkit train --method lt_sft", () => {
  const straight = join(tmp, "straight");

  test("global top-K of |θ₁ − θ₀|, only those entries change, the delta file, the adapter loads", () => {
    const r = train(straight);
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(straight, "adapter_config.json"), "utf8"));
    assert.equal(cfg.peft_type, "SFT");
    assert.equal(cfg.reselection_steps, 0);

    // Phase 1's values are θ₁ − θ₀ over whole weights; rank them all at once (ties: file order).
    const p1 = tensors(join(straight, "phase1", "adapter_model.safetensors"));
    const ranked: { module: string; pos: number; m: number }[] = [];
    let targeted = 0;
    for (const key of Object.keys(p1).filter((k) => k.endsWith(".indices"))) {
      const idx = p1[key].data as Int32Array;
      const val = p1[key.replace(/indices$/, "values")].data as Float32Array;
      targeted += idx.length;
      idx.forEach((pos, i) => {
        ranked.push({ module: moduleOf(key), pos, m: Math.abs(val[i]) });
      });
    }
    const k = Math.floor(0.01 * targeted);
    ranked.sort((a, b) => b.m - a.m);
    assert.ok(ranked[k - 1].m > ranked[k].m, "no tie at the threshold in this run");
    const expected = new Map<string, number[]>();
    for (const { module, pos } of ranked.slice(0, k)) expected.set(module, [...(expected.get(module) ?? []), pos]);
    for (const v of expected.values()) v.sort((a, b) => a - b);

    const p2 = tensors(join(straight, "adapter_model.safetensors"));
    const got = new Map<string, number[]>();
    for (const key of Object.keys(p2).filter((x) => x.endsWith(".indices"))) got.set(moduleOf(key), [...(p2[key].data as Int32Array)]);
    assert.deepEqual(got, expected);
    assert.deepEqual(cfg.num_deltas, Object.fromEntries([...expected].map(([m, p]) => [m, p.length])));

    // The delta file holds the adapter's entries under the base weights' names; export agrees byte for byte.
    const deltaFile = join(straight, "sparse_delta.safetensors");
    const delta = tensors(deltaFile);
    for (const [module, positions] of got) {
      assert.deepEqual([...(delta[`${module}.weight.sparse_indices`].data as Int32Array)], positions);
      assert.deepEqual(delta[`${module}.weight.sparse_values`].data, p2[`base_model.model.${module}.sft_delta.values`].data);
    }
    const exported = join(tmp, "exported.safetensors");
    const ex = cli(["delta", "export", "--adapter", straight, "--model", MODEL, "--output", exported]);
    assert.equal(ex.code, 0, ex.stderr);
    assert.deepEqual(readFileSync(exported), readFileSync(deltaFile));

    // Merged into the base: exactly the kept entries differ, by their trained values.
    const merged = join(tmp, "merged");
    const ap = cli(["delta", "apply", "--model", MODEL, "--input", deltaFile, "--output-dir", merged]);
    assert.equal(ap.code, 0, ap.stderr);
    const base = tensors(join(MODEL, "model.safetensors"));
    const after = tensors(join(merged, "model.safetensors"));
    assert.deepEqual(Object.keys(after).sort(), Object.keys(base).sort());
    let changed = 0;
    for (const [name, w] of Object.entries(base)) {
      const module = name.replace(/\.weight$/, "");
      const kept = new Set(got.get(module) ?? []);
      const values = delta[`${name}.sparse_values`]?.data as Float32Array | undefined;
      const positions = got.get(module) ?? [];
      const a = after[name].data as Float32Array;
      (w.data as Float32Array).forEach((v, i) => {
        if (!kept.has(i)) assert.ok(Object.is(a[i], v), `${name}[${i}] is not a kept entry but changed`);
      });
      positions.forEach((p, j) => {
        assert.equal(a[p], Math.fround((w.data as Float32Array)[p] + (values as Float32Array)[j]));
        if (a[p] !== (w.data as Float32Array)[p]) changed++;
      });
    }
    assert.ok(changed > 0.9 * k, `${changed} of ${k} kept entries moved in phase 2`);

    // A delta trained on a model with another delta merged in (LT-SFT's task delta on θ₀ + Δ_language)
    // carries that model's fingerprint unless --declare-base names θ₀.
    const baseOf = (f: string) => readSafetensors(f).metadata.base_model;
    const onMerged = join(tmp, "on-merged.safetensors");
    const declared = join(tmp, "declared.safetensors");
    assert.equal(cli(["delta", "export", "--adapter", straight, "--model", merged, "--output", onMerged]).code, 0);
    const dr = cli(["delta", "export", "--adapter", straight, "--model", merged, "--declare-base", MODEL, "--output", declared]);
    assert.equal(dr.code, 0, dr.stderr);
    assert.notEqual(baseOf(onMerged), baseOf(deltaFile));
    assert.equal(baseOf(declared), baseOf(deltaFile));
  });

  test("SIGKILL in phase 1 or in phase 2, then --resume: the uninterrupted result", () => {
    // Step hits count across the phases: #3 is phase 1's step 3, #7 phase 2's step 3 (checkpoint-2 of each).
    assertTwoPhaseKillResume(
      train,
      tmp,
      [
        ["phase1", 3, "phase1/checkpoint-2"],
        ["phase2", 7, "checkpoint-2"],
      ],
      (phase, out) =>
        assertSafetensorsClose(
          join(straight, "adapter_model.safetensors"),
          join(out, "adapter_model.safetensors"),
          (key) => (key.endsWith(".indices") ? 0 : 1e-6),
          `${phase} `,
        ),
    );
  });

  test("bad step settings are one line, exit 2", () => {
    for (const [extra, pattern] of [
      [["--full-steps", "8"], /--full-steps 8 must be below --max-steps 8/],
      [["--method", "lora", "--full-steps", "2"], /--full-steps is for --method lt_sft/],
    ] as const) {
      const r = train(join(tmp, "bad"), [...extra]);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, pattern);
    }
  });
});
