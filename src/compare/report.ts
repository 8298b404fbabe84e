/**
 * report.md and its SVG plots, regenerated from rows.jsonl alone (so `--report-only` and a
 * resumed compare give the same page): per task a mean ± std table, metric against trainable
 * parameters (log x, Pareto front marked), and time and peak memory per method/configuration.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../io/atomic-write.js";
import { type Aggregate, aggregate, type Stat } from "./aggregate.js";
import { barsSvg, scatterLogXSvg } from "./charts.js";
import { paretoFront } from "./pareto.js";
import type { CompareRow } from "./rows.js";
import { higherIsBetter } from "./task.js";

export interface ReportOptions {
  title?: string;
  /** Chance level per task, from the suite. */
  chance?: Record<string, number | undefined>;
  /** Run ids of the current plan: rows outside it are marked, and planned runs without a row counted. */
  planned?: readonly string[];
  /** The command line, shown at the top. */
  command?: string;
}

const fmt = (x: number, digits = 3) => (Number.isFinite(x) ? x.toFixed(digits) : "—");
const pm = (s: Stat, digits = 3) => (Number.isFinite(s.std) ? `${fmt(s.mean, digits)} ± ${fmt(s.std, digits)}` : fmt(s.mean, digits));

function fmtCount(n: number): string {
  return n.toLocaleString("en-US");
}

/** The label of an aggregate in tables and plots; the settings hash only when a task mixes settings. */
function label(a: Aggregate, mixed: boolean): string {
  const base = a.config === "default" ? a.method : `${a.method} ${a.config}`;
  return mixed ? `${base} [${a.settings}]` : base;
}

/** Writes report.md and plots/*.svg under `dir`; returns the report's text. */
export function writeReport(dir: string, rows: readonly CompareRow[], o: ReportOptions = {}): string {
  const aggs = aggregate(rows);
  const tasks = [...new Set(aggs.map((a) => a.task))];
  const plotsDir = join(dir, "plots");
  mkdirSync(plotsDir, { recursive: true });
  const lines: string[] = [`# ${o.title ?? "peftkit compare"}`, ""];
  if (o.command) lines.push(`Command: \`${o.command}\``, "");
  const ids = new Set(rows.map((r) => r.run_id));
  lines.push(`${ids.size} run(s) in rows.jsonl.`);
  if (o.planned) {
    const plan = new Set(o.planned);
    const missing = o.planned.filter((id) => !ids.has(id)).length;
    const extra = [...ids].filter((id) => !plan.has(id)).length;
    if (missing) lines.push(`${missing} planned run(s) have no row yet (rerun the same command to finish them).`);
    if (extra)
      lines.push(
        `${extra} row(s) come from runs outside this plan (an earlier compare with other arguments in this folder); they are included below.`,
      );
  }
  lines.push(
    "",
    "Mean ± sample standard deviation over seeds (n = seeds). Time is the run's wall time (load, train, evaluate); memory the run process's peak RSS.",
    "",
  );
  for (const task of tasks) {
    const ta = aggs.filter((a) => a.task === task);
    const metric = ta[0].metric;
    const higher = higherIsBetter(metric);
    // Settings hashes are shown only when one method/config ran under several settings (an earlier compare with other flags).
    const mixed = new Set(ta.map((a) => `${a.method}\u0000${a.config}`)).size < ta.length;
    const front = paretoFront(
      ta.map((a) => ({ params: a.trainable_params, value: a.value.mean })),
      higher,
    );
    const slug = task.replace(/[^a-z0-9_-]/gi, "_");
    const chance = o.chance?.[task];
    lines.push(`## ${task}`, "");
    lines.push(
      `Metric: ${metric} (${higher ? "higher" : "lower"} is better)${chance !== undefined ? `; chance ${fmt(chance)}` : ""}. ★ marks the Pareto front (no configuration has fewer trainable parameters and a better mean).`,
      "",
    );
    lines.push(`| method | config | ${metric} | n | trainable params | % of total | time (s) | peak RSS (MB) | tokens/s |`);
    lines.push("|---|---|---|---|---|---|---|---|---|");
    const total = new Map(rows.filter((r) => r.task === task).map((r) => [`${r.method}\u0000${r.config}`, r.total_params]));
    ta.forEach((a, i) => {
      const t = total.get(`${a.method}\u0000${a.config}`) ?? Number.NaN;
      lines.push(
        `| ${front.includes(i) ? "★ " : ""}${a.method} | ${a.config}${mixed ? ` [${a.settings}]` : ""} | ${pm(a.value, 4)} | ${a.value.n} | ${fmtCount(a.trainable_params)} | ${fmt((100 * a.trainable_params) / t, 3)} | ${pm(a.wall_s, 1)} | ${pm(a.peak_rss_mb, 0)} | ${fmt(a.tokens_per_s.mean, 0)} |`,
      );
    });
    const scatter = scatterLogXSvg(
      `${task}: ${metric} vs trainable parameters`,
      ta.map((a) => ({ x: a.trainable_params, y: a.value.mean, err: a.value.std, series: a.method, label: a.config })),
      front,
      { xLabel: "trainable parameters (log scale)", yLabel: metric, chance },
    );
    writeFileAtomic(join(plotsDir, `${slug}-pareto.svg`), scatter);
    const labels = ta.map((a) => label(a, mixed));
    const cost = barsSvg(`${task}: time and peak memory`, labels, [
      { name: "wall time (s)", bars: ta.map((a) => ({ label: label(a, mixed), value: a.wall_s.mean, err: a.wall_s.std })) },
      { name: "peak RSS (MB)", bars: ta.map((a) => ({ label: label(a, mixed), value: a.peak_rss_mb.mean, err: a.peak_rss_mb.std })) },
    ]);
    writeFileAtomic(join(plotsDir, `${slug}-cost.svg`), cost);
    lines.push(
      "",
      `![${task}: ${metric} vs trainable parameters](plots/${slug}-pareto.svg)`,
      "",
      `![${task}: time and memory](plots/${slug}-cost.svg)`,
      "",
    );
  }
  const text = `${lines.join("\n")}\n`;
  writeFileAtomic(join(dir, "report.md"), text);
  return text;
}
