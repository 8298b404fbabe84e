/**
 * `peftkit delta`: sparse deltas (docs/formats/sparse-delta.md) as artifacts.
 *   export   an SFT adapter folder (SpIEL, LT-SFT) → one sparse-delta file
 *   compose  several delta files for one base model → their sum (LT-SFT's Δ_language + Δ_task)
 *   merge    Σ w_i·Δ_i into one delta file (--weights, --negate: task-vector negation −λ·Δ)
 *   apply    delta files merged into (or, with --subtract, taken out of) a model → a full model folder
 *   info     what a delta file holds
 */
import { copyFileSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fsyncFile, replaceDir, tmpPath } from "../../io/atomic-write.js";
import { composeDeltaSets, mergeDeltaSet, type NamedDeltaSet, weightedDeltaSum } from "../../sparse/compose.js";
import { SparseDeltaError } from "../../sparse/delta.js";
import { sftDeltaSet } from "../../sparse/export.js";
import { loadSparseDeltas, saveSparseDeltas } from "../../sparse/file.js";
import { weightsFingerprint } from "../../util/fingerprint.js";
import { type CommandSpec, type Flags, UsageError } from "../args.js";
import { loadModelAndAdapter } from "../load.js";
import { TOKENIZER_FILES } from "./merge.js";
import { parseWeights } from "./merge-adapters.js";

const ACTIONS = ["export", "compose", "merge", "apply", "info"] as const;

/** The weighted sum the flags ask for, or null when they ask for a plain sum (no --weights, no --negate). */
function weighted(o: Flags, sets: NamedDeltaSet[]): NamedDeltaSet | null {
  if (o.weights === undefined && !o.negate) return null;
  const w = parseWeights(o.weights as string[] | undefined, sets.length, Boolean(o.negate), "--input file");
  return { set: weightedDeltaSum(sets, w), file: sets.map((s, i) => `${w[i]}·${s.file}`).join(" + ") };
}

function inputs(o: Flags, least: number): NamedDeltaSet[] {
  const files = (o.input as string[] | undefined) ?? [];
  if (files.length < least)
    throw new UsageError(`delta ${o.action}: --input needs at least ${least} sparse-delta file${least > 1 ? "s" : ""}`);
  return files.map((file) => {
    if (!existsSync(file)) throw new UsageError(`--input ${file}: no such file`);
    return { file, set: loadSparseDeltas(file) };
  });
}

function requireFlag(o: Flags, flag: string): string {
  const v = o[flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())];
  if (typeof v !== "string" || v === "") throw new UsageError(`delta ${o.action}: --${flag} is required`);
  return v;
}

async function exportDelta(o: Flags): Promise<number> {
  const adapter = requireFlag(o, "adapter");
  const output = requireFlag(o, "output");
  const { model, peft } = await loadModelAndAdapter(requireFlag(o, "model"), { adapter, threads: o.threads as number | undefined });
  const a = (peft as NonNullable<typeof peft>).adapter("default");
  if (a.tuner.peftType !== "SFT")
    throw new SparseDeltaError(
      `${adapter}: a ${a.tuner.peftType} adapter; only sparse (SFT: spiel, lt_sft) adapters export as sparse deltas`,
    );
  let set = sftDeltaSet((peft as NonNullable<typeof peft>).info, a.tensors, adapter);
  await model.release();
  const declared = o.declareBase as string | undefined;
  if (declared) {
    // LT-SFT's task delta, trained on θ₀ + Δ_language: it composes with other languages' deltas on θ₀.
    const { model: other } = await loadModelAndAdapter(declared, { threads: o.threads as number | undefined });
    set = { ...set, baseModel: weightsFingerprint(other.weights) };
    await other.release();
  }
  saveSparseDeltas(output, set);
  const n = [...set.deltas.values()].reduce((s, d) => s + d.indices.length, 0);
  console.log(`wrote ${output}: ${n} entries in ${set.deltas.size} weights (base model ${set.baseModel})`);
  return 0;
}

function compose(o: Flags): number {
  const output = requireFlag(o, "output");
  const merge = o.action === "merge";
  const sets = inputs(o, merge ? 1 : 2);
  const w = weighted(o, sets);
  const sum = w
    ? w.set
    : merge
      ? weightedDeltaSum(
          sets,
          sets.map(() => 1),
        )
      : composeDeltaSets(sets);
  saveSparseDeltas(output, sum);
  const n = [...sum.deltas.values()].reduce((s, d) => s + d.indices.length, 0);
  console.log(`wrote ${output}: ${w ? w.file : `the sum of ${sets.length} deltas`}, ${n} entries in ${sum.deltas.size} weights`);
  return 0;
}

async function apply(o: Flags): Promise<number> {
  const modelDir = requireFlag(o, "model");
  const out = requireFlag(o, "output-dir");
  if (existsSync(join(out, "config.json"))) throw new UsageError(`--output-dir ${out} already holds a model; choose another folder`);
  const sets = inputs(o, 1);
  // One sum, applied once: every file is checked against the same (unchanged) base.
  const sum =
    weighted(o, sets) ?? (sets.length === 1 ? sets[0] : { set: composeDeltaSets(sets), file: sets.map((s) => s.file).join(" + ") });
  const { model } = await loadModelAndAdapter(modelDir, { threads: o.threads as number | undefined });
  const subtract = Boolean(o.subtract);
  for (const [name, w] of mergeDeltaSet(model.weights, sum, subtract ? -1 : 1)) model.weights.set(name, w);
  const tmp = tmpPath(out.replace(/\/$/, ""));
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  model.savePretrained(tmp, { dtype: o.dtype as "f32" | "f16" | "bf16" });
  for (const f of TOKENIZER_FILES) {
    if (!existsSync(join(modelDir, f))) continue;
    copyFileSync(join(modelDir, f), join(tmp, f));
    fsyncFile(join(tmp, f));
  }
  replaceDir(tmp, out);
  await model.release();
  console.log(
    `${subtract ? "subtracted" : "merged"} ${sets.map((s) => s.file).join(", ")} ${subtract ? "from" : "into"} ${modelDir}: wrote ${out}`,
  );
  return 0;
}

function info(o: Flags): number {
  for (const { file, set } of inputs(o, 1)) {
    const n = [...set.deltas.values()].reduce((s, d) => s + d.indices.length, 0);
    console.log(`${file}: ${n} entries in ${set.deltas.size} weights, base model ${set.baseModel ?? "unknown"}`);
    for (const [name, d] of set.deltas) {
      const size = d.shape.reduce((a, b) => a * b, 1);
      console.log(`  ${name} [${d.shape.join(", ")}]: ${d.indices.length} entries (${((100 * d.indices.length) / size).toFixed(3)}%)`);
    }
  }
  return 0;
}

export const deltaCommand: CommandSpec = {
  name: "delta",
  summary: "Export, compose, merge (weighted sums, negation), apply (or subtract) and inspect sparse-delta files (SpIEL, LT-SFT).",
  usage: "peftkit delta export|compose|merge|apply|info [options]",
  flags: [
    { name: "action", type: "string", meta: "ACTION", help: "what to do", choices: ACTIONS, required: true },
    { name: "input", type: "list", meta: "FILES", help: "compose/merge/apply/info: sparse-delta files, comma-separated" },
    {
      name: "weights",
      type: "list",
      meta: "W1,W2,…",
      help: "compose/merge/apply: Σ w_i·Δ_i, one weight per --input file, negative allowed (default: 1 each)",
    },
    { name: "negate", type: "boolean", help: "compose/merge/apply: use −w for every weight (task-vector negation θ − λ·Δ)" },
    { name: "adapter", type: "string", meta: "DIR", help: "export: an SFT adapter folder (--method spiel or lt_sft)" },
    { name: "model", type: "string", meta: "DIR", help: "export/apply: the base model folder" },
    { name: "output", type: "string", meta: "FILE", help: "export/compose/merge: the sparse-delta file to write" },
    {
      name: "declare-base",
      type: "string",
      meta: "DIR",
      help: "export: record this model's fingerprint as the delta's base instead of --model's (a task delta trained on a model with a language delta merged in)",
    },
    { name: "output-dir", type: "string", meta: "DIR", help: "apply: where to write the full model" },
    { name: "subtract", type: "boolean", help: "apply: take the deltas out of the model instead of adding them (unmerge)" },
    { name: "dtype", type: "string", help: "apply: weight dtype of the output", default: "f32", choices: ["f32", "f16", "bf16"] },
  ],
  examples: [
    "peftkit delta export --adapter runs/lt-lang --model models/wordnet-llama --output lang.safetensors",
    "peftkit delta compose --input lang.safetensors,task.safetensors --output both.safetensors",
    "peftkit delta merge --input a.safetensors,b.safetensors --weights 0.5,0.5 --output mean.safetensors",
    "peftkit delta merge --input task.safetensors --negate --output minus-task.safetensors",
    "peftkit delta apply --model models/wordnet-llama --input lang.safetensors,task.safetensors --output-dir merged",
    "peftkit delta apply --model merged --input task.safetensors --subtract --output-dir lang-only",
    "peftkit delta info --input both.safetensors",
  ],
  async run(o) {
    switch (o.action as (typeof ACTIONS)[number]) {
      case "export":
        return exportDelta(o);
      case "compose":
      case "merge":
        return compose(o);
      case "apply":
        return apply(o);
      case "info":
        return info(o);
    }
  },
};
