/**
 * `peftkit merge-adapters A B … --method M --weights w1,w2,…`: PEFT's add_weighted_adapter from the
 * command line (src/tuners/lora/weighted.ts), writing the combination as a new, normal PEFT LoRA
 * folder. `--negate` (or a negative weight) is task-vector negation: θ' = θ − λ·τ.
 * The folders are checked first (merge-checks.ts: method, base model, shapes, ranks), before the
 * model is loaded; the output is written to a temporary folder and renamed into place.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fsyncFile, replaceDir, tmpPath, writeFileAtomic } from "../../io/atomic-write.js";
import { LABEL_CONFIG_FILE } from "../../io/label-config.js";
import { readSafetensors, SafetensorsFile } from "../../io/safetensors.js";
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, saveAdapter } from "../../tuners/format.js";
import { type AdapterSummary, checkMergeable } from "../../tuners/lora/merge-checks.js";
import type { MajoritySignMethod } from "../../tuners/lora/merge-utils.js";
import { COMBINATION_TYPES, type CombinationType } from "../../tuners/lora/weighted.js";
import { weightsFingerprint } from "../../util/fingerprint.js";
import { type CommandSpec, type Flags, UsageError } from "../args.js";
import { loadModelAndAdapter } from "../load.js";

/** The methods that prune (ties, dare, magnitude_prune, with or without _svd) need --density. */
export const needsDensity = (m: CombinationType) => !["linear", "cat", "svd"].includes(m);

/** The user's weights as numbers: one per adapter (default 1), negated with --negate. */
export function parseWeights(raw: readonly string[] | undefined, count: number, negate: boolean, what = "adapter"): number[] {
  const given = raw ?? Array.from({ length: count }, () => "1");
  if (given.length !== count)
    throw new UsageError(`--weights: ${given.length} weight${given.length === 1 ? "" : "s"} for ${count} ${what}${count === 1 ? "" : "s"}`);
  return given.map((s) => {
    const w = Number(s);
    if (s.trim() === "" || !Number.isFinite(w)) throw new UsageError(`--weights: "${s}" is not a number`);
    return negate ? -w : w;
  });
}

/** adapter_config.json and the tensor shapes of a folder, without reading the tensors. */
export function readSummary(dir: string): AdapterSummary {
  const cfgPath = join(dir, ADAPTER_CONFIG);
  if (!existsSync(dir)) throw new UsageError(`${dir}: no such adapter folder`);
  if (!existsSync(cfgPath)) throw new UsageError(`${dir}: no ${ADAPTER_CONFIG} (is this a PEFT adapter folder?)`);
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(readFileSync(cfgPath, "utf8")) as Record<string, unknown>;
  } catch (e) {
    throw new UsageError(`${cfgPath}: not valid JSON (${(e as Error).message.split("\n")[0]})`);
  }
  const weights = join(dir, ADAPTER_WEIGHTS);
  if (!existsSync(weights)) throw new UsageError(`${dir}: no ${ADAPTER_WEIGHTS}`);
  const file = SafetensorsFile.open(weights);
  try {
    return { label: dir, config, shapes: new Map(file.entries.map((e) => [e.name, e.shape])) };
  } finally {
    file.close();
  }
}

/**
 * Two base-model folders with the same weights, by fingerprint (src/util/fingerprint.ts): one model
 * reached by two paths, or copied. Only single-file checkpoints here are compared; anything else
 * counts as different (then --force).
 */
export function sameBaseWeights(a: string, b: string): boolean {
  const fa = join(a, "model.safetensors");
  const fb = join(b, "model.safetensors");
  if (!existsSync(fa) || !existsSync(fb)) return false;
  const fp = (f: string) => weightsFingerprint(new Map(Object.entries(readSafetensors(f).tensors)));
  return fp(fa) === fp(fb);
}

function baseModelDir(o: Flags, first: AdapterSummary): string {
  if (typeof o.model === "string") return o.model;
  const b = first.config.base_model_name_or_path;
  if (typeof b === "string" && existsSync(join(b, "config.json"))) return b;
  throw new UsageError(
    `--model is required: ${first.label}/${ADAPTER_CONFIG} names base_model_name_or_path ${JSON.stringify(b ?? null)}, which is not a model folder here`,
  );
}

export const mergeAdaptersCommand: CommandSpec = {
  name: "merge-adapters",
  summary: "Combine LoRA adapters (PEFT's add_weighted_adapter: linear, cat, svd, ties, dare, magnitude_prune) or negate one.",
  usage: "peftkit merge-adapters A B … --method M [--weights W1,W2,…] [--negate] --output-dir DIR",
  flags: [
    { name: "adapters", type: "list", meta: "DIRS", help: "the LoRA adapter folders (also given as leading arguments)", required: true },
    {
      name: "method",
      type: "string",
      meta: "M",
      help: "PEFT's combination_type (a single adapter always combines as linear)",
      default: "svd",
      choices: COMBINATION_TYPES,
    },
    { name: "weights", type: "list", meta: "W1,W2,…", help: "one weight per adapter, negative allowed (default: 1 each)" },
    { name: "negate", type: "boolean", help: "task-vector negation: use −w for every weight (θ − λ·τ)", default: false },
    {
      name: "density",
      type: "number",
      meta: "D",
      help: "ties/dare/magnitude_prune (and their _svd forms): fraction of entries kept",
      exclusiveMin: 0,
      max: 1,
    },
    {
      name: "majority-sign",
      type: "string",
      help: "ties/dare_ties: how the sign is elected",
      default: "total",
      choices: ["total", "frequency"],
    },
    { name: "svd-rank", type: "int", meta: "R", help: "*svd methods: rank of the result (default: the largest source rank)", min: 1 },
    {
      name: "svd-clamp",
      type: "number",
      meta: "Q",
      help: "*svd methods: clamp the new A and B to ±(their signed Q-quantile), as PEFT's svd_clamp",
      min: 0,
      max: 1,
    },
    { name: "seed", type: "int", meta: "S", help: "dare methods: seed of the random drops", default: 0, min: 0 },
    { name: "model", type: "string", meta: "DIR", help: "the base model folder (default: the first adapter's base_model_name_or_path)" },
    { name: "force", type: "boolean", help: "merge adapters whose base_model_name_or_path differ", default: false },
    { name: "output-dir", type: "string", meta: "DIR", help: "where to write the new adapter folder", required: true },
  ],
  examples: [
    "peftkit merge-adapters runs/kind-of runs/chat-kind --method ties --weights 1,1 --density 0.5 --output-dir runs/merged",
    "peftkit merge-adapters runs/kind-of runs/chat-kind --method svd --weights 0.5,0.5 --svd-rank 8 --output-dir runs/merged-svd",
    "peftkit merge-adapters runs/kind-of --negate --output-dir runs/kind-of-negated",
  ],
  async run(o) {
    const dirs = o.adapters as string[];
    if (dirs.length === 0) throw new UsageError("--adapters: give at least one adapter folder");
    const method = o.method as CombinationType;
    const weights = parseWeights(o.weights as string[] | undefined, dirs.length, Boolean(o.negate));
    const density = o.density as number | undefined;
    const type: CombinationType = dirs.length === 1 ? "linear" : method;
    if (needsDensity(type) && density === undefined)
      throw new UsageError(`--method ${type} needs --density (the fraction kept, in (0, 1])`);
    const out = o.outputDir as string;
    if (existsSync(join(out, ADAPTER_CONFIG))) throw new UsageError(`--output-dir ${out} already holds an adapter; choose another folder`);

    const summaries = dirs.map(readSummary);
    for (const w of checkMergeable(summaries, type, { force: Boolean(o.force), sameBase: sameBaseWeights }))
      console.warn(`peftkit: warning: ${w}`);
    if (dirs.length === 1 && method !== "linear" && method !== "svd")
      console.warn(`peftkit: note: one adapter combines as linear (PEFT), not ${method}`);

    const modelDir = baseModelDir(o, summaries[0]);
    const { model, peft } = await loadModelAndAdapter(modelDir, { adapter: dirs[0], threads: o.threads as number | undefined });
    if (!peft) throw new UsageError("--adapters is required");
    const names = dirs.map((_, i) => (i === 0 ? "default" : `a${i}`));
    dirs.forEach((d, i) => {
      if (i > 0) peft.loadAdapter(d, names[i]);
    });
    const merged = "merged";
    peft.addWeightedAdapter(names, weights, merged, {
      combinationType: type,
      density,
      majoritySignMethod: o.majoritySign as MajoritySignMethod,
      svdRank: o.svdRank as number | undefined,
      svdClamp: o.svdClamp as number | undefined,
      seed: o.seed as number,
    });

    const tmp = tmpPath(out.replace(/\/$/, ""));
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    saveAdapter(peft, merged, tmp);
    const labels = join(dirs[0], LABEL_CONFIG_FILE);
    if (existsSync(labels)) {
      copyFileSync(labels, join(tmp, LABEL_CONFIG_FILE));
      fsyncFile(join(tmp, LABEL_CONFIG_FILE));
    }
    const record = {
      adapters: dirs,
      weights,
      method: type,
      density: density ?? null,
      majority_sign: o.majoritySign,
      svd_rank: o.svdRank ?? null,
      svd_clamp: o.svdClamp ?? null,
      seed: o.seed,
      model: modelDir,
    };
    writeFileAtomic(join(tmp, "merge_args.json"), `${JSON.stringify(record, null, 2)}\n`);
    replaceDir(tmp, out);
    await model.release();
    const r = (peft.adapter(merged).config as unknown as { r: number }).r;
    console.log(`${type} of ${dirs.length} adapter${dirs.length > 1 ? "s" : ""} (weights ${weights.join(", ")}), r = ${r}: wrote ${out}`);
    return 0;
  },
};
