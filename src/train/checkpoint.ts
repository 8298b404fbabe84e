/**
 * Training checkpoints: checkpoint-<step>/ with the adapter (HF PEFT format), the optimizer state
 * (optimizer.safetensors) and trainer_state.json (step, data position, seeds, history).
 *
 * Guarantees, for a crash at any instant (SIGKILL, power loss): every file is written
 * fsync-then-rename and trainer_state.json goes in last, the folder is built under
 * checkpoint-<step>.tmp-<pid>, fsynced and renamed into place, so a folder named
 * checkpoint-<step> is always complete. Replacing a checkpoint of the same step keeps the old one
 * (checkpoint-<step>.old-<pid>) until the new one is in; pruning renames a folder to a temporary
 * name before deleting it. `recoverCheckpoints` tidies what a crash leaves.
 */
import { existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import type { HostTensor } from "../engine/ir/host.js";
import { cleanStaleTemps, oldDirTarget, removeDir, replaceDir, writeFileAtomic } from "../io/atomic-write.js";
import { faultPoint } from "../io/fault.js";
import { readJsonFile } from "../io/hf-folder.js";
import { readSafetensors, writeSafetensors } from "../io/safetensors.js";
import type { ControllerState } from "../tuners/controller.js";
import { configFlag } from "./methods.js";
import { TrainingArgsError } from "./schedule.js";

export interface TrainerState {
  /** Optimizer steps done. */
  step: number;
  /** Position of the next micro-batch. */
  epoch: number;
  batchIndex: number;
  /** Micro-batches done (drives per-micro-batch seeds). */
  microStep: number;
  seed: number;
  bestEval: number | null;
  evalsWithoutImprovement: number;
  tokensSeen: number;
}

/** The state of a run that has not taken a step. */
export function freshTrainerState(seed: number): TrainerState {
  return { step: 0, epoch: 0, batchIndex: 0, microStep: 0, seed, bestEval: null, evalsWithoutImprovement: 0, tokensSeen: 0 };
}

/** Moves `state` past one micro-batch of `tokens` tokens, into the next epoch after the last batch. */
export function advanceMicroBatch(state: TrainerState, tokens: number, batchesPerEpoch: number): void {
  state.microStep++;
  state.tokensSeen += tokens;
  state.batchIndex++;
  if (state.batchIndex >= batchesPerEpoch) {
    state.batchIndex = 0;
    state.epoch++;
  }
}

/** A checkpoint that cannot continue this run (made with other settings). */
export class CheckpointMismatchError extends TrainingArgsError {}

export const CHECKPOINT_PREFIX = "checkpoint-";
const STATE_FILE = "trainer_state.json";
const OPTIMIZER_FILE = "optimizer.safetensors";
/** A method controller's state (AdaLoRA's importance averages), when the method has one. */
const CONTROLLER_FILE = "controller.safetensors";
/**
 * The adapter's tensors as they train, when the saved adapter holds another form of them
 * (AdaLoRA saves ranks pruned to its rank_pattern, prefix tuning the projected prefix).
 */
const TRAINING_TENSORS_FILE = "adapter_state.safetensors";
const CHECKPOINT_RE = /^checkpoint-(\d+)$/;

function complete(dir: string): boolean {
  return existsSync(join(dir, STATE_FILE)) && existsSync(join(dir, OPTIMIZER_FILE));
}

/**
 * Complete checkpoints, oldest first. A checkpoint-<step>.old-<pid> folder counts when its
 * replacement never arrived (a crash between the two renames of a replacement).
 */
export function checkpointDirs(outputDir: string): { step: number; dir: string }[] {
  if (!existsSync(outputDir)) return [];
  const names = readdirSync(outputDir);
  const byStep = new Map<number, string>();
  for (const n of names) {
    const m = CHECKPOINT_RE.exec(n);
    if (m && complete(join(outputDir, n))) byStep.set(Number(m[1]), join(outputDir, n));
  }
  for (const n of names) {
    const m = CHECKPOINT_RE.exec(oldDirTarget(n) ?? "");
    if (m && !byStep.has(Number(m[1])) && complete(join(outputDir, n))) byStep.set(Number(m[1]), join(outputDir, n));
  }
  return [...byStep].map(([step, dir]) => ({ step, dir })).sort((a, b) => a.step - b.step);
}

export function latestCheckpoint(outputDir: string): string | null {
  const all = checkpointDirs(outputDir);
  return all.length ? all[all.length - 1].dir : null;
}

/**
 * After a crash: deletes half-written checkpoint and file temporaries in the output folder and
 * puts back a checkpoint whose replacement was cut short. Returns one line per action.
 */
export function recoverCheckpoints(outputDir: string): string[] {
  return cleanStaleTemps(outputDir);
}

/**
 * Writes a checkpoint atomically. `writeAdapter(dir)` saves the adapter into the folder; the
 * optimizer tensors and state are written beside it.
 */
/** What a checkpoint holds beyond the adapter folder and the optimizer state. */
export interface TrainingExtras {
  controller?: ControllerState | null;
  /** The adapter's tensors as trained, when the saved adapter differs from them. */
  trainingTensors?: ReadonlyMap<string, HostTensor> | null;
}

export function saveCheckpoint(
  outputDir: string,
  state: TrainerState,
  optimizer: Record<string, HostTensor>,
  writeAdapter: (dir: string) => void,
  keep?: number,
  extras: TrainingExtras = {},
): string {
  const final = join(outputDir, `${CHECKPOINT_PREFIX}${state.step}`);
  const tmp = `${final}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  writeAdapter(tmp);
  faultPoint("checkpoint:adapter");
  if (extras.controller) {
    writeSafetensors(join(tmp, CONTROLLER_FILE), Object.fromEntries(extras.controller.tensors), {
      format: "peftkit-controller",
      state: JSON.stringify(extras.controller.json ?? null),
    });
  }
  if (extras.trainingTensors)
    writeSafetensors(join(tmp, TRAINING_TENSORS_FILE), Object.fromEntries(extras.trainingTensors), { format: "peftkit-adapter-state" });
  writeSafetensors(join(tmp, OPTIMIZER_FILE), optimizer, { format: "peftkit-optimizer" });
  faultPoint("checkpoint:optimizer");
  // The state goes in last: its presence marks a complete folder.
  writeFileAtomic(join(tmp, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
  faultPoint("checkpoint:state");
  replaceDir(tmp, final);
  faultPoint("checkpoint:saved");
  if (keep !== undefined && keep > 0) {
    const all = checkpointDirs(outputDir).filter((c) => c.dir !== final);
    for (const c of all.slice(0, Math.max(0, all.length + 1 - keep))) removeDir(c.dir);
  }
  return final;
}

export function loadCheckpoint(dir: string): { state: TrainerState; optimizer: Record<string, HostTensor> } & TrainingExtras {
  const state = readJsonFile(join(dir, STATE_FILE), "trainer state") as TrainerState;
  const optimizer = readSafetensors(join(dir, OPTIMIZER_FILE)).tensors;
  let controller: ControllerState | null = null;
  const cpath = join(dir, CONTROLLER_FILE);
  if (existsSync(cpath)) {
    const f = readSafetensors(cpath);
    let json: unknown;
    try {
      json = JSON.parse(f.metadata.state ?? "null");
    } catch {
      throw new CheckpointMismatchError(`${cpath}: the controller state (metadata "state") is not valid JSON`);
    }
    controller = { tensors: new Map(Object.entries(f.tensors)), json };
  }
  const tpath = join(dir, TRAINING_TENSORS_FILE);
  const trainingTensors = existsSync(tpath) ? new Map(Object.entries(readSafetensors(tpath).tensors)) : null;
  return { state, optimizer, controller, trainingTensors };
}

const FIRST = ["peft_type", "r", "lora_alpha", "num_virtual_tokens", "bottleneck_size", "target_modules"];

/** Fields that say where a config came from rather than what it trains. */
const PROVENANCE = new Set(["base_model_name_or_path", "revision", "inference_mode", "peft_version"]);

/**
 * Throws when the checkpoint's adapter_config.json (in `adapterDir`) differs from the config of
 * the run about to continue it, naming each field and the flag that restores it.
 */
export function checkCheckpointConfig(
  checkpoint: string,
  adapterDir: string,
  currentConfig: Readonly<Record<string, unknown>>,
  /** Fields a method's controller rewrites during training (AdaLoRA's rank_pattern). */
  controlled: readonly string[] = [],
): void {
  const saved = readJsonFile(join(adapterDir, "adapter_config.json"), "adapter config") as Record<string, unknown>;
  const current = { ...currentConfig };
  for (const k of controlled) {
    delete saved[k];
    delete current[k];
  }
  const same = (a: unknown, b: unknown) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
  const fields =
    saved.peft_type !== current.peft_type
      ? ["peft_type"]
      : [...new Set([...Object.keys(saved), ...Object.keys(current)])].filter((k) => !PROVENANCE.has(k) && !same(saved[k], current[k]));
  if (!fields.length) return;
  // The size-defining fields first: "r=8" says more than the alpha that follows from it.
  const rank = (k: string) => (FIRST.indexOf(k) + FIRST.length + 1) % (FIRST.length + 1);
  fields.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const show = (v: unknown) => JSON.stringify(v ?? null);
  const diffs = fields.map((k) => `${k}=${show(saved[k])} (this run: ${show(current[k])})`);
  const flags = [...new Set(fields.map((k) => configFlag(k, saved[k], String(saved.peft_type))).filter((f): f is string => f !== null))];
  throw new CheckpointMismatchError(
    `${checkpoint} was made with ${diffs.join(", ")}; resume with ${flags.length ? flags.join(" ") : "the settings it was made with"}, or use another --output-dir`,
  );
}

/** Throws when the checkpoint was made with another seed (data order and dropout would differ). */
export function checkCheckpointSeed(checkpoint: string, state: TrainerState, seed: number): void {
  if (state.seed !== seed)
    throw new CheckpointMismatchError(
      `${checkpoint} was made with seed=${state.seed} (this run: ${seed}); resume with --seed ${state.seed}, or use another --output-dir`,
    );
}
