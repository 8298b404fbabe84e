/**
 * `peftkit train --method mezo|sparse_mezo [--zo-over METHOD]`: a MeZO run (ZoTrainer) with the
 * atomic checkpoints of the other runs (checkpoint-N/ by saveCheckpoint).
 *
 * The run's state is small: the trained tensors, Sparse MeZO's thresholds, and the step and data
 * position. z is a function of (run seed, step) (stepSeed), so nothing random is kept and a
 * resumed run draws the same perturbations as an uninterrupted one: `--resume` is bit-exact.
 *
 * Saved form: full-weight mode writes the changed base tensors as LISA/HFT do
 * (trained_tensors.safetensors + selective_config.json, method "mezo"/"sparse_mezo";
 * applyTrainedTensors loads them); adapter mode writes an ordinary HF PEFT adapter folder.
 * Both add training_args.json (what `peftkit compare` reads) and metrics.jsonl.
 */
import { appendFileSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { writeFileAtomic } from "../../io/atomic-write.js";
import { faultPoint } from "../../io/fault.js";
import { readSafetensors, writeSafetensors } from "../../io/safetensors.js";
import type { PreTrainedTokenizer } from "../../io/tokenizer.js";
import type { PreTrainedModel } from "../../models/pretrained.js";
import type { PeftModel } from "../../tuners/peft-model.js";
import { weightsFingerprint } from "../../util/fingerprint.js";
import {
  advanceMicroBatch,
  CheckpointMismatchError,
  freshTrainerState,
  latestCheckpoint,
  loadCheckpoint,
  saveCheckpoint,
  type TrainerState,
} from "../checkpoint.js";
import { BatchStream } from "../data/index.js";
import { type EvalMetrics, evaluate } from "../evaluate.js";
import { truncateMetrics } from "../metrics-file.js";
import { refuseEarlierRun } from "../run.js";
import { learningRate, TrainingArgsError, warmupSteps } from "../schedule.js";
import { type SelectiveConfig, type TensorRunBasics, writeTrained } from "../selective-run.js";
import type { EvalSource } from "../trainer.js";
import { stepSeed } from "./seeds.js";
import { checkSparsity } from "./sparse.js";
import { ZoTrainer } from "./trainer.js";

export const ZO_METHODS = ["mezo", "sparse_mezo"] as const;
export type ZoMethod = (typeof ZO_METHODS)[number];
export const ZO_CONFIG_FILE = "zo_config.json";
/** Adapter mode: the trained tensors as they train (the adapter file may name them otherwise). */
const ZO_TENSORS_FILE = "zo_tensors.safetensors";
const THRESHOLD = "threshold.";

/** What a ZO run records (zo_config.json in checkpoints; `zo` in selective_config.json / training_args.json). */
export interface ZoConfig {
  method: ZoMethod;
  /** The adapter method ZO trains, or null for the model's own weights. */
  zo_over: string | null;
  zo_eps: number;
  zo_sparsity: number | null;
  weight_decay: number;
  /** Full-weight mode: --target (module names) or null for every weight. */
  target: string[] | null;
  seed: number;
  base_model: string;
}

export interface ZoRunOptions extends TensorRunBasics {
  method: ZoMethod;
  model: PreTrainedModel;
  modelPath?: string;
  /** Adapter mode: the PeftModel holding the adapter to train (null: full weights). */
  peft: PeftModel | null;
  zoOver: string | null;
  /** Full-weight mode: which weights train (default all). */
  trains?: (name: string) => boolean;
  target: string[] | null;
  eps: number;
  sparsity: number | null;
  /** The two forwards as two runs of a one-forward graph (ZoStepDefinition.split): less memory. */
  split?: boolean;
  weightDecay: number;
  saveSteps?: number;
  saveTotalLimit?: number;
  logSteps?: number;
  resume: boolean;
  record?: Record<string, unknown>;
  log?: (line: string) => void;
  /**
   * Evaluation during training, as `peftkit train` does it: every `every` steps (when given) and
   * after the last step, on the model as it stands (full weights are trained in place; an adapter
   * is synced after every step). Each result is a line of metrics.jsonl.
   */
  evaluation?: { source: EvalSource; tokenizer: PreTrainedTokenizer; every?: number };
}

export async function runZo(o: ZoRunOptions): Promise<{ steps: number; finalLoss: number; trainable: number }> {
  const log = o.log ?? (() => {});
  if (!(o.eps > 0) || !Number.isFinite(o.eps)) throw new TrainingArgsError(`--zo-eps ${o.eps}: want a positive number`);
  if (o.sparsity !== null) checkSparsity(o.sparsity);
  if (o.peft) refuseEarlierRun(o.outputDir, o.resume);
  if (!o.resume && latestCheckpoint(o.outputDir))
    throw new TrainingArgsError(
      `${o.outputDir} holds checkpoints of an earlier run; pass --resume to continue it or choose another --output-dir`,
    );
  mkdirSync(o.outputDir, { recursive: true });
  const basePrint = weightsFingerprint(o.model.weights);
  const zo: ZoConfig = {
    method: o.method,
    zo_over: o.zoOver,
    zo_eps: o.eps,
    zo_sparsity: o.sparsity,
    weight_decay: o.weightDecay,
    target: o.target,
    seed: o.seed,
    base_model: basePrint,
  };
  const ck = o.resume ? latestCheckpoint(o.outputDir) : null;
  let saved: ReturnType<typeof loadCheckpoint> | null = null;
  if (ck) {
    saved = loadCheckpoint(ck);
    const cfg = JSON.parse(readFileSync(join(ck, ZO_CONFIG_FILE), "utf8")) as ZoConfig;
    for (const k of Object.keys(zo) as (keyof ZoConfig)[])
      if (JSON.stringify(cfg[k]) !== JSON.stringify(zo[k]))
        throw new CheckpointMismatchError(`${ck}: ${k} is ${JSON.stringify(cfg[k])}, this run has ${JSON.stringify(zo[k])}`);
  }
  const thresholds = saved
    ? Object.fromEntries(
        Object.entries(saved.optimizer)
          .filter(([k]) => k.startsWith(THRESHOLD))
          .map(([k, t]) => [k.slice(THRESHOLD.length), Number(t.data[0])]),
      )
    : undefined;
  const opts = { sparsity: o.sparsity ?? undefined, thresholds, split: o.split };
  const trainer = o.peft ? await ZoTrainer.adapter(o.peft, opts) : await ZoTrainer.full(o.model, { ...opts, trains: o.trains });
  const stream = new BatchStream(o.train, { batchSize: o.batchSize, seed: o.seed, padId: o.padId });
  const metricsPath = join(o.outputDir, "metrics.jsonl");
  let state: TrainerState = freshTrainerState(o.seed);
  if (ck && saved) {
    const file = o.peft ? ZO_TENSORS_FILE : "trained_tensors.safetensors";
    trainer.restore(readSafetensors(join(ck, file)).tensors);
    state = saved.state;
    truncateMetrics(metricsPath, state.step);
    log(`resuming from ${ck} (step ${state.step})`);
  } else writeFileAtomic(metricsPath, "");
  const selective = (): SelectiveConfig => ({
    method: o.method,
    zo: { ...zo },
    seed: o.seed,
    base_model: basePrint,
    ...(o.modelPath ? { base_model_name_or_path: o.modelPath } : {}),
    steps: state.step,
    selection: null,
  });
  const changed = { changedTensors: () => new Map(Object.entries(trainer.tensors)) };
  const writeModel = (dir: string) => {
    if (o.peft) {
      mkdirSync(dir, { recursive: true });
      o.peft.savePretrained(dir);
    } else writeTrained(dir, changed, selective());
  };
  const checkpointState = (): Record<string, HostTensor> =>
    Object.fromEntries(Object.entries(trainer.step.thresholds ?? {}).map(([k, h]) => [THRESHOLD + k, hostTensor("f32", [1], [h])]));
  let lastSaved = -1;
  const checkpoint = () => {
    saveCheckpoint(
      o.outputDir,
      state,
      checkpointState(),
      (dir) => {
        writeModel(dir);
        if (o.peft) writeSafetensors(join(dir, ZO_TENSORS_FILE), { ...trainer.tensors });
        writeFileAtomic(join(dir, ZO_CONFIG_FILE), `${JSON.stringify(zo, null, 2)}\n`);
      },
      o.saveTotalLimit,
    );
    lastSaved = state.step;
  };
  const warm = warmupSteps(o.warmup, o.maxSteps);
  const started = Date.now();
  let lastLoss = Number.NaN;
  let lastEval: EvalMetrics | null = null;
  try {
    while (state.step < o.maxSteps) {
      faultPoint("train:step");
      const lr = learningRate(o.schedule, o.lr, state.step, o.maxSteps, warm);
      const b = stream.batch(state.epoch, state.batchIndex);
      const res = await trainer.train(b, { lr, eps: o.eps, seed: stepSeed(o.seed, state.step), weightDecay: o.weightDecay });
      if (!Number.isFinite(res.projectedGrad))
        throw new TrainingArgsError(`the loss is ${res.lossPlus}/${res.lossMinus} at step ${state.step + 1}; lower --lr or --zo-eps`);
      state.step++;
      advanceMicroBatch(state, b.tokens, stream.batchesPerEpoch);
      lastLoss = res.lossPlus;
      appendFileSync(
        metricsPath,
        `${JSON.stringify({ step: state.step, loss: res.lossPlus, loss_minus: res.lossMinus, projected_grad: res.projectedGrad, lr })}\n`,
      );
      if (o.logSteps && state.step % o.logSteps === 0)
        log(
          `step ${state.step}/${o.maxSteps}: loss ${res.lossPlus.toFixed(4)} (−εz: ${res.lossMinus.toFixed(4)}), g ${res.projectedGrad.toExponential(3)}`,
        );
      const ev = o.evaluation;
      if (ev && ((ev.every && state.step % ev.every === 0) || state.step === o.maxSteps)) {
        lastEval = await evaluate(o.peft ?? o.model, ev.source.batches, {
          causal: true,
          classification: false,
          completions: ev.source.completions,
          tokenizer: ev.tokenizer,
        });
        appendFileSync(metricsPath, `${JSON.stringify({ step: state.step, ...lastEval })}\n`);
        log(
          `eval at step ${state.step}: ${Object.entries(lastEval)
            .map(([k, v]) => `${k} ${typeof v === "number" ? v.toFixed(4) : v}`)
            .join("  ")}`,
        );
      }
      if (o.saveSteps && state.step % o.saveSteps === 0 && state.step < o.maxSteps) checkpoint();
    }
    if (lastSaved !== state.step) checkpoint();
    writeModel(o.outputDir);
    const result = {
      steps: state.step,
      wallSeconds: (Date.now() - started) / 1000,
      tokensSeen: state.tokensSeen,
      trainableParams: trainer.trainedParameters(),
      stoppedBy: "max_steps",
      finalLoss: lastLoss,
      lastEval,
    };
    writeFileAtomic(join(o.outputDir, "training_args.json"), `${JSON.stringify({ ...o.record, method: o.method, zo, result }, null, 2)}\n`);
  } finally {
    await trainer.release();
  }
  log(`trained ${state.step} steps (${o.method}${o.zoOver ? ` over ${o.zoOver}` : ", full weights"}); final loss ${lastLoss.toFixed(4)}`);
  return { steps: state.step, finalLoss: lastLoss, trainable: trainer.trainedParameters() };
}
