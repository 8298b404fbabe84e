/**
 * `npm run bench`: runs the benchmarks and writes BENCHMARKS.md (atomically: temp file + rename).
 * Every row carries the machine, date and command, so any figure can be reproduced.
 */
import { renameSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { runEngineBench } from "./engine.js";

const rows = await runEngineBench({ json: false });
const date = new Date().toISOString().slice(0, 10);
const machine = `${cpus()[0]?.model ?? "unknown"}, ${cpus().length} cores, Node ${process.version}`;
const cmd = "`npm run bench:engine`";
const mm = rows.filter((r) => r.bench === "matmul");
const block = rows.find((r) => r.bench === "block_step");
const f = (n: unknown, d = 1) => (typeof n === "number" ? n.toFixed(d) : String(n));
const lines = [
  "# Benchmarks",
  "",
  "Produced by `npm run bench`; do not edit by hand. Timings are medians; engine and bare ORT runs are interleaved so both see the same machine state.",
  "",
  "## Engine: matmul through the engine vs a bare single-node ORT session",
  "",
  "| case | engine GFLOP/s | bare ORT GFLOP/s | engine / bare | machine | date | command |",
  "|---|---|---|---|---|---|---|",
  ...mm.map((r) => `| ${r.case} | ${f(r.gflops)} | ${f(r.bare_gflops)} | ${f(r.engine_vs_bare, 3)} | ${machine} | ${date} | ${cmd} |`),
  "",
  "## Engine: one transformer block, forward + backward + AdamW in one session",
  "",
  "Frozen block weights, rank-16 low-rank updates on all 7 linear layers; GFLOP counted analytically; peak = best engine matmul above.",
  "",
  "| case | step ms | GFLOP | GFLOP/s | fraction of matmul peak | tokens/s | compile ms | machine | date | command |",
  "|---|---|---|---|---|---|---|---|---|---|",
  block
    ? `| ${block.case} | ${f(block.ms)} | ${f(block.analytic_gflop, 2)} | ${f(block.gflops)} | ${f((block.fraction_of_peak as number) * 100)}% | ${f(block.tokens_per_s, 0)} | ${f(block.compile_ms, 0)} | ${machine} | ${date} | ${cmd} |`
    : "| (not run) |",
  "",
];
const tmp = "BENCHMARKS.md.tmp";
writeFileSync(tmp, lines.join("\n"));
renameSync(tmp, "BENCHMARKS.md");
console.log("wrote BENCHMARKS.md");
