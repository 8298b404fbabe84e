/**
 * `peftkit train --method gradnorm_lorp`: a training run of GradNormTrainer with the checkpoints
 * of the other in-place methods (checkpoint-N/ written atomically by saveCheckpoint): the targeted
 * tensors, the optimizer state (projectors, low-rank moments, g and its moments, ‖V‖ per row) and
 * the step, so `--resume` continues exactly (the next refresh falls on the same step).
 *
 * Saved form: as LISA/HFT's (src/train/selective-run.ts): `trained_tensors.safetensors` (the
 * targeted tensors, deployed W = g·V/‖V‖, under the base model's names) + `selective_config.json`
 * with method "gradnorm_lorp" and its options; applyTrainedTensors() loads it onto the base.
 */
import { appendFileSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../io/atomic-write.js";
import { faultPoint } from "../io/fault.js";
import { readSafetensors } from "../io/safetensors.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import { modelInfo } from "../tuners/model-info.js";
import { targetedLinears } from "../tuners/targets.js";
import { weightsFingerprint } from "../util/fingerprint.js";
import {
  advanceMicroBatch,
  CheckpointMismatchError,
  freshTrainerState,
  latestCheckpoint,
  loadCheckpoint,
  saveCheckpoint,
  type TrainerState,
} from "./checkpoint.js";
import { BatchStream } from "./data/index.js";
import { GradNormTrainer } from "./gradnorm-lorp.js";
import type { GradNormOptions } from "./gradnorm-projector.js";
import { truncateMetrics } from "./metrics-file.js";
import { learningRate, TrainingArgsError, warmupSteps } from "./schedule.js";
import { SELECTIVE_CONFIG_FILE, type SelectiveConfig, type TensorRunBasics, TRAINED_TENSORS_FILE, writeTrained } from "./selective-run.js";

export interface GradNormRunOptions extends TensorRunBasics {
  model: PreTrainedModel;
  modelPath?: string;
  clipNorm?: number;
  saveSteps?: number;
  saveTotalLimit?: number;
  resume: boolean;
  /** --target: module names or "all-linear" (default). */
  target?: string[] | string;
  gradnorm: Partial<GradNormOptions>;
  gradientCheckpointing?: boolean;
  log?: (line: string) => void;
}

/** The weight names --target selects (PEFT's matching rules; "all-linear" = every linear layer but the head). */
export function gradNormTargets(model: PreTrainedModel, target: string[] | string | undefined): string[] {
  const all = target === undefined || (Array.isArray(target) && target.length === 1 && target[0].toLowerCase() === "all-linear");
  const spec = {
    targetModules: all ? "all-linear" : (target as string[] | string),
    excludeModules: null,
    layersToTransform: null,
    layersPattern: null,
  };
  return targetedLinears(modelInfo(model), spec, "--target", null).map((l) => `${l.path}.weight`);
}

export async function runGradNorm(o: GradNormRunOptions): Promise<{ steps: number; finalLoss: number; trainable: number }> {
  const log = o.log ?? (() => {});
  if (!o.resume && latestCheckpoint(o.outputDir))
    throw new TrainingArgsError(
      `${o.outputDir} holds checkpoints of an earlier run; pass --resume to continue it or choose another --output-dir`,
    );
  mkdirSync(o.outputDir, { recursive: true });
  const basePrint = weightsFingerprint(o.model.weights);
  const targets = gradNormTargets(o.model, o.target);
  const trainer = GradNormTrainer.create(o.model, targets, {
    ...o.gradnorm,
    clipNorm: o.clipNorm,
    gradientCheckpointing: o.gradientCheckpointing,
  });
  const opts = trainer.opts;
  const stream = new BatchStream(o.train, { batchSize: o.batchSize, seed: o.seed, padId: o.padId });
  const metricsPath = join(o.outputDir, "metrics.jsonl");
  const gradnorm = {
    rank: opts.rank,
    update_proj_gap: opts.updateProjGap,
    scale: opts.scale,
    betas: [opts.beta1, opts.beta2],
    eps: opts.eps,
    weight_decay: opts.weightDecay,
    compat: opts.compat,
    svd: opts.svd,
    target_modules: o.target ?? "all-linear",
    targets: targets.length,
  };
  const config = (): SelectiveConfig => ({
    method: "gradnorm_lorp",
    gradnorm,
    seed: o.seed,
    base_model: basePrint,
    ...(o.modelPath ? { base_model_name_or_path: o.modelPath } : {}),
    steps: trainer.stepCount,
    selection: null,
  });
  let state: TrainerState = freshTrainerState(o.seed);
  const ck = o.resume ? latestCheckpoint(o.outputDir) : null;
  if (ck) {
    const saved = loadCheckpoint(ck);
    const cfg = JSON.parse(readFileSync(join(ck, SELECTIVE_CONFIG_FILE), "utf8")) as SelectiveConfig;
    if (cfg.method !== "gradnorm_lorp") throw new CheckpointMismatchError(`${ck}: method is ${cfg.method}, this run has gradnorm_lorp`);
    if (cfg.seed !== o.seed || cfg.base_model !== basePrint)
      throw new CheckpointMismatchError(`${ck}: seed or base model differ from this run's (${cfg.seed}, ${cfg.base_model})`);
    for (const [k, v] of Object.entries(gradnorm))
      if (JSON.stringify(cfg.gradnorm?.[k]) !== JSON.stringify(v))
        throw new CheckpointMismatchError(
          `${ck}: gradnorm ${k} is ${JSON.stringify(cfg.gradnorm?.[k])}, this run has ${JSON.stringify(v)}`,
        );
    const tensors = new Map(Object.entries(readSafetensors(join(ck, TRAINED_TENSORS_FILE)).tensors));
    trainer.restore(saved.state.step, saved.optimizer, tensors, ck);
    state = saved.state;
    truncateMetrics(metricsPath, state.step);
    log(`resuming from ${ck} (step ${state.step})`);
  } else writeFileAtomic(metricsPath, "");
  const warm = warmupSteps(o.warmup, o.maxSteps);
  const tensors = { changedTensors: () => trainer.trainedTensors() };
  let lastLoss = Number.NaN;
  let saved = -1;
  const checkpoint = () => {
    saveCheckpoint(o.outputDir, state, trainer.checkpointState(), (dir) => writeTrained(dir, tensors, config()), o.saveTotalLimit);
    saved = state.step;
  };
  const started = Date.now();
  try {
    while (state.step < o.maxSteps) {
      faultPoint("train:step");
      const lr = learningRate(o.schedule, o.lr, state.step, o.maxSteps, warm);
      const b = stream.batch(state.epoch, state.batchIndex);
      const res = await trainer.train(b, { lr, seed: o.seed * 1_000_003 + state.microStep });
      if (!Number.isFinite(res.loss)) throw new TrainingArgsError(`loss is ${res.loss} at step ${state.step + 1}; lower --lr`);
      state.step++;
      advanceMicroBatch(state, b.tokens, stream.batchesPerEpoch);
      lastLoss = res.loss;
      const r = res.refresh;
      appendFileSync(
        metricsPath,
        `${JSON.stringify({
          step: state.step,
          loss: res.loss,
          lr,
          grad_norm: res.gradNorm,
          ...(r ? { refresh_gradient_s: r.gradientSeconds, refresh_svd_s: r.svdSeconds } : {}),
        })}\n`,
      );
      if (r)
        log(
          `step ${state.step}: projectors refreshed (gradient ${r.gradientSeconds.toFixed(2)} s, SVD ${r.svdSeconds.toFixed(2)} s); loss ${res.loss.toFixed(4)}`,
        );
      if (o.saveSteps && state.step % o.saveSteps === 0 && state.step < o.maxSteps) checkpoint();
    }
    if (saved !== state.step) checkpoint();
    writeTrained(o.outputDir, tensors, config());
    const result = {
      steps: state.step,
      wallSeconds: (Date.now() - started) / 1000,
      tokensSeen: state.tokensSeen,
      trainableParams: trainer.trainedParameters(),
      optimizerElements: trainer.optimizerElements(),
      refreshes: trainer.refreshStats.refreshes,
      refreshGradientSeconds: trainer.refreshStats.gradientSeconds,
      refreshSvdSeconds: trainer.refreshStats.svdSeconds,
    };
    writeFileAtomic(
      join(o.outputDir, "training_args.json"),
      `${JSON.stringify({ method: "gradnorm_lorp", config: config(), result }, null, 2)}\n`,
    );
  } finally {
    await trainer.release();
  }
  log(
    `trained ${state.step} steps; final loss ${lastLoss.toFixed(4)}; ${trainer.refreshStats.refreshes} projector refresh(es): gradient ${trainer.refreshStats.gradientSeconds.toFixed(1)} s, SVD ${trainer.refreshStats.svdSeconds.toFixed(1)} s`,
  );
  return { steps: state.step, finalLoss: lastLoss, trainable: trainer.trainedParameters() };
}
