/**
 * The ComPEFT table of docs/methods/compeft.md: trained adapters of `peftkit compare` runs,
 * compressed at several densities and α, each evaluated with `peftkit eval` beside the original on
 * the run's own eval file. Rerunnable; compressed folders and eval results are cached in --work.
 *
 *   node dist/scripts/compeft-report.js [--runs runs/results/runs] [--tasks kind-of,chat-kind]
 *     [--methods lora.r=8,ia3.default] [--seed 0] [--densities 0.05,0.1,0.2,0.5] [--alphas 0.5,1,2,4]
 *     [--scopes global,per-tensor] [--work /tmp/compeft-report] [--docs docs/methods/compeft.md]
 *
 * With --docs the table replaces the one between the markers in that page; it is always printed.
 * "α tuned" picks α by the score on the same eval file, so it is an optimistic upper bound.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { pickAlpha } from "../src/cli/commands/compress.js";
import { compressAdapterFolder } from "../src/compress/file.js";
import { PACKAGE_ROOT } from "../src/util/paths.js";

const BEGIN = "<!-- compeft-report:begin -->";
const END = "<!-- compeft-report:end -->";
const CLI = join(PACKAGE_ROOT, "dist/src/cli/main.js");

const { values: a } = parseArgs({
  options: {
    runs: { type: "string", default: join(PACKAGE_ROOT, "runs/results/runs") },
    tasks: { type: "string", default: "kind-of,chat-kind" },
    methods: { type: "string", default: "lora.r=8" },
    seed: { type: "string", default: "0" },
    densities: { type: "string", default: "0.05,0.1,0.2,0.5" },
    alphas: { type: "string", default: "0.5,1,2,4" },
    scopes: { type: "string", default: "global,per-tensor" },
    work: { type: "string", default: "/tmp/compeft-report" },
    docs: { type: "string" },
  },
});
const list = (s: string | undefined) => (s ?? "").split(",").filter(Boolean);
const nums = (s: string | undefined) => list(s).map(Number);

interface Score {
  loss: number;
  score: number;
  metric: string;
}

/** The first score metric eval printed: exact match for generation, else accuracy. */
function scoreOf(m: Record<string, number>): Score {
  const metric = ["eval_exact_match", "eval_accuracy", "eval_token_accuracy"].find((k) => typeof m[k] === "number") ?? "eval_loss";
  return { loss: m.eval_loss, score: m[metric], metric: metric.replace(/^eval_/, "") };
}

function evaluate(model: string, adapter: string, data: string, maxLength: number, out: string): Score {
  if (!existsSync(out)) {
    const args = ["eval", "--model", model, "--adapter", adapter, "--data", data, "--max-length", String(maxLength), "--threads", "1"];
    const r = spawnSync(process.execPath, [CLI, ...args, "--output", out], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`peftkit ${args.join(" ")} failed:\n${r.stderr}`);
  }
  return scoreOf(JSON.parse(readFileSync(out, "utf8")) as Record<string, number>);
}

interface Row {
  run: string;
  scope: string;
  density: number;
  ratio: number;
  /** Source bytes over the compressed file's data section (the file minus its header). */
  payloadRatio: number;
  byAlpha: Map<number, Score>;
}

const fmt = (x: number, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : "–");
const signed = (x: number) => `${x >= 0 ? "+" : ""}${x.toFixed(3)}`;

const runs = readdirSync(a.runs);
const rows: Row[] = [];
const originals = new Map<string, { score: Score; bytes: number }>();
const alphas = nums(a.alphas);
for (const task of list(a.tasks))
  for (const method of list(a.methods)) {
    const name = runs.find((r) => r.startsWith(`${task}.${method}.s${a.seed}.`));
    if (!name) {
      console.error(`no run ${task}.${method}.s${a.seed}.* in ${a.runs}; skipped`);
      continue;
    }
    const runDir = join(a.runs, name);
    const spec = JSON.parse(readFileSync(join(runDir, "spec.json"), "utf8")) as { model: string; eval: string; maxLength: number };
    // Runs record absolute paths; a moved checkout finds the model and data at home.
    const model = existsSync(spec.model) ? spec.model : join(PACKAGE_ROOT, "models", basename(spec.model));
    const data = existsSync(spec.eval) ? spec.eval : resolve(a.runs, "../data", basename(spec.eval));
    const adapter = join(runDir, "adapter");
    const work = join(a.work, name);
    mkdirSync(work, { recursive: true });
    const original = evaluate(model, adapter, data, spec.maxLength, join(work, "original.eval.json"));
    originals.set(`${task}.${method}`, { score: original, bytes: readFileSync(join(adapter, "adapter_model.safetensors")).length });
    for (const scope of list(a.scopes))
      for (const density of nums(a.densities)) {
        const row: Row = { run: `${task}.${method}`, scope, density, ratio: 0, payloadRatio: 0, byAlpha: new Map() };
        for (const alpha of alphas) {
          const dir = join(work, `${scope}.d${density}.a${alpha}`);
          const s = compressAdapterFolder(adapter, dir, { density, alpha, scope: scope as "global" | "per-tensor" });
          row.ratio = s.ratio;
          const header = Number(readFileSync(s.output).readBigUInt64LE(0));
          row.payloadRatio = s.sourceBytes / (s.compressedBytes - 8 - header);
          row.byAlpha.set(alpha, evaluate(model, dir, data, spec.maxLength, join(dir, "eval.json")));
          process.stderr.write(`${name} ${scope} D=${density} α=${alpha}: ${fmt(row.byAlpha.get(alpha)?.score ?? Number.NaN)}\n`);
        }
        rows.push(row);
      }
  }

const lines: string[] = [];
for (const [run, o] of originals) {
  lines.push(
    `**${run}** (seed ${a.seed}): original ${o.score.metric} ${fmt(o.score.score)}, eval loss ${fmt(o.score.loss)}, adapter_model.safetensors ${o.bytes} bytes.`,
    "",
    `| scope | density | size ratio (file) | (data only) | ${alphas.map((x) => `α=${x}`).join(" | ")} | α tuned (Δ) | loss at α tuned |`,
    `|---|---:|---:|---:|${alphas.map(() => "---:").join("|")}|---:|---:|`,
  );
  for (const r of rows.filter((x) => x.run === run)) {
    // As --alpha auto: the best score, ties to the lower loss.
    const best = pickAlpha(
      alphas.map((x) => ({ alpha: x, score: r.byAlpha.get(x)?.score ?? null, loss: r.byAlpha.get(x)?.loss ?? Number.NaN })),
    ).alpha;
    const b = r.byAlpha.get(best) as Score;
    const cells = alphas.map((x) => fmt(r.byAlpha.get(x)?.score ?? Number.NaN));
    lines.push(
      `| ${r.scope} | ${r.density} | ${r.ratio.toFixed(1)}× | ${r.payloadRatio.toFixed(1)}× | ${cells.join(" | ")} | ${fmt(b.score)} at α=${best} (${signed(b.score - o.score.score)}) | ${fmt(b.loss)} |`,
    );
  }
  lines.push("");
}
const table = lines.join("\n");
console.log(table);
if (a.docs) {
  const doc = readFileSync(a.docs, "utf8");
  const i = doc.indexOf(BEGIN);
  const j = doc.indexOf(END);
  if (i < 0 || j < i) throw new Error(`${a.docs}: the markers ${BEGIN} … ${END} are missing`);
  writeFileSync(a.docs, `${doc.slice(0, i + BEGIN.length)}\n${table}\n${doc.slice(j)}`);
  console.error(`updated ${a.docs}`);
}
