/**
 * Full fine-tuning for a compare run, the reference row: every weight trains (FullTrainer), then
 * the trained model is evaluated with the evaluation code of `peftkit eval` (train/evaluate.ts).
 * `peftkit train` has no full fine-tuning, so the data preparation mirrors its steps.
 */
import { join } from "node:path";
import { FORMAT_TASKS } from "../cli/commands/train.js";
import { loadConfig } from "../io/hf-folder.js";
import { parseLabelFields } from "../io/label-config.js";
import { AutoTokenizer, type PreTrainedTokenizer } from "../io/tokenizer.js";
import type { TaskHead } from "../models/architecture.js";
import { PreTrainedModel } from "../models/pretrained.js";
import { BatchStream, type DataFormat, type Example, type LoadedDataset, loadDataset, trainingLabels } from "../train/data/index.js";
import { evalBatches, evaluate } from "../train/evaluate.js";
import { FullTrainer } from "../train/full-finetune.js";
import { completionItems } from "../train/run.js";
import { learningRate, warmupSteps } from "../train/schedule.js";
import type { WorkerResult, WorkerSpec } from "./worker.js";

/** A fully fine-tuned model and what its evaluation and a graft need. */
export interface FullTrained {
  model: PreTrainedModel;
  tokenizer: PreTrainedTokenizer;
  head: TaskHead;
  /** The training examples (classification: with the chosen labels) and the evaluation set. */
  examples: Example[];
  ev: LoadedDataset;
  labelNames: readonly string[] | undefined;
  padId: number;
  steps: number;
  trainS: number;
  tokens: number;
  /** Distinct weights' entries (tied weights once). */
  params: number;
}

/** Full fine-tuning at the run's budget; the model's weights are the trained ones. */
export async function fullTrain(
  s: WorkerSpec,
  opts: { trains?: (model: PreTrainedModel) => (name: string) => boolean } = {},
): Promise<FullTrained> {
  const tokenizer = await AutoTokenizer.fromPretrained(s.model);
  const loadOpts = { tokenizer, format: s.format as DataFormat | undefined, maxLength: s.maxLength, onBadRecord: "error" as const };
  const data = await loadDataset(s.train, loadOpts);
  // The head follows the record format, as in `peftkit train`.
  const head = FORMAT_TASKS[data.format].head;
  const classification = head !== "causal_lm";
  let examples = data.examples;
  let labelNames: readonly string[] | undefined;
  if (classification) {
    const configPath = join(s.model, "config.json");
    const chosen = trainingLabels(data, parseLabelFields(loadConfig(s.model), configPath), configPath);
    examples = chosen.examples;
    labelNames = chosen.labels.names;
  }
  const ev = await loadDataset(s.eval, { ...loadOpts, format: data.format, labels: labelNames });
  const model = await PreTrainedModel.load(s.model, head, {
    numLabels: labelNames?.length,
    threads: s.threads,
  });
  const seen = new Set<unknown>();
  let params = 0;
  for (const t of model.weights.values()) {
    if (seen.has(t)) continue;
    seen.add(t);
    params += t.data.length;
  }
  const padId = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0;
  const stream = new BatchStream(examples, { batchSize: s.batchSize, seed: s.seed, padId });
  const trainer = await FullTrainer.create(model, {
    optimizer: { kind: "adamw" },
    clipNorm: 1,
    compile: { threads: s.threads },
    trains: opts.trains?.(model),
  });
  const started = Date.now();
  let steps = 0;
  let tokens = 0;
  try {
    outer: for (let epoch = 0; ; epoch++)
      for (const b of stream.epochBatches(epoch)) {
        if (steps >= s.maxSteps) break outer;
        if (s.runSeconds !== null && (Date.now() - started) / 1000 >= s.runSeconds) break outer;
        const res = await trainer.train(b, {
          lr: learningRate("linear", s.lr, steps, s.maxSteps, warmupSteps(s.warmup, s.maxSteps)),
          seed: s.seed * 1_000_003 + steps,
        });
        if (!Number.isFinite(res.loss)) throw new Error(`full fine-tuning: loss became ${res.loss} at step ${steps + 1}; lower --lr`);
        steps++;
        tokens += b.tokens;
      }
  } finally {
    await trainer.release();
  }
  const trainS = (Date.now() - started) / 1000;
  return { model, tokenizer, head, examples, ev, labelNames, padId, steps, trainS, tokens, params };
}

/** The task metrics of a model on the run's evaluation set (`peftkit eval`'s evaluation code). */
export async function evaluateTrained(t: FullTrained): Promise<Record<string, number>> {
  const { model, head, ev, padId, labelNames, tokenizer } = t;
  const batches = evalBatches(ev.examples, 16, padId);
  const metrics = await evaluate(model, batches, {
    causal: head === "causal_lm",
    classification: head === "sequence_classification",
    tokenClassification: head === "token_classification",
    labelNames,
    completions: ev.format === "prompt_completion" || ev.format === "chat" ? completionItems(ev.examples, tokenizer, 200) : undefined,
    tokenizer,
  });
  return Object.fromEntries(Object.entries(metrics).filter((e): e is [string, number] => typeof e[1] === "number"));
}

export async function fullFineTune(s: WorkerSpec, onTrained: () => void): Promise<Omit<WorkerResult, "max_rss_kb">> {
  const t = await fullTrain(s);
  onTrained();
  const eval_metrics = await evaluateTrained(t);
  await t.model.release();
  return {
    eval_metrics,
    steps: t.steps,
    train_s: t.trainS,
    tokens_seen: t.tokens,
    trainable_params: t.params,
    total_params: t.params,
  };
}
