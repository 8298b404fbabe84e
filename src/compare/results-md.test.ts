import assert from "node:assert/strict";
import { test } from "node:test";
import { resultsMarkdown } from "./results-md.js";
import type { CompareRow } from "./rows.js";

const row = (task: string, method: string, config: string, seed: number, value: number): CompareRow => ({
  run_id: `${task}.${method}.${config}.s${seed}.abc123`,
  task,
  method,
  config,
  budget: null,
  seed,
  trainable_params: method === "full" ? 1000 : 10,
  total_params: 1010,
  metric: "accuracy",
  metric_value: value,
  eval_metrics: { eval_accuracy: value },
  wall_s: 10 + seed,
  train_s: 5,
  tokens_per_s: 100,
  peak_rss_mb: 300 + seed,
  steps: 10,
  lr: 0.001,
  started_at: "2026-01-01T00:00:00Z",
  finished_at: "2026-01-01T00:00:10Z",
  peftkit_version: "0.1.0",
});

const rows = [
  row("cls", "lora", "r=8", 0, 0.5),
  row("cls", "lora", "r=8", 1, 0.6),
  row("cls", "lora", "r=8", 2, 0.7),
  row("cls", "full", "default", 0, 0.9),
  row("gen", "lora", "r=8", 0, 0.25),
];
const md = resultsMarkdown(rows, {
  command: "peftkit compare --suite wordnet-bench --seeds 3",
  machine: "Test CPU, 2 cores, 8 GB RAM, Node v20, onnxruntime-node 1.30.0",
  date: "2026-11-29",
  wallS: 600,
  tasks: [
    { name: "cls", metric: "accuracy", chance: 0.25 },
    { name: "gen", metric: "exact_match" },
  ],
  methods: ["lora", "bitfit", "ia3"],
  missing: [{ runId: "gen.bitfit.default.s0.abc123", reason: "the model has no biases" }],
  plots: { cls: ["results/cls-pareto.svg"] },
});

test("per task: mean ± sample std over seeds, full first as the reference, chance, wall and RSS", () => {
  // 0.5, 0.6, 0.7: mean 0.6, sample std 0.1; wall 10, 11, 12 → 11; RSS 300..302 → 301.
  assert.match(md, /\| lora \| r=8 \| 10 \| 0\.6000 ± 0\.1000 \(3\) \| 11\.0 \| 301 \|/);
  assert.match(md, /## cls[\s\S]*\| \*\*full\*\* \(reference\) \| default \| 1,000 \| 0\.9000 \(1\) \|[\s\S]*\| lora \|/);
  assert.match(md, /\| chance \| — \| 0 \| 0\.2500 \|/);
  assert.match(md, /!\[cls: results\/cls-pareto\.svg\]\(results\/cls-pareto\.svg\)/);
  assert.match(md, /Command: `peftkit compare --suite wordnet-bench --seeds 3`/);
  assert.match(md, /Machine: Test CPU, 2 cores/);
  assert.match(md, /Total wall time of the compare: 10\.0 min/);
});

test("runs without a row are shown with their reason; one anchor per method", () => {
  assert.match(md, /## gen[\s\S]*\| bitfit \| default \| — \| n\/a: the model has no biases \|/);
  for (const m of ["lora", "bitfit", "ia3"]) assert.equal(md.split(`<a id="method-${m}"></a>`).length, 2, m);
  assert.match(
    md,
    /### lora\n\n\| task[^\n]*\n[^\n]*\n\| cls \| r=8 \| 10 \| 0\.6000 ± 0\.1000 \(3\) \| 0\.9000 \(1\) \|\n\| gen \| r=8 \| 10 \| 0\.2500 \(1\) \| — \|/,
  );
  assert.match(md, /### ia3\n\n[^\n]*\n[^\n]*\n\| — \| — \| — \| not run \| — \|/);
});
