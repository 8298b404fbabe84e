/**
 * `peftkit train --method lisa|hft`: a training run of whole base tensors (SelectiveTrainer) with
 * the checkpoints of adapter runs (checkpoint-N/ written atomically by saveCheckpoint), so
 * `--resume` continues exactly: the checkpoint holds the changed tensors, the optimizer state of
 * the current selection (with per-element step counts), the data position and the selection key;
 * the selection itself is a function of (seed, step), redrawn and checked on resume.
 *
 * Saved form (docs/methods/lisa.md): `trained_tensors.safetensors` (every base tensor some step
 * changed, under the base model's names; tied weights once) + `selective_config.json` (method,
 * options, seed, steps, base-model fingerprint). applyTrainedTensors() loads it onto the base.
 */
import { appendFileSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { HostTensor } from "../engine/ir/host.js";
import { writeFileAtomic } from "../io/atomic-write.js";
import { faultPoint } from "../io/fault.js";
import { readSafetensors, writeSafetensors } from "../io/safetensors.js";
import type { PreTrainedModel } from "../models/pretrained.js";
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
import { BatchStream, type Example } from "./data/index.js";
import { LayerSelectionError } from "./layer-selection.js";
import { truncateMetrics } from "./metrics-file.js";
import { learningRate, type ScheduleName, TrainingArgsError, warmupSteps } from "./schedule.js";
import { hftPolicy, lisaPolicy, type SelectionPolicy, SelectiveTrainer } from "./selective.js";

/** Methods that train base tensors in place (gradnorm_lorp: src/train/gradnorm-run.ts, same saved form). */
export const SELECTIVE_METHODS = ["lisa", "hft", "gradnorm_lorp"] as const;
export type SelectiveMethod = (typeof SELECTIVE_METHODS)[number];
export const TRAINED_TENSORS_FILE = "trained_tensors.safetensors";
export const SELECTIVE_CONFIG_FILE = "selective_config.json";

export interface SelectiveConfig {
  /** mezo / sparse_mezo: full-weight zeroth-order runs (src/train/zo/run.ts) save this form too. */
  method: SelectiveMethod | "mezo" | "sparse_mezo";
  lisa_layers?: number;
  lisa_interval?: number;
  hft_stage_steps?: number;
  /** gradnorm_lorp: rank, update_proj_gap, scale, compat, svd, target_modules (docs/methods/gradnorm_lorp.md). */
  gradnorm?: Record<string, unknown>;
  /** mezo / sparse_mezo: eps, sparsity, weight decay, target (docs/methods/mezo.md). */
  zo?: Record<string, unknown>;
  seed: number;
  /** Fingerprint of the base weights the tensors were trained from (src/util/fingerprint.ts). */
  base_model: string;
  base_model_name_or_path?: string;
  steps: number;
  /** The selection of the last step (LISA: "lisa:3,17"; HFT: "hft:<stage>"). */
  selection: string | null;
}

/** The data, schedule and output settings every whole-tensor run takes (selective, gradnorm, zo). */
export interface TensorRunBasics {
  outputDir: string;
  train: Example[];
  padId: number;
  batchSize: number;
  maxSteps: number;
  lr: number;
  schedule: ScheduleName;
  warmup: number;
  seed: number;
}

export interface SelectiveRunOptions extends TensorRunBasics {
  method: SelectiveMethod;
  model: PreTrainedModel;
  modelPath?: string;
  clipNorm?: number;
  weightDecay?: number;
  saveSteps?: number;
  saveTotalLimit?: number;
  resume: boolean;
  lisaLayers: number;
  lisaInterval: number;
  hftStageSteps: number;
  gradientCheckpointing?: boolean;
  log?: (line: string) => void;
}

export function policyFor(
  method: SelectiveMethod,
  model: PreTrainedModel,
  o: Pick<SelectiveRunOptions, "seed" | "lisaLayers" | "lisaInterval" | "hftStageSteps">,
): SelectionPolicy {
  if (method === "gradnorm_lorp")
    throw new LayerSelectionError("gradnorm_lorp trains a fixed set of tensors (runGradNorm), not a selection");
  const layout = SelectiveTrainer.layout(model);
  return method === "lisa"
    ? lisaPolicy(layout, o.seed, { layers: o.lisaLayers, interval: o.lisaInterval })
    : hftPolicy(layout, o.seed, { stageSteps: o.hftStageSteps });
}

export function writeTrained(dir: string, t: { changedTensors(): Map<string, HostTensor> }, cfg: SelectiveConfig): void {
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, TRAINED_TENSORS_FILE), Object.fromEntries(t.changedTensors()), { format: "peftkit-trained-tensors" });
  writeFileAtomic(join(dir, SELECTIVE_CONFIG_FILE), `${JSON.stringify(cfg, null, 2)}\n`);
}

/** Puts a saved run's tensors onto its base model (refuses another base). */
export function applyTrainedTensors(model: PreTrainedModel, dir: string): SelectiveConfig {
  const cfg = JSON.parse(readFileSync(join(dir, SELECTIVE_CONFIG_FILE), "utf8")) as SelectiveConfig;
  const print = weightsFingerprint(model.weights);
  if (cfg.base_model !== print)
    throw new LayerSelectionError(
      `${join(dir, SELECTIVE_CONFIG_FILE)}: base_model ${cfg.base_model} is not this model's weights (${print})`,
    );
  const { tensors } = readSafetensors(join(dir, TRAINED_TENSORS_FILE));
  const { aliases } = SelectiveTrainer.distinctWeights(model);
  for (const [k, t] of Object.entries(tensors)) {
    const cur = model.weights.get(k);
    if (!cur) throw new LayerSelectionError(`${join(dir, TRAINED_TENSORS_FILE)}: the model has no weight "${k}"`);
    if (cur.shape.join(",") !== t.shape.join(","))
      throw new LayerSelectionError(`${join(dir, TRAINED_TENSORS_FILE)}: "${k}" is [${t.shape}], the model's is [${cur.shape}]`);
    model.weights.set(k, t);
    for (const [alias, first] of aliases) if (first === k) model.weights.set(alias, t);
  }
  return cfg;
}

export async function runSelective(o: SelectiveRunOptions): Promise<{ steps: number; finalLoss: number; trainable: number }> {
  const log = o.log ?? (() => {});
  const stale = o.resume ? null : latestCheckpoint(o.outputDir);
  if (stale)
    throw new TrainingArgsError(
      `${o.outputDir} holds checkpoints of an earlier run; pass --resume to continue it or choose another --output-dir`,
    );
  mkdirSync(o.outputDir, { recursive: true });
  const basePrint = weightsFingerprint(o.model.weights);
  const policy = policyFor(o.method, o.model, o);
  const trainer = SelectiveTrainer.create(o.model, policy, {
    optimizer: { kind: "adamw", weightDecay: o.weightDecay },
    clipNorm: o.clipNorm,
    gradientCheckpointing: o.gradientCheckpointing,
  });
  const stream = new BatchStream(o.train, { batchSize: o.batchSize, seed: o.seed, padId: o.padId });
  const metricsPath = join(o.outputDir, "metrics.jsonl");
  const config = (): SelectiveConfig => ({
    method: o.method,
    ...(o.method === "lisa" ? { lisa_layers: o.lisaLayers, lisa_interval: o.lisaInterval } : { hft_stage_steps: o.hftStageSteps }),
    seed: o.seed,
    base_model: basePrint,
    ...(o.modelPath ? { base_model_name_or_path: o.modelPath } : {}),
    steps: trainer.stepCount,
    selection: trainer.current?.key ?? null,
  });
  let state: TrainerState = freshTrainerState(o.seed);
  const ck = o.resume ? latestCheckpoint(o.outputDir) : null;
  if (ck) {
    const saved = loadCheckpoint(ck);
    const cfg = JSON.parse(readFileSync(join(ck, SELECTIVE_CONFIG_FILE), "utf8")) as SelectiveConfig;
    const mine = config();
    for (const f of ["method", "lisa_layers", "lisa_interval", "hft_stage_steps", "seed", "base_model"] as const)
      if (cfg[f] !== mine[f]) throw new CheckpointMismatchError(`${ck}: ${f} is ${cfg[f]}, this run has ${mine[f]}`);
    const tensors = new Map(Object.entries(readSafetensors(join(ck, TRAINED_TENSORS_FILE)).tensors));
    await trainer.restore(saved.state.step, cfg.selection, saved.optimizer, tensors);
    state = saved.state;
    // the metrics of the steps after the checkpoint are redone
    truncateMetrics(metricsPath, state.step);
    log(`resuming from ${ck} (step ${state.step})`);
  } else writeFileAtomic(metricsPath, "");
  const warm = warmupSteps(o.warmup, o.maxSteps);
  let lastLoss = Number.NaN;
  let saved = -1;
  const checkpoint = () => {
    saveCheckpoint(
      o.outputDir,
      state,
      trainer.checkpointState().optimizer,
      (dir) => writeTrained(dir, trainer, config()),
      o.saveTotalLimit,
    );
    saved = state.step;
  };
  const started = Date.now();
  try {
    while (state.step < o.maxSteps) {
      faultPoint("train:step");
      const lr = learningRate(o.schedule, o.lr, state.step, o.maxSteps, warm);
      const b = stream.batch(state.epoch, state.batchIndex);
      const before = trainer.current?.key;
      const res = await trainer.train(b, { lr, seed: o.seed * 1_000_003 + state.microStep });
      if (!Number.isFinite(res.loss)) throw new TrainingArgsError(`loss is ${res.loss} at step ${state.step + 1}; lower --lr`);
      state.step++;
      advanceMicroBatch(state, b.tokens, stream.batchesPerEpoch);
      lastLoss = res.loss;
      const sel = trainer.current;
      const switched = sel?.key !== before;
      appendFileSync(
        metricsPath,
        `${JSON.stringify({
          step: state.step,
          loss: res.loss,
          lr,
          grad_norm: res.gradNorm,
          selection: sel?.key,
          ...(switched ? { switch_s: trainer.switchStats.lastSeconds } : {}),
        })}\n`,
      );
      if (switched)
        log(
          `step ${state.step}: training ${sel?.layers ? `layers ${sel.layers.join(", ")}` : sel?.key} (built in ${trainer.switchStats.lastSeconds.toFixed(2)} s)`,
        );
      if (o.saveSteps && state.step % o.saveSteps === 0 && state.step < o.maxSteps) checkpoint();
    }
    if (saved !== state.step) checkpoint();
    writeTrained(o.outputDir, trainer, config());
    // what `peftkit compare`'s worker reads (as from an adapter run's training_args.json)
    const result = {
      steps: state.step,
      wallSeconds: (Date.now() - started) / 1000,
      tokensSeen: state.tokensSeen,
      trainableParams: trainer.trainedParameters(),
      selections: trainer.switchStats.switches,
      selectionSeconds: trainer.switchStats.seconds,
    };
    writeFileAtomic(
      join(o.outputDir, "training_args.json"),
      `${JSON.stringify({ method: o.method, config: config(), result }, null, 2)}\n`,
    );
  } finally {
    await trainer.release();
  }
  log(
    `trained ${state.step} steps; final loss ${lastLoss.toFixed(4)}; ${trainer.switchStats.switches} selection(s) built in ${trainer.switchStats.seconds.toFixed(1)} s`,
  );
  return { steps: state.step, finalLoss: lastLoss, trainable: trainer.trainedParameters() };
}
