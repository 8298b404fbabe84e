/**
 * search.md: the hypervolume against evaluations of every search in the folder that shares the space
 * and settings (BO and random, each seed), each search's Pareto front (compare/pareto.ts) and the
 * front's configurations as `peftkit train --config` YAML files under front/.
 */
import { mkdirSync, rmSync } from "node:fs";
import { join, relative } from "node:path";
import { stringify } from "yaml";
import { paretoFront } from "../compare/pareto.js";
import { writeFileAtomic } from "../io/atomic-write.js";
import { cost, hypervolumeTrace } from "./engine.js";
import type { Reference } from "./hypervolume.js";
import type { StateRow } from "./state.js";

export interface SearchRun {
  method: string;
  seed: number;
  rows: StateRow[];
}

export interface ReportContext {
  title: string;
  command: string;
  /** Lines describing the task, settings and space. */
  about: string[];
  metric: string;
  reference: Reference;
  referenceParams: number;
  /** The `peftkit train --config` mapping of a configuration (null: no YAML, e.g. --synthetic). */
  trainYaml: ((row: StateRow) => Record<string, unknown>) | null;
}

const fmt = (v: number, d = 4) => (Number.isFinite(v) ? v.toFixed(d) : "—");

/** Front rows of a search, fewest parameters first. */
export function frontOf(rows: readonly StateRow[]): StateRow[] {
  const ok = rows.filter((r) => Number.isFinite(r.score));
  return paretoFront(
    ok.map((r) => ({ params: r.params, value: r.score })),
    true,
  ).map((i) => ok[i]);
}

export function writeSearchReport(dir: string, runs: readonly SearchRun[], ctx: ReportContext): string {
  const lines: string[] = [`# ${ctx.title}`, "", `Command: \`${ctx.command}\``, "", ...ctx.about, ""];
  lines.push(
    `Objectives: ${ctx.metric} (higher is better) against trainable parameters (fewer is better). Hypervolume is the area dominated in (log10 trainable parameters, ${ctx.metric}) inside the reference point **(${ctx.referenceParams.toLocaleString("en-US")} parameters = ${fmt(ctx.reference.cost, 3)} decades, ${ctx.metric} ${ctx.reference.score})**, in decades × ${ctx.metric}.`,
    "",
  );
  const traces = runs.map((r) => ({ ...r, trace: hypervolumeTrace(r.rows, ctx.reference) }));
  lines.push(
    "## Hypervolume",
    "",
    "| search | seed | evaluations | final hypervolume | front size | best score |",
    "|---|---|---|---|---|---|",
  );
  for (const t of traces) {
    const best = Math.max(...t.rows.map((r) => r.score).filter(Number.isFinite));
    lines.push(`| ${t.method} | ${t.seed} | ${t.rows.length} | ${fmt(t.trace.at(-1) ?? 0)} | ${frontOf(t.rows).length} | ${fmt(best)} |`);
  }
  const byMethod = new Map<string, number[]>();
  for (const t of traces) byMethod.set(t.method, [...(byMethod.get(t.method) ?? []), t.trace.at(-1) ?? 0]);
  if (byMethod.size > 1) {
    lines.push("", "Mean final hypervolume per search method (over its seeds, at each search's own budget):", "");
    for (const [m, v] of byMethod) lines.push(`- ${m}: ${fmt(v.reduce((a, b) => a + b, 0) / v.length)} (${v.length} seed(s))`);
  }
  const longest = Math.max(0, ...traces.map((t) => t.trace.length));
  lines.push("", "Hypervolume after each evaluation:", "", `| evaluation | ${traces.map((t) => `${t.method} s${t.seed}`).join(" | ")} |`);
  lines.push(`|---|${traces.map(() => "---").join("|")}|`);
  for (let i = 0; i < longest; i++)
    lines.push(`| ${i + 1} | ${traces.map((t) => (i < t.trace.length ? fmt(t.trace[i]) : "")).join(" | ")} |`);
  for (const t of traces) {
    const front = frontOf(t.rows);
    const folder = join(dir, "front", `${t.method}-s${t.seed}`);
    if (ctx.trainYaml) {
      rmSync(folder, { recursive: true, force: true });
      mkdirSync(folder, { recursive: true });
    }
    lines.push("", `## Pareto front: ${t.method}, seed ${t.seed}`, "");
    lines.push(`| configuration | trainable params | ${ctx.metric} | evaluation | origin |${ctx.trainYaml ? " train config |" : ""}`);
    lines.push(`|---|---|---|---|---|${ctx.trainYaml ? "---|" : ""}`);
    front.forEach((r, k) => {
      let yamlCell = "";
      if (ctx.trainYaml) {
        const file = join(folder, `${String(k + 1).padStart(2, "0")}-${r.config.method}.yaml`);
        const head = `# peftkit search front point (${t.method}, seed ${t.seed}): ${r.label}, ${ctx.metric} ${fmt(r.score)}, ${r.params} trainable parameters\n# peftkit train --config ${relative(dir, file)} --output-dir OUT\n`;
        writeFileAtomic(file, head + stringify(ctx.trainYaml(r)));
        yamlCell = ` ${relative(dir, file)} |`;
      }
      lines.push(`| ${r.label} | ${r.params.toLocaleString("en-US")} | ${fmt(r.score)} | ${r.index + 1} | ${r.origin} |${yamlCell}`);
    });
    lines.push(
      "",
      `<details><summary>All ${t.rows.length} evaluations</summary>`,
      "",
      "| # | origin | configuration | trainable params | log10 | score |",
      "|---|---|---|---|---|---|",
    );
    for (const r of t.rows)
      lines.push(
        `| ${r.index + 1} | ${r.origin} | ${r.label} | ${r.params.toLocaleString("en-US")} | ${fmt(cost(r.params), 3)} | ${fmt(r.score)} |`,
      );
    lines.push("", "</details>");
  }
  const path = join(dir, "search.md");
  writeFileAtomic(path, `${lines.join("\n")}\n`);
  return path;
}
