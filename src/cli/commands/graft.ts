/**
 * `peftkit graft`: skill localisation by grafting (src/train/graft.ts, docs/methods/graft.md),
 * post hoc on a fine-tuned result. The fine-tuned weights come from a full model folder, an
 * adapter folder (merged into the base first, as `peftkit merge`), or a LISA/HFT output folder
 * (its trained tensors put on the base). Causal language models only.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { HostTensor } from "../../engine/ir/host.js";
import { AutoTokenizer } from "../../io/tokenizer.js";
import { PreTrainedModel } from "../../models/pretrained.js";
import { SparseDeltaError } from "../../sparse/delta.js";
import { DATA_FORMATS, type DataFormat, loadDataset } from "../../train/data/index.js";
import { GRAFT_FILE, runGraft } from "../../train/graft.js";
import { TrainingArgsError } from "../../train/schedule.js";
import { applyTrainedTensors, SELECTIVE_CONFIG_FILE } from "../../train/selective-run.js";
import { type CommandSpec, type Flags, UsageError } from "../args.js";
import { headFor, loadModelAndAdapter, requireDir } from "../load.js";
import { effectiveMaxLength } from "../max-length.js";
import { FORMAT_TASKS } from "./train.js";

/** θ_ft by the base model's weight names, and what it was read from. */
async function finetunedWeights(base: string, dir: string, threads?: number): Promise<{ weights: Map<string, HostTensor>; kind: string }> {
  requireDir(dir, "--finetuned");
  if (existsSync(join(dir, "adapter_config.json"))) {
    const { model, peft } = await loadModelAndAdapter(base, { adapter: dir, threads, head: "causal_lm" });
    const merged = (peft as NonNullable<typeof peft>).mergeAndUnload();
    await model.release();
    return { weights: new Map(merged.weights), kind: "an adapter, merged into the base" };
  }
  if (existsSync(join(dir, SELECTIVE_CONFIG_FILE))) {
    const model = await PreTrainedModel.load(base, "causal_lm", { threads });
    applyTrainedTensors(model, dir);
    await model.release();
    return { weights: new Map(model.weights), kind: "LISA/HFT trained tensors on the base" };
  }
  if (existsSync(join(dir, "config.json"))) {
    const model = await PreTrainedModel.load(dir, "causal_lm", { threads });
    await model.release();
    return { weights: new Map(model.weights), kind: "a full model" };
  }
  throw new UsageError(
    `--finetuned ${dir}: neither a model folder (config.json), an adapter folder (adapter_config.json) nor a LISA/HFT output (${SELECTIVE_CONFIG_FILE})`,
  );
}

async function run(o: Flags): Promise<number> {
  const modelDir = requireDir(o.model as string, "--model");
  for (const f of ["data", "eval-data"] as const) {
    const v = o[f === "data" ? "data" : "evalData"] as string;
    if (!existsSync(v)) throw new UsageError(`--${f} ${v}: no such file`);
  }
  if (headFor(modelDir) !== "causal_lm") throw new UsageError(`--model ${modelDir}: graft works on causal language models only`);
  const maxLength = effectiveMaxLength(modelDir, o.maxLength as number | undefined, 0);
  const tokenizer = await AutoTokenizer.fromPretrained(modelDir);
  const loadOpts = {
    tokenizer,
    format: o.format as DataFormat | undefined,
    maxLength,
    onBadRecord: o.onBadRecord as "error" | "skip",
  };
  const data = await loadDataset(o.data as string, loadOpts);
  if (FORMAT_TASKS[data.format].head !== "causal_lm")
    throw new UsageError(`--data ${o.data}: holds ${data.format} records; graft works on language-modelling data only`);
  const dev = await loadDataset(o.evalData as string, { ...loadOpts, format: data.format });
  const limit = o.trainSamples as number | undefined;
  const train = limit ? data.examples.slice(0, limit) : data.examples;
  const { weights, kind } = await finetunedWeights(modelDir, o.finetuned as string, o.threads as number | undefined);
  console.log(`graft: the fine-tuned weights are ${kind} (${o.finetuned})`);
  const model = await PreTrainedModel.load(modelDir, "causal_lm", { threads: o.threads as number | undefined });
  try {
    const target = o.target as string[] | undefined;
    const r = await runGraft({
      model,
      finetuned: weights,
      target: !target || (target.length === 1 && target[0].toLowerCase() === "all-linear") ? "all-linear" : target,
      train,
      dev: dev.examples,
      tokenizer,
      padId: tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0,
      batchSize: o.batchSize as number,
      sparsity: o.sparsity as number,
      sigmoidBias: o.sigmoidBias as number,
      maskLr: o.maskLr as number,
      epochs: o.epochs as number,
      accumulation: o.accumulation as number,
      seed: o.seed as number,
      outputDir: o.outputDir as string,
      resume: Boolean(o.resume),
      exactMatchLimit: o.exactMatchLimit as number,
      log: (line) => console.log(line),
    });
    const last = r.history.find((h) => h.epoch === r.best_epoch);
    if (last) {
      const frac = (g: number, f: number) => (f !== 0 ? ` (${((100 * g) / f).toFixed(1)}% of the fine-tuned ${f.toFixed(4)})` : "");
      console.log(
        `graft (${r.metric}): dev ${last.dev_score.toFixed(4)}${frac(last.dev_score, r.finetuned.dev)}, train ${last.train_score.toFixed(4)}${frac(last.train_score, r.finetuned.train)}`,
      );
    }
    console.log(
      `apply it with: peftkit delta apply --model ${modelDir} --input ${join(o.outputDir as string, GRAFT_FILE)} --output-dir DIR`,
    );
  } catch (e) {
    if (e instanceof SparseDeltaError || e instanceof TrainingArgsError) throw new UsageError(e.message);
    throw e;
  } finally {
    await model.release();
  }
  return 0;
}

export const graftCommand: CommandSpec = {
  name: "graft",
  summary:
    "Skill localisation by grafting: learn the small region of a fine-tuned model's changes that keeps its score, as a sparse delta on the base.",
  usage: "peftkit graft --model DIR --finetuned DIR --data FILE --eval-data FILE --output-dir DIR [options]",
  flags: [
    { name: "model", type: "string", meta: "DIR", help: "the base model folder (θ_pre)", required: true },
    {
      name: "finetuned",
      type: "string",
      meta: "DIR",
      help: "the fine-tuned result (θ_ft): a full model folder, an adapter folder (merged into --model first), or a LISA/HFT output folder",
      required: true,
    },
    {
      name: "data",
      type: "string",
      meta: "FILE",
      help: "training data: gradients for the mask, and half of the selection score",
      required: true,
    },
    { name: "eval-data", type: "string", meta: "FILE", help: "dev data: the other half of the selection score", required: true },
    { name: "format", type: "string", help: "record format (default: detected)", choices: DATA_FORMATS },
    { name: "max-length", type: "int", meta: "N", help: "longest example in tokens (default: 512, or the model's limit)", min: 1 },
    { name: "train-samples", type: "int", meta: "N", help: "use only the first N training examples (default: all)", min: 1 },
    { name: "on-bad-record", type: "string", help: "what to do with a malformed record", default: "error", choices: ["error", "skip"] },
    {
      name: "sparsity",
      type: "number",
      meta: "S",
      help: "share of the graftable entries in the base patch: the ⌊S·N⌋ largest |θ_ft − θ_pre|",
      default: 1e-5,
      exclusiveMin: 0,
      max: 1,
    },
    { name: "sigmoid-bias", type: "number", meta: "B", help: "b in γ = γ0 + (1 − 2γ0)·σ(S − b)", default: 10, min: 0 },
    { name: "mask-lr", type: "number", meta: "LR", help: "step size of the mask scores' SGD", default: 1e7, exclusiveMin: 0 },
    { name: "epochs", type: "int", meta: "N", help: "mask updates (each followed by a scored selection)", default: 10, min: 1 },
    { name: "accumulation", type: "int", meta: "N", help: "at most N batches per mask gradient", default: 128, min: 1 },
    { name: "batch-size", type: "int", meta: "N", help: "examples per gradient batch", default: 8, min: 1 },
    {
      name: "target",
      type: "list",
      meta: "LIST",
      help: 'graftable modules, comma-separated, or "all-linear" (default: every linear layer but the output head; embeddings never)',
    },
    {
      name: "exact-match-limit",
      type: "int",
      meta: "N",
      help: "score by exact match on at most N examples of each set (0: by −loss instead)",
      default: 200,
      min: 0,
    },
    { name: "seed", type: "int", meta: "S", help: "seed of the initial scores S ~ U(0, 1) and the batch order", default: 42, min: 0 },
    { name: "output-dir", type: "string", meta: "DIR", help: "where to write graft.safetensors and the state", required: true },
    { name: "resume", type: "boolean", help: "continue the run in --output-dir from its last finished epoch" },
  ],
  examples: [
    "peftkit merge --model models/wordnet-llama --adapter runs/kind-of --output-dir runs/kind-of-merged",
    "peftkit graft --model models/wordnet-llama --finetuned runs/kind-of-merged --data train.jsonl --eval-data dev.jsonl --sparsity 0.01 --output-dir runs/graft",
    "peftkit delta apply --model models/wordnet-llama --input runs/graft/graft.safetensors --output-dir runs/grafted",
  ],
  run,
};
