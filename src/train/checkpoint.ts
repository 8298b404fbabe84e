/**
 * Training checkpoints: checkpoint-<step>/ with the adapter (HF PEFT format), the optimizer state
 * (optimizer.safetensors) and trainer_state.json (step, data position, seeds, history). Written
 * into a temporary folder and renamed into place, so a folder named checkpoint-<step> is always
 * complete; a crash mid-write leaves only a .tmp folder that resume ignores.
 */
import { existsSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { HostTensor } from "../engine/ir/host.js";
import { readJsonFile } from "../io/hf-folder.js";
import { readSafetensors, writeSafetensors } from "../io/safetensors.js";

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

export const CHECKPOINT_PREFIX = "checkpoint-";
const STATE_FILE = "trainer_state.json";
const OPTIMIZER_FILE = "optimizer.safetensors";

export function checkpointDirs(outputDir: string): { step: number; dir: string }[] {
  if (!existsSync(outputDir)) return [];
  return readdirSync(outputDir)
    .filter((n) => /^checkpoint-\d+$/.test(n) && existsSync(join(outputDir, n, STATE_FILE)))
    .map((n) => ({ step: Number(n.slice(CHECKPOINT_PREFIX.length)), dir: join(outputDir, n) }))
    .sort((a, b) => a.step - b.step);
}

export function latestCheckpoint(outputDir: string): string | null {
  const all = checkpointDirs(outputDir);
  return all.length ? all[all.length - 1].dir : null;
}

/**
 * Writes a checkpoint atomically. `writeAdapter(dir)` saves the adapter into the folder; the
 * optimizer tensors and state are written beside it.
 */
export function saveCheckpoint(
  outputDir: string,
  state: TrainerState,
  optimizer: Record<string, HostTensor>,
  writeAdapter: (dir: string) => void,
  keep?: number,
): string {
  const final = join(outputDir, `${CHECKPOINT_PREFIX}${state.step}`);
  const tmp = `${final}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  writeAdapter(tmp);
  writeSafetensors(join(tmp, OPTIMIZER_FILE), optimizer, { format: "peftkit-optimizer" });
  writeFileSync(join(tmp, STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
  rmSync(final, { recursive: true, force: true });
  renameSync(tmp, final);
  if (keep !== undefined && keep > 0) {
    const all = checkpointDirs(outputDir);
    for (const c of all.slice(0, Math.max(0, all.length - keep))) rmSync(c.dir, { recursive: true, force: true });
  }
  return final;
}

export function loadCheckpoint(dir: string): { state: TrainerState; optimizer: Record<string, HostTensor> } {
  const state = readJsonFile(join(dir, STATE_FILE), "trainer state") as TrainerState;
  const optimizer = readSafetensors(join(dir, OPTIMIZER_FILE)).tensors;
  return { state, optimizer };
}
