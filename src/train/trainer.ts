/**
 * The training loop: epochs or max steps, gradient accumulation, LR schedules with warmup,
 * evaluation and early stopping, atomic checkpoints with exact resume, a graceful stop on
 * request (SIGINT), and a clear stop on a non-finite loss with the last good checkpoint kept.
 */
import { appendFileSync, existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { HostTensor } from "../engine/ir/host.js";
import type { StepResult } from "../engine/optim/train-step.js";
import { fsyncFile, writeFileAtomic } from "../io/atomic-write.js";
import { faultPoint } from "../io/fault.js";
import type { PreTrainedTokenizer } from "../io/tokenizer.js";
import { adapterConfigJson, readAdapter } from "../tuners/format.js";
import type { PeftModel } from "../tuners/peft-model.js";
import { METHOD_LOSS, type PeftTrainer, type TrainBatch } from "../tuners/train.js";
import {
  advanceMicroBatch,
  CheckpointMismatchError,
  checkCheckpointConfig,
  checkCheckpointSeed,
  freshTrainerState,
  latestCheckpoint,
  loadCheckpoint,
  recoverCheckpoints,
  saveCheckpoint,
  type TrainerState,
} from "./checkpoint.js";
import { type CompletionItem, type EvalBatch, type EvalMetrics, evaluate } from "./evaluate.js";
import { truncateMetrics } from "./metrics-file.js";
import { lineChartSvg } from "./plot.js";
import type { Progress } from "./progress.js";
import { learningRate, type ScheduleName, TrainingArgsError, warmupSteps } from "./schedule.js";

export interface BatchSource {
  /** Micro-batches per epoch. */
  readonly batchesPerEpoch: number;
  /** The micro-batch at a position; the same position always gives the same batch. */
  batch(epoch: number, index: number): TrainBatch & { tokens: number };
}

export interface TrainerArgs {
  outputDir: string;
  epochs?: number;
  maxSteps?: number;
  gradAccum?: number;
  lr: number;
  schedule?: ScheduleName;
  /** Steps (>= 1) or a fraction of all steps (< 1). */
  warmup?: number;
  seed?: number;
  saveSteps?: number;
  saveTotalLimit?: number;
  evalSteps?: number;
  logSteps?: number;
  /** Stop after this many evaluations without a better eval loss. */
  earlyStoppingPatience?: number;
  /**
   * Stop after this many seconds of training (the schedule still spans the full step count, so
   * the learning rate is then not fully decayed); for time-boxed runs such as the demo.
   */
  maxSeconds?: number;
  resume?: boolean;
}

export interface EvalSource {
  batches: EvalBatch[];
  completions?: CompletionItem[];
}

export interface TrainResult {
  steps: number;
  stoppedBy: "max_steps" | "epochs" | "early_stopping" | "interrupted" | "non_finite_loss" | "time_budget";
  finalLoss: number;
  bestEval: number | null;
  lastEval: EvalMetrics | null;
  wallSeconds: number;
  tokensSeen: number;
  lastCheckpoint: string | null;
}

export class NonFiniteLossError extends TrainingArgsError {}

/** The optimizer steps a run of these settings makes (max_steps or epochs, whichever ends first). */
export function plannedSteps(args: Pick<TrainerArgs, "epochs" | "maxSteps" | "gradAccum">, batchesPerEpoch: number): number {
  const accum = args.gradAccum ?? 1;
  const perEpoch = Math.max(1, Math.floor(batchesPerEpoch / accum));
  const byEpochs = args.epochs !== undefined ? Math.ceil(args.epochs * perEpoch) : Number.POSITIVE_INFINITY;
  return Math.min(args.maxSteps ?? Number.POSITIVE_INFINITY, byEpochs);
}

/** The parts of the loop that depend on the model being trained (adapter or full). */
export interface TrainTarget {
  readonly trainer: PeftTrainer;
  readonly peft: PeftModel;
  readonly tokenizer?: PreTrainedTokenizer;
  readonly causal: boolean;
  readonly classification: boolean;
  /** Token classification: eval adds token accuracy and macro-F1. */
  readonly tokenClassification?: boolean;
  /** The class names; token classification with BIO names adds span F1 to eval. */
  readonly labelNames?: readonly string[];
}

/** Per-micro-batch seed: the same at a given point of the run, with or without resume. */
function microSeed(seed: number, micro: number): number {
  let x = (seed ^ 0x9e3779b9) >>> 0;
  x = Math.imul(x ^ (micro + 1), 0x85ebca6b) >>> 0;
  return (x ^ (x >>> 13)) >>> 0;
}

export class Trainer {
  private stopRequested = false;
  readonly metricsPath: string;

  constructor(
    private readonly target: TrainTarget,
    private readonly train: BatchSource,
    private readonly evalSet: EvalSource | null,
    private readonly args: TrainerArgs,
    private readonly progress: Progress,
  ) {
    if (args.epochs === undefined && args.maxSteps === undefined) throw new TrainingArgsError("set epochs or maxSteps");
    if (!(args.lr > 0)) throw new TrainingArgsError(`the learning rate must be > 0, got ${args.lr}`);
    if (train.batchesPerEpoch === 0) throw new TrainingArgsError("the training set has no batches");
    this.metricsPath = join(args.outputDir, "metrics.jsonl");
  }

  /**
   * Asks the loop to stop after the current step, saving a checkpoint. When that step is the
   * last one the run simply finishes (final checkpoint and adapter), as it would have anyway.
   */
  requestStop(): void {
    this.stopRequested = true;
  }

  get totalSteps(): number {
    return plannedSteps(this.args, this.train.batchesPerEpoch);
  }

  private log(record: Record<string, unknown>): void {
    appendFileSync(this.metricsPath, `${JSON.stringify(record)}\n`);
  }

  private checkpoint(state: TrainerState): string {
    // The metrics up to this step become as durable as the checkpoint.
    if (existsSync(this.metricsPath)) fsyncFile(this.metricsPath);
    const trainer = this.target.trainer;
    const s = trainer.step.getState();
    const optimizer: Record<string, HostTensor> = {};
    for (const [k, t] of Object.entries(s.tensors)) optimizer[k] = t;
    const adapter = this.target.peft.adapter(trainer.adapterName);
    // When the saved adapter is not the trained tensors themselves (pruned ranks, a projected
    // prefix), the checkpoint also keeps the trained ones so a resume continues from them.
    const differs = adapter.tuner.tensorsToSave !== undefined || trainer.controller !== null;
    return saveCheckpoint(
      this.args.outputDir,
      state,
      optimizer,
      (dir) => this.target.peft.savePretrained(dir, { selectedAdapters: [trainer.adapterName] }),
      this.args.saveTotalLimit,
      { controller: trainer.controller?.state() ?? null, trainingTensors: differs ? adapter.tensors : null },
    );
  }

  async run(): Promise<TrainResult> {
    const args = this.args;
    mkdirSync(args.outputDir, { recursive: true });
    const total = this.totalSteps;
    const accum = args.gradAccum ?? 1;
    const warm = warmupSteps(args.warmup ?? 0, total);
    const schedule = args.schedule ?? "linear";
    const seed = args.seed ?? 42;
    let state: TrainerState = freshTrainerState(seed);
    let lastCheckpoint: string | null = null;
    let savedStep = -1;
    let lastLoss = Number.NaN;
    for (const msg of recoverCheckpoints(args.outputDir)) this.progress.line(`after an interrupted write: ${msg}`);
    if (args.resume) {
      const dir = latestCheckpoint(args.outputDir);
      if (dir) {
        const ck = loadCheckpoint(dir);
        checkCheckpointSeed(dir, ck.state, seed);
        const adapter = this.target.peft.adapter(this.target.trainer.adapterName);
        const adapterDir = adapter.name === "default" ? dir : join(dir, adapter.name);
        const trainer = this.target.trainer;
        checkCheckpointConfig(dir, adapterDir, adapterConfigJson(adapter, this.target.peft.base), trainer.controller?.configFields);
        if (trainer.controller && !ck.controller)
          throw new CheckpointMismatchError(`${dir} has no controller.safetensors, which a ${adapter.tuner.peftType} run needs to resume`);
        state = ck.state;
        const tensors = ck.trainingTensors ?? readAdapter(this.target.peft, adapterDir).tensors;
        trainer.restore(state.step, ck.optimizer, tensors, ck.controller);
        lastCheckpoint = dir;
        savedStep = state.step;
        lastLoss = truncateMetrics(this.metricsPath, state.step);
        this.progress.line(`resuming from ${dir} (step ${state.step})`);
      } else {
        truncateMetrics(this.metricsPath, 0);
        this.progress.line(`no checkpoint in ${args.outputDir}; starting from scratch`);
      }
    } else writeFileAtomic(this.metricsPath, "");
    const started = Date.now();
    let lastEval: EvalMetrics | null = null;
    let stoppedBy: TrainResult["stoppedBy"] = args.maxSteps !== undefined && args.maxSteps <= total ? "max_steps" : "epochs";
    let windowTokens = 0;
    let windowStart = Date.now();
    while (state.step < total) {
      faultPoint("train:step");
      const lr = learningRate(schedule, args.lr, state.step, total, warm);
      let res: StepResult;
      let lossSum = 0;
      let methodLossSum: number | null = null;
      let stepTokens = 0;
      for (let m = 0; m < accum; m++) {
        const b = this.train.batch(state.epoch, state.batchIndex);
        const s = microSeed(seed, state.microStep);
        if (accum === 1) res = await this.target.trainer.train(b, { lr, seed: s });
        else res = await this.target.trainer.accumulate(b, { seed: s });
        lossSum += res.loss;
        const ml = res.metrics[METHOD_LOSS];
        if (ml !== undefined) methodLossSum = (methodLossSum ?? 0) + ml;
        stepTokens += b.tokens;
        advanceMicroBatch(state, b.tokens, this.train.batchesPerEpoch);
      }
      const loss = lossSum / accum;
      // A method's own loss (KaSA's regulariser) is logged beside the task loss, not in it.
      const methodLoss = methodLossSum === null ? null : methodLossSum / accum;
      const badTerm = !Number.isFinite(loss) ? "loss" : methodLoss !== null && !Number.isFinite(methodLoss) ? "method loss" : null;
      if (badTerm) {
        const bad = badTerm === "loss" ? loss : methodLoss;
        stoppedBy = "non_finite_loss";
        this.progress.line(
          `${badTerm} is ${bad} at step ${state.step + 1}: training stopped. The adapter was not saved past ${lastCheckpoint ?? "the start (no checkpoint yet)"}; lower the learning rate or check the data.`,
        );
        this.log({ step: state.step + 1, event: "non_finite_loss", [badTerm === "loss" ? "loss" : "method_loss"]: String(bad) });
        throw new NonFiniteLossError(
          `non-finite ${badTerm} (${bad}) at step ${state.step + 1}; last good checkpoint: ${lastCheckpoint ?? "none"}`,
        );
      }
      let gradNorm: number;
      if (accum > 1) gradNorm = (await this.target.trainer.apply({ lr })).gradNorm;
      else gradNorm = (res! as StepResult).gradNorm;
      state.step++;
      windowTokens += stepTokens;
      lastLoss = loss;
      const elapsed = (Date.now() - started) / 1000;
      const tps = windowTokens / Math.max(1e-3, (Date.now() - windowStart) / 1000);
      if (Date.now() - windowStart > 10000) {
        windowTokens = 0;
        windowStart = Date.now();
      }
      // What a method's controller manages (AdaLoRA's budget and ranks), logged beside the loss.
      const controlled = this.target.trainer.controllerMetrics();
      this.log({
        step: state.step,
        epoch: state.epoch,
        loss,
        ...(methodLoss !== null ? { method_loss: methodLoss } : {}),
        ...controlled,
        lr,
        grad_norm: gradNorm,
        tokens: state.tokensSeen,
        elapsed,
      });
      this.progress.update({
        step: state.step,
        total,
        loss,
        ...(methodLoss !== null ? { methodLoss } : {}),
        ...(Object.keys(controlled).length ? { controlled } : {}),
        tokensPerSecond: tps,
        elapsedSeconds: elapsed,
        lr,
      });
      let early = false;
      if (this.evalSet && args.evalSteps && (state.step % args.evalSteps === 0 || state.step === total)) {
        lastEval = await this.evaluate();
        this.log({ step: state.step, ...lastEval });
        this.progress.line(
          `eval at step ${state.step}: ${Object.entries(lastEval)
            .map(([k, v]) => `${k} ${typeof v === "number" ? v.toFixed(4) : v}`)
            .join("  ")}`,
        );
        if (state.bestEval === null || lastEval.eval_loss < state.bestEval) {
          state.bestEval = lastEval.eval_loss;
          state.evalsWithoutImprovement = 0;
        } else {
          state.evalsWithoutImprovement++;
          if (args.earlyStoppingPatience && state.evalsWithoutImprovement >= args.earlyStoppingPatience) early = true;
        }
      }
      // Every way out of the loop saves below; an interrupt during the last step just finishes.
      if (early) {
        stoppedBy = "early_stopping";
        break;
      }
      if (args.maxSeconds !== undefined && (Date.now() - started) / 1000 >= args.maxSeconds && state.step < total) {
        stoppedBy = "time_budget";
        break;
      }
      if (this.stopRequested && state.step < total) {
        stoppedBy = "interrupted";
        break;
      }
      if (args.saveSteps && state.step % args.saveSteps === 0 && state.step < total) {
        lastCheckpoint = this.checkpoint(state);
        savedStep = state.step;
      }
    }
    this.progress.done();
    faultPoint("train:final-save");
    if (savedStep !== state.step) lastCheckpoint = this.checkpoint(state);
    if (stoppedBy === "interrupted")
      this.progress.line(`stopped at step ${state.step}; checkpoint saved to ${lastCheckpoint}. Resume with --resume.`);
    else if (this.stopRequested) this.progress.line(`interrupted during the last step: the run is complete`);
    return {
      steps: state.step,
      stoppedBy,
      finalLoss: lastLoss,
      bestEval: state.bestEval,
      lastEval,
      wallSeconds: (Date.now() - started) / 1000,
      tokensSeen: state.tokensSeen,
      lastCheckpoint,
    };
  }

  async evaluate(): Promise<EvalMetrics> {
    if (!this.evalSet) throw new TrainingArgsError("no evaluation data");
    faultPoint("train:eval");
    return evaluate(this.target.peft, this.evalSet.batches, {
      causal: this.target.causal,
      classification: this.target.classification,
      tokenClassification: this.target.tokenClassification,
      labelNames: this.target.labelNames,
      completions: this.evalSet.completions,
      tokenizer: this.target.tokenizer,
    });
  }

  /** The loss and eval curves of metrics.jsonl as an SVG. */
  static curveSvg(records: Record<string, unknown>[]): string {
    const train = records.filter((r) => typeof r.loss === "number").map((r) => [r.step as number, r.loss as number] as [number, number]);
    const ev = records
      .filter((r) => typeof r.eval_loss === "number")
      .map((r) => [r.step as number, r.eval_loss as number] as [number, number]);
    return lineChartSvg(
      "peftkit training",
      [
        { name: "train loss", color: "#1f77b4", points: train },
        { name: "eval loss", color: "#d62728", points: ev },
      ],
      { xLabel: "step", yLabel: "loss" },
    );
  }
}
