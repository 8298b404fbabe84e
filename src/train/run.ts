/**
 * A whole fine-tuning run, as `peftkit train` and `peftkit demo` do it: data → adapter →
 * Trainer → a valid HF PEFT folder plus training_args.json, metrics.jsonl, loss_curve.svg.
 * The final adapter files are written only at the end, so an output folder with an
 * adapter_config.json is always a finished run.
 */

import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { writeFileAtomic } from "../io/atomic-write.js";
import { LABEL_CONFIG_FILE, type LabelConfig, LabelConfigError, readLabelConfig, writeLabelConfig } from "../io/label-config.js";
import { writeTaskTable } from "../io/task-table.js";
import type { PreTrainedTokenizer } from "../io/tokenizer.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import type { LoraConfig } from "../tuners/lora/config.js";
import { editsBase, saveConvertedLora } from "../tuners/lora/convert.js";
import { LORA } from "../tuners/lora/index.js";
import { saveDequantizedLora } from "../tuners/lowbit/export.js";
import { PeftModel } from "../tuners/peft-model.js";
import type { TaskTable } from "../tuners/task-ids.js";
import { PeftTrainer } from "../tuners/train.js";
import type { CalibrationStats } from "../tuners/tuner.js";
import { latestCheckpoint } from "./checkpoint.js";
import { BatchStream, deriveSeed, type Example, IGNORE_INDEX } from "./data/index.js";
import { type CompletionItem, evalBatches } from "./evaluate.js";
import { Progress, table } from "./progress.js";
import { TrainingArgsError } from "./schedule.js";
import { plannedSteps, Trainer, type TrainerArgs, type TrainResult } from "./trainer.js";

export interface RunOptions extends Omit<TrainerArgs, "outputDir"> {
  outputDir: string;
  model: PreTrainedModel;
  tokenizer: PreTrainedTokenizer;
  peftConfig: Record<string, unknown>;
  /** Calibration statistics for methods that initialise from data (see PeftModel.addAdapter). */
  calibration?: CalibrationStats;
  train: Example[];
  eval: Example[];
  batchSize: number;
  evalBatchSize?: number;
  pack?: boolean;
  seqLen?: number;
  optimizer?: "adamw" | "sgd";
  weightDecay?: number;
  momentum?: number;
  clipNorm?: number;
  gradientCheckpointing?: boolean;
  /** Evaluate exact match of completions on at most this many eval examples (prompt/completion data). */
  exactMatchLimit?: number;
  /** (Token) classification: the classes, saved as label_config.json beside every adapter the run writes. */
  labels?: LabelConfig;
  /** Everything else worth recording in training_args.json. */
  record?: Record<string, unknown>;
  /**
   * A multi-task run's routing table (task name → row), saved as task_table.json beside every
   * adapter the run writes; the examples carry their rows (Example.taskId).
   */
  taskTable?: TaskTable;
  /** Adapter tensors kept fixed although the method trains them (POLY's MHR-z: only routers train). */
  freeze?: (key: string) => boolean;
  /** A learning-rate multiple per adapter tensor (POLY's routers at their own rate). */
  lrScale?: (key: string) => number;
  /** LOWBIT: also write the adapter as a plain LoRA of its dequantised weights in DEQUANTIZED_DIR. */
  exportDequantized?: boolean;
  /** Called with the new adapter before training (LT-SFT sets its chosen index sets here). */
  prepareAdapter?: (peft: PeftModel) => void;
  /** Called with the Trainer so the caller can wire SIGINT to requestStop(). */
  onTrainer?: (t: Trainer) => void;
  out?: NodeJS.WriteStream;
}

/**
 * Beside a PiSSA/OLoRA/CorDA adapter (which needs the residual base it was trained on), the same
 * update as a plain LoRA adapter for the original base model: what PEFT's
 * save_pretrained(path_initial_model_for_weight_conversion=...) writes. `peftkit eval` and
 * `compare` use it.
 */
export const CONVERTED_DIR = "converted_lora";
/** Where --lowbit-export-dequantized writes a LOWBIT run's adapter as a plain HF PEFT LoRA. */
export const DEQUANTIZED_DIR = "dequantized_lora";

export interface RunSummary extends TrainResult {
  trainable: number;
  /** Parameters some update reached: below `trainable` for methods that grow ranks (IncreLoRA). */
  trained: number;
  total: number;
  outputDir: string;
  files: string[];
}

/**
 * Prompt/completion and chat eval examples as (prompt ids, completion text) pairs: the completion
 * is the last labelled span (a chat's final assistant turn), the prompt everything before it.
 */
export function completionItems(
  examples: readonly Example[],
  tok: Pick<PreTrainedTokenizer, "decode" | "eosTokenId">,
  limit: number,
): CompletionItem[] {
  const out: CompletionItem[] = [];
  for (const e of examples) {
    if (!e.labels || out.length >= limit) continue;
    let last = e.labels.length - 1;
    while (last >= 0 && e.labels[last] === IGNORE_INDEX) last--;
    let first = last;
    while (first > 0 && e.labels[first - 1] !== IGNORE_INDEX) first--;
    if (first <= 0) continue;
    const target = e.labels.slice(first, last + 1).filter((l) => l !== tok.eosTokenId);
    out.push({
      prompt: e.inputIds.slice(0, first),
      completion: tok.decode(target, { skipSpecialTokens: true }),
      ...(e.taskId !== undefined ? { taskId: e.taskId } : {}),
    });
  }
  return out;
}

/**
 * A run without --resume must not write over a finished adapter, nor, for a method of two phases
 * (LT-SFT, Light-PEFT, DSEE's pruning), over an earlier run's first phase in `phaseDir`.
 */
export function refuseEarlierRun(outputDir: string, resume: boolean, phase?: { dir: string; method: string }): void {
  if (resume) return;
  if (existsSync(join(outputDir, "adapter_config.json")))
    throw new TrainingArgsError(
      `${outputDir} already holds a trained adapter; pass --resume to continue it or choose another --output-dir`,
    );
  if (phase && existsSync(join(outputDir, phase.dir)))
    throw new TrainingArgsError(
      `${outputDir} holds an earlier ${phase.method} run (${phase.dir}/); pass --resume to continue it or choose another --output-dir`,
    );
}

export async function runTraining(o: RunOptions): Promise<RunSummary> {
  const out = o.out ?? process.stdout;
  refuseEarlierRun(o.outputDir, Boolean(o.resume));
  // A fresh run must not leave an earlier run's checkpoints beside its own: a later --resume
  // would pick whichever has the highest step.
  const stale = o.resume ? null : latestCheckpoint(o.outputDir);
  if (stale) {
    throw new TrainingArgsError(
      `${o.outputDir} holds checkpoints of an earlier run (${basename(stale)}); pass --resume to continue it or choose another --output-dir`,
    );
  }
  mkdirSync(o.outputDir, { recursive: true });
  const padId = o.tokenizer.padTokenId ?? o.tokenizer.eosTokenId ?? 0;
  const stream = new BatchStream(o.train, {
    batchSize: o.batchSize,
    seed: o.seed ?? 42,
    padId,
    pack: o.pack,
    seqLen: o.seqLen,
    eosId: o.tokenizer.eosTokenId,
  });
  const evalSet = o.eval.length ? evalBatches(o.eval, o.evalBatchSize ?? o.batchSize, padId) : [];
  const classification = o.model.head === "sequence_classification";
  if (o.labels && o.resume) checkResumedLabels(o.outputDir, o.labels);
  const peft = PeftModel.create(o.model, o.peftConfig, { seed: o.seed ?? 42, calibration: o.calibration });
  // PiSSA/OLoRA/CorDA train against a residual base: keep the initial factors to also write the
  // adapter as plain LoRA for the original base (CONVERTED_DIR).
  o.prepareAdapter?.(peft);
  const created = peft.adapter("default");
  const initial = created.tuner === LORA && editsBase(created.config as LoraConfig) ? new Map(created.tensors) : null;
  if (o.labels) saveLabelsWithAdapter(peft, o.labels);
  if (o.taskTable) saveTaskTableWithAdapter(peft, o.taskTable);
  const counts = peft.parameterCounts();
  const total = counts.total;
  let trainable = counts.trainable;
  const trainer = await PeftTrainer.create(peft, {
    optimizer:
      o.optimizer === "sgd"
        ? { kind: "sgd", momentum: o.momentum ?? 0.9, weightDecay: o.weightDecay ?? 0 }
        : { kind: "adamw", weightDecay: o.weightDecay ?? 0 },
    clipNorm: o.clipNorm,
    gradientCheckpointing: o.gradientCheckpointing,
    freeze: o.freeze,
    lrScale: o.lrScale,
    totalSteps: plannedSteps({ epochs: o.epochs, maxSteps: o.maxSteps, gradAccum: o.gradAccum }, stream.batchesPerEpoch),
  });
  // Tensors this run keeps fixed (MHR-z's skills) are not trainable here.
  if (o.freeze) trainable = trainer.trainedParameters();
  // A method that runs forward passes between steps (IST's importance batches) draws them from the
  // training data in a separate seeded shuffle, cycled; pass batch i is position i of that stream.
  const passBatchSize = trainer.controller?.passBatchSize;
  if (passBatchSize) {
    const passes = new BatchStream(o.train, {
      batchSize: passBatchSize,
      seed: deriveSeed(o.seed ?? 42, 0x9a55),
      padId,
      pack: o.pack,
      seqLen: o.seqLen,
      eosId: o.tokenizer.eosTokenId,
    });
    trainer.usePassBatches((i) => {
      const at = passes.position(i);
      return passes.batch(at.epoch, at.index);
    });
  }
  const progress = new Progress(out, o.logSteps ?? 10);
  const completions = !classification && o.exactMatchLimit ? completionItems(o.eval, o.tokenizer, o.exactMatchLimit) : undefined;
  const loop = new Trainer(
    {
      trainer,
      peft,
      tokenizer: o.tokenizer,
      causal: o.model.head === "causal_lm",
      classification,
      tokenClassification: o.model.head === "token_classification",
      labelNames: o.labels?.names,
    },
    stream,
    evalSet.length ? { batches: evalSet, completions } : null,
    { ...o, outputDir: o.outputDir },
    progress,
  );
  o.onTrainer?.(loop);
  progress.line(
    `training ${o.peftConfig.peft_type} on ${o.train.length} examples (${stream.batchesPerEpoch} batches/epoch), ${loop.totalSteps} steps; trainable ${trainable.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} parameters (${((100 * trainable) / total).toFixed(3)}%)`,
  );
  let result: TrainResult;
  // What the run trained (IncreLoRA: its grown ranks, not the capacity compiled for them).
  let trained = trainable;
  try {
    result = await loop.run();
    trained = trainer.trainedParameters();
  } finally {
    await trainer.release();
  }
  const files: string[] = [];
  const metrics = readFileSync(loop.metricsPath, "utf8")
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  writeFileAtomic(join(o.outputDir, "loss_curve.svg"), Trainer.curveSvg(metrics));
  files.push("loss_curve.svg", "metrics.jsonl");
  if (result.stoppedBy !== "interrupted") {
    // The adapter goes in last (weights, then adapter_config.json, each fsynced and renamed into
    // place), so a config in the folder marks a finished run.
    writeFileAtomic(
      join(o.outputDir, "training_args.json"),
      `${JSON.stringify({ ...o.record, result: { ...result, trainableParams: trained } }, null, 2)}\n`,
    );
    if (initial) {
      const dir = join(o.outputDir, CONVERTED_DIR);
      if (o.labels) {
        mkdirSync(dir, { recursive: true });
        writeLabelConfig(dir, o.labels);
      }
      saveConvertedLora(peft, "default", initial, dir);
      files.push(`${CONVERTED_DIR}/`);
    }
    if (o.exportDequantized) {
      const dir = join(o.outputDir, DEQUANTIZED_DIR);
      mkdirSync(dir, { recursive: true });
      if (o.labels) writeLabelConfig(dir, o.labels);
      saveDequantizedLora(peft, "default", dir);
      files.push(`${DEQUANTIZED_DIR}/`);
    }
    peft.savePretrained(o.outputDir);
    files.push(...(o.labels ? [LABEL_CONFIG_FILE] : []), "adapter_config.json", "adapter_model.safetensors", "training_args.json");
  }
  const summary: RunSummary = { ...result, trainable, trained, total, outputDir: o.outputDir, files };
  out.write(`\n${summarize(summary)}\n`);
  return summary;
}

/**
 * Makes every save of this run's adapter (each checkpoint-N/ and the final folder, both written
 * through peft.savePretrained) also write label_config.json, so any adapter folder can be
 * evaluated or merged on its own. Done here rather than in the Trainer, which saves adapters
 * without knowing about classes.
 */
function saveLabelsWithAdapter(peft: PeftModel, labels: LabelConfig): void {
  const save = peft.savePretrained.bind(peft);
  peft.savePretrained = (dir, opts) => {
    // Before the adapter: its adapter_config.json, written last, marks a complete folder.
    mkdirSync(dir, { recursive: true });
    writeLabelConfig(dir, labels);
    save(dir, opts);
  };
}

/** As saveLabelsWithAdapter, for a multi-task run's routing table (task_table.json). */
function saveTaskTableWithAdapter(peft: PeftModel, table: TaskTable): void {
  const save = peft.savePretrained.bind(peft);
  peft.savePretrained = (dir, opts) => {
    mkdirSync(dir, { recursive: true });
    writeTaskTable(dir, table);
    save(dir, opts);
  };
}

/** A resumed classification run must have the classes its checkpoints were trained with. */
function checkResumedLabels(outputDir: string, labels: LabelConfig): void {
  const ck = latestCheckpoint(outputDir);
  const saved = ck ? readLabelConfig(ck) : null;
  if (ck && saved && saved.names.join("\u0000") !== labels.names.join("\u0000")) {
    throw new LabelConfigError(
      `${join(ck, LABEL_CONFIG_FILE)}: the checkpoint was trained with the labels ${JSON.stringify(saved.names)}, but this run's data gives ${JSON.stringify(labels.names)}`,
    );
  }
}

export function summarize(s: RunSummary): string {
  const rows: [string, string][] = [
    [
      "trainable params",
      `${s.trainable.toLocaleString("en-US")} (${((100 * s.trainable) / s.total).toFixed(3)}% of ${s.total.toLocaleString("en-US")})`,
    ],
    // Methods that grow what trains (IncreLoRA) compile a capacity and use part of it.
    ...(s.trained !== s.trainable ? ([["trained params", s.trained.toLocaleString("en-US")]] as [string, string][]) : []),
    ["steps", `${s.steps} (${s.stoppedBy.replace(/_/g, " ")})`],
    ["final train loss", s.finalLoss.toFixed(4)],
    ["wall time", `${s.wallSeconds.toFixed(1)} s (${(s.tokensSeen / Math.max(s.wallSeconds, 1e-3)).toFixed(0)} tokens/s)`],
  ];
  if (s.bestEval !== null) rows.push(["best eval loss", s.bestEval.toFixed(4)]);
  if (s.lastEval?.eval_accuracy !== undefined) rows.push(["eval accuracy", `${(100 * s.lastEval.eval_accuracy).toFixed(1)}%`]);
  if (s.lastEval?.eval_token_accuracy !== undefined)
    rows.push(["eval token accuracy", `${(100 * s.lastEval.eval_token_accuracy).toFixed(1)}%`]);
  if (s.lastEval?.eval_macro_f1 !== undefined) rows.push(["eval macro-F1", s.lastEval.eval_macro_f1.toFixed(4)]);
  if (s.lastEval?.eval_span_f1 !== undefined) rows.push(["eval span F1", s.lastEval.eval_span_f1.toFixed(4)]);
  if (s.lastEval?.eval_exact_match !== undefined) rows.push(["eval exact match", `${(100 * s.lastEval.eval_exact_match).toFixed(1)}%`]);
  rows.push(["output", `${s.outputDir} (${s.files.join(", ")})`]);
  if (s.stoppedBy === "interrupted" && s.lastCheckpoint) rows.push(["resume from", latestCheckpoint(s.outputDir) ?? s.lastCheckpoint]);
  return `Summary\n${table(rows)}`;
}
