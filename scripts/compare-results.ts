/**
 * `npm run compare`: runs `peftkit compare --suite wordnet-bench` for every method family plus
 * full fine-tuning (3 seeds, 2 runs at once) into runs/results/ (gitignored; rerun to resume),
 * then writes docs/results.md and copies the plots to docs/results/.
 *
 *   npm run compare -- [--max-steps N] [--batch-size N] [--jobs N] [--seeds N] [--tasks a,b] [--methods a,b]
 *                      [--output-dir DIR] [--report-only] [--docs DIR]
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { parse as parseYaml } from "yaml";
import { aggregate } from "../src/compare/aggregate.js";
import { type ResultsMeta, resultsMarkdown } from "../src/compare/results-md.js";
import { readRows } from "../src/compare/rows.js";
import { buildWordnetBench } from "../src/data/wordnet-bench/index.js";
import { benchTable, type Ceiling, replaceTable } from "../src/data/wordnet-bench/table.js";
import { PACKAGE_ROOT } from "../src/util/paths.js";

const METHODS = [
  "lora",
  "dora",
  "pissa",
  "corda",
  "ia3",
  "adapter",
  "prompt",
  "prefix",
  "ssf",
  "bitfit",
  "ln_tuning",
  "loha",
  "lokr",
  "oft",
  "boft",
  "hra",
  "vera",
  "svfit",
  "kasa",
  "loldu",
  "adalora",
  "increlora",
  "fourierft",
  "triadaptlora",
  "pego",
  "lora_ggpo",
  "snell",
  "snella",
  "hut",
  "soka",
  "lora_sb",
  "loca",
  "spiel",
  "spt",
  "sara",
  "id3",
  "lt_sft",
  "s2ft",
  "lisa",
  "hft",
  "dsee",
  "ramt",
  "lowbit",
  "ist",
  "pat",
  "light_peft",
  "gradnorm_lorp",
  "poly",
  "mezo_lora",
  "mezo",
  "sparse_mezo",
  "graft",
  "full",
];
const CLI = join(PACKAGE_ROOT, "dist/src/cli/main.js");

const { values: a } = parseArgs({
  options: {
    /** 300 steps of 16 examples: about 1.2 epochs of the 4000-example tasks (see docs/results.md). */
    "max-steps": { type: "string", default: "300" },
    "batch-size": { type: "string", default: "16" },
    jobs: { type: "string", default: "2" },
    seeds: { type: "string", default: "3" },
    tasks: { type: "string" },
    methods: { type: "string", default: METHODS.join(",") },
    "output-dir": { type: "string", default: "runs/results" },
    "report-only": { type: "boolean", default: false },
    /** Where results.md and results/ go (a test run points this elsewhere). */
    docs: { type: "string", default: "docs" },
  },
});
const DOCS = resolve(PACKAGE_ROOT, a.docs as string);
const out = resolve(PACKAGE_ROOT, a["output-dir"] as string);
const args = ["compare", "--suite", "wordnet-bench", "--methods", a.methods as string, "--seeds", a.seeds as string];
args.push("--jobs", a.jobs as string, "--output-dir", out);
args.push("--max-steps", a["max-steps"] as string, "--batch-size", a["batch-size"] as string);
if (a.tasks) args.push("--tasks", a.tasks);
const command = `peftkit ${args.join(" ").replace(out, a["output-dir"] as string)}`;
/** The passthrough arguments as given (minus --docs, a test aid), for the page. */
/** --report-only only redraws the page: the command shown is the one that made the rows. */
const passed = process.argv
  .slice(2)
  .filter((x, i, all) => x !== "--docs" && all[i - 1] !== "--docs" && !x.startsWith("--docs=") && x !== "--report-only");
const wallFile = join(out, "results-wall.json");

function peftkit(extra: string[], inherit: boolean): string {
  const r = spawnSync(process.execPath, [CLI, ...args, ...extra], { stdio: inherit ? "inherit" : "pipe", encoding: "utf8" });
  if (r.status !== 0 && r.status !== 1)
    throw new Error(`peftkit compare exited with ${r.status ?? r.signal}${inherit ? "" : `: ${r.stderr}`}`);
  return inherit ? "" : r.stdout;
}

/** Wall time over every invocation that ran runs (a resumed compare adds up). */
let wallS: number | null = existsSync(wallFile) ? (JSON.parse(readFileSync(wallFile, "utf8")) as { wall_s: number }).wall_s : null;
if (!a["report-only"]) {
  const t0 = performance.now();
  peftkit([], true);
  wallS = (wallS ?? 0) + (performance.now() - t0) / 1000;
  writeFileSync(wallFile, `${JSON.stringify({ wall_s: Math.round(wallS) })}\n`);
}

// The plan (what should have a row) and, for runs without one, the last error line of their log.
const planned = peftkit(["--dry-run"], false)
  .split("\n")
  .filter((l) => /^(todo|done) /.test(l))
  .map((l) => l.split(" ")[1]);
const { rows } = readRows(join(out, "rows.jsonl"));
const have = new Set(rows.map((r) => r.run_id));
const missing = planned
  .filter((id) => !have.has(id))
  .map((runId) => {
    const log = join(out, "runs", runId, "log.txt");
    const lines = existsSync(log) ? readFileSync(log, "utf8").trim().split("\n") : [];
    const err = lines.filter((l) => l.startsWith("peftkit")).pop();
    return { runId, reason: err ? err.replace(/^peftkit( compare run)?: /, "") : "not run yet" };
  });
const keep = new Set(planned);
const suite = parseYaml(readFileSync(join(out, "data", "suite.yaml"), "utf8")) as { tasks: ResultsMeta["tasks"] };
const tasks = suite.tasks
  .filter((t) => !a.tasks || (a.tasks as string).split(",").includes(t.name))
  .map(({ name, metric, chance, description }) => ({ name, metric, chance, description }));

// Plots next to the page, so the docs do not point into a gitignored folder.
const plots: Record<string, string[]> = {};
const plotDir = join(out, "plots");
if (existsSync(plotDir)) {
  mkdirSync(join(DOCS, "results"), { recursive: true });
  for (const f of readdirSync(plotDir).filter((x) => x.endsWith(".svg"))) {
    copyFileSync(join(plotDir, f), join(DOCS, "results", f));
    const task = tasks.find((t) => f === `${t.name}-pareto.svg` || f === `${t.name}-cost.svg`);
    if (task) plots[task.name] = [...(plots[task.name] ?? []), `results/${f}`];
  }
}
const ort = (JSON.parse(readFileSync(join(PACKAGE_ROOT, "node_modules/onnxruntime-node/package.json"), "utf8")) as { version: string })
  .version;
const machine = `${cpus()[0]?.model.trim() ?? "unknown CPU"}, ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GB RAM, Node ${process.version}, onnxruntime-node ${ort}`;
const md = resultsMarkdown(
  rows.filter((r) => keep.has(r.run_id)),
  {
    command: `npm run compare${passed.length ? ` -- ${passed.join(" ")}` : ""}`,
    compare: command,
    machine,
    date: new Date().toISOString().slice(0, 10),
    wallS,
    tasks,
    methods: (a.methods as string).split(",").filter((m) => m !== "full"),
    missing,
    plots,
  },
);
// Results that are not one compare row per task and method (compressed and merged adapters, the
// configuration search, multi-task and zeroth-order curves) come from their own scripts; their
// tables are kept in one hand-updated page and appended, so results.md stays the one place to look.
const postHoc = join(DOCS, "results", "post-hoc.md");
writeFileSync(join(DOCS, "results.md"), existsSync(postHoc) ? `${md.trimEnd()}\n\n${readFileSync(postHoc, "utf8")}` : md);

// Full fine-tuning's scores are the suite's ceilings: kept in docs/results/ceilings.json (tasks
// not run this time keep their earlier value) and shown in docs/wordnet-bench.md's table.
const ceilingsFile = join(DOCS, "results", "ceilings.json");
const ceilings: Record<string, Ceiling> = existsSync(ceilingsFile) ? JSON.parse(readFileSync(ceilingsFile, "utf8")) : {};
for (const g of aggregate(rows.filter((r) => keep.has(r.run_id) && r.method === "full")))
  ceilings[g.task] = { metric: g.metric, mean: g.value.mean, std: g.value.n > 1 ? g.value.std : null, n: g.value.n };
mkdirSync(join(DOCS, "results"), { recursive: true });
writeFileSync(ceilingsFile, `${JSON.stringify(ceilings, null, 2)}\n`);
if (DOCS === join(PACKAGE_ROOT, "docs")) {
  const page = join(DOCS, "wordnet-bench.md");
  writeFileSync(page, replaceTable(readFileSync(page, "utf8"), benchTable(buildWordnetBench(), ceilings)));
}
console.log(`wrote ${join(DOCS, "results.md")} (${rows.length} row(s), ${missing.length} planned run(s) without a row)`);
