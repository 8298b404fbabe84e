import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { aggregate, stat } from "./aggregate.js";
import { paretoFront } from "./pareto.js";
import type { CompareRow } from "./rows.js";

function row(task: string, method: string, config: string, seed: number, value: number, params: number, hash = "abc123"): CompareRow {
  return {
    run_id: `${task}.${method}.${config}.s${seed}.${hash}`,
    task,
    method,
    config,
    budget: null,
    seed,
    trainable_params: params,
    total_params: 1_000_000,
    metric: "accuracy",
    metric_value: value,
    eval_metrics: { eval_accuracy: value },
    wall_s: 10 + seed,
    train_s: 8,
    tokens_per_s: 1000,
    peak_rss_mb: 200 + 10 * seed,
    steps: 10,
    lr: 1e-3,
    started_at: "",
    finished_at: "",
    peftkit_version: "0.1.0",
  };
}

describe("aggregation", () => {
  test("mean and sample standard deviation (n − 1) per task/method/config", () => {
    // Values 0.5, 0.7, 0.9: mean 0.7, sample variance ((−0.2)² + 0 + 0.2²)/2 = 0.04, std 0.2.
    const rows = [
      row("t", "lora", "r=8", 0, 0.5, 100),
      row("t", "lora", "r=8", 1, 0.7, 100),
      row("t", "lora", "r=8", 2, 0.9, 100),
      row("t", "ia3", "default", 0, 0.4, 10),
    ];
    const a = aggregate(rows);
    assert.equal(a.length, 2);
    const lora = a.find((x) => x.method === "lora");
    assert.ok(lora);
    assert.equal(lora.value.n, 3);
    assert.ok(Math.abs(lora.value.mean - 0.7) < 1e-12);
    assert.ok(Math.abs(lora.value.std - 0.2) < 1e-12);
    assert.ok(Math.abs(lora.wall_s.mean - 11) < 1e-12 && Math.abs(lora.wall_s.std - 1) < 1e-12);
    assert.ok(Math.abs(lora.peak_rss_mb.std - 10) < 1e-12);
    const ia3 = a.find((x) => x.method === "ia3");
    assert.equal(ia3?.value.n, 1);
    assert.ok(Number.isNaN(ia3?.value.std), "one seed has no sample std");
  });

  test("a run id seen twice counts once; other settings make another group", () => {
    const rows = [
      row("t", "lora", "r=8", 0, 0.5, 100),
      row("t", "lora", "r=8", 0, 0.5, 100),
      row("t", "lora", "r=8", 0, 0.9, 100, "ffffff"),
    ];
    const a = aggregate(rows);
    assert.equal(a.length, 2);
    assert.deepEqual(
      a.map((x) => [x.settings, x.value.n]),
      [
        ["abc123", 1],
        ["ffffff", 1],
      ],
    );
  });

  test("stat of known values", () => {
    const s = stat([2, 4, 4, 4, 5, 5, 7, 9]);
    assert.equal(s.mean, 5);
    assert.ok(Math.abs(s.std - Math.sqrt(32 / 7)) < 1e-12);
  });
});

describe("Pareto front", () => {
  test("higher is better: dominated points are left out, ties in both are kept", () => {
    const pts = [
      { params: 100, value: 0.6 }, // front
      { params: 1000, value: 0.8 }, // front
      { params: 2000, value: 0.7 }, // dominated by 1000/0.8
      { params: 50, value: 0.3 }, // front (fewest params)
      { params: 100, value: 0.5 }, // dominated by 100/0.6 (same params, worse)
      { params: 5000, value: 0.8 }, // dominated by 1000/0.8 (more params, same value)
      { params: 10000, value: 0.95 }, // front
      { params: 300, value: Number.NaN }, // never on the front
    ];
    assert.deepEqual(paretoFront(pts, true), [3, 0, 1, 6]);
  });

  test("lower is better (eval_loss)", () => {
    const pts = [
      { params: 10, value: 3.0 },
      { params: 20, value: 2.5 },
      { params: 30, value: 2.7 },
      { params: 40, value: 2.0 },
    ];
    assert.deepEqual(paretoFront(pts, false), [0, 1, 3]);
  });

  test("identical points are both on the front", () => {
    assert.deepEqual(
      paretoFront(
        [
          { params: 10, value: 1 },
          { params: 10, value: 1 },
        ],
        true,
      ),
      [0, 1],
    );
  });
});
