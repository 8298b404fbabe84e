/** Mean ± sample standard deviation per (task, method, configuration) over seeds. */
import type { CompareRow } from "./rows.js";

export interface Stat {
  mean: number;
  /** Sample standard deviation (n − 1); NaN for a single value. */
  std: number;
  n: number;
}

export interface Aggregate {
  task: string;
  method: string;
  config: string;
  metric: string;
  value: Stat;
  trainable_params: number;
  wall_s: Stat;
  peak_rss_mb: Stat;
  tokens_per_s: Stat;
  /** The settings hash of the group's run ids (see plan.ts). */
  settings: string;
}

export function stat(xs: readonly number[]): Stat {
  const n = xs.length;
  if (n === 0) return { mean: Number.NaN, std: Number.NaN, n };
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const std = n > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1)) : Number.NaN;
  return { mean, std, n };
}

/** The settings hash of a run id (its last dot-separated part). */
export function settingsOf(runId: string): string {
  return runId.slice(runId.lastIndexOf(".") + 1);
}

/**
 * One aggregate per (task, method, config, settings hash), in first-seen order; a run id seen
 * twice counts once (the later row wins).
 */
export function aggregate(rows: readonly CompareRow[]): Aggregate[] {
  const byId = new Map<string, CompareRow>();
  for (const r of rows) byId.set(r.run_id, r);
  const groups = new Map<string, CompareRow[]>();
  for (const r of byId.values()) {
    const key = [r.task, r.method, r.config, settingsOf(r.run_id)].join("\u0000");
    const g = groups.get(key);
    if (g) g.push(r);
    else groups.set(key, [r]);
  }
  return [...groups.values()].map((g) => ({
    task: g[0].task,
    method: g[0].method,
    config: g[0].config,
    metric: g[0].metric,
    value: stat(g.map((r) => r.metric_value)),
    trainable_params: Math.round(stat(g.map((r) => r.trainable_params)).mean),
    wall_s: stat(g.map((r) => r.wall_s)),
    peak_rss_mb: stat(g.map((r) => r.peak_rss_mb)),
    tokens_per_s: stat(g.map((r) => r.tokens_per_s)),
    settings: settingsOf(g[0].run_id),
  }));
}
