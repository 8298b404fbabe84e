/**
 * LT-SFT (Ansell et al. 2022, "Composable Sparse Fine-Tuning for Cross-Lingual Transfer";
 * cambridgeltl/composable-sft src/sft/lt_sft.py, `LotteryTicketSparseFineTuner.train`) as two
 * ordinary runs of `runTraining`:
 *
 *   phase 1  OUT/phase1/  every entry of the targeted weights trains: an SFT adapter whose index
 *                         sets are the whole weights, so its values are exactly θ₁ − θ₀;
 *   select               the K entries with the largest |θ₁ − θ₀| over all targeted weights
 *                         (lt-sft-select.ts), back at θ₀ (the values start at 0 again);
 *   phase 2  OUT/         only those K entries train: an SFT adapter with fixed index sets
 *                         (reselection_steps 0, num_deltas), with a fresh optimizer and schedule,
 *                         as the authors' second `Trainer.train` call.
 *
 * OUT then holds the SFT adapter folder (PeftModel.fromPretrained loads it) and the same delta
 * as OUT/sparse_delta.safetensors (docs/formats/sparse-delta.md). Each phase checkpoints into
 * its own folder, so --resume continues whichever phase was interrupted, exactly; a finished
 * phase 1 (OUT/phase1/adapter_config.json) is not rerun, and the selection is recomputed from it.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { hostTensor } from "../engine/ir/host.js";
import { sftDeltaSet } from "../sparse/export.js";
import { saveSparseDeltas } from "../sparse/file.js";
import { modelInfo } from "../tuners/model-info.js";
import { PeftModel, parsePeftConfig } from "../tuners/peft-model.js";
import type { SftConfig } from "../tuners/sft/config.js";
import { sftKeys } from "../tuners/sft/layers.js";
import { targetedLinears } from "../tuners/targets.js";
import { selectLargestChanges } from "./lt-sft-select.js";
import { type RunOptions, type RunSummary, refuseEarlierRun, runTraining } from "./run.js";
import { TrainingArgsError } from "./schedule.js";

export const PHASE1_DIR = "phase1";
export const DELTA_FILE = "sparse_delta.safetensors";

export interface LtSftOptions extends RunOptions {
  /** Optimizer steps of phase 1 (full fine-tuning of the targeted weights); phase 2 takes the rest of maxSteps. */
  fullSteps: number;
  maxSteps: number;
  /** K as a share of the targeted weights' entries (ft_params_proportion), unless numEntries is given. */
  density: number;
  /** K itself (ft_params_num). */
  numEntries?: number;
}

/** The targeted layers (adapter key → entries) of an SFT-shaped config. */
function targetSizes(peftConfig: Readonly<Record<string, unknown>>, o: LtSftOptions): Map<string, number> {
  const cfg = parsePeftConfig(peftConfig, "lt_sft config").config as SftConfig;
  return new Map(targetedLinears(modelInfo(o.model), cfg, "lt_sft", null).map((l) => [l.key, l.inFeatures * l.outFeatures]));
}

/** Entries to keep: --num-tunable-weights, else ⌊density · targeted entries⌋ (the authors' int(p · n)), at least 1. */
export function ltSftCount(density: number, numEntries: number | undefined, targeted: number): number {
  const k = numEntries ?? Math.max(1, Math.floor(density * targeted));
  if (k > targeted)
    throw new TrainingArgsError(`--num-tunable-weights ${k} exceeds the ${targeted} entries of the targeted weights (lt_sft)`);
  return k;
}

export async function runLtSft(o: LtSftOptions): Promise<RunSummary> {
  const out = o.out ?? process.stdout;
  if (!(o.fullSteps >= 1 && o.fullSteps < o.maxSteps))
    throw new TrainingArgsError(
      `--full-steps ${o.fullSteps} must be at least 1 and below --max-steps ${o.maxSteps} (lt_sft: phase 2 takes the rest)`,
    );
  refuseEarlierRun(o.outputDir, Boolean(o.resume), { dir: PHASE1_DIR, method: "lt_sft" });
  const phase1Dir = join(o.outputDir, PHASE1_DIR);
  const base: Record<string, unknown> = { ...o.peftConfig, reselection_steps: 0, num_tunable_weights: null };
  const sizes = targetSizes(base, o);
  const targeted = [...sizes.values()].reduce((a, b) => a + b, 0);
  const k = ltSftCount(o.density, o.numEntries, targeted);

  // Phase 1: every entry of the targeted weights trains (as an SFT delta over all of them).
  const phase1Config = { ...base, num_deltas: Object.fromEntries(sizes) };
  const phase1Done = existsSync(join(phase1Dir, "adapter_config.json"));
  if (phase1Done) out.write(`lt_sft phase 1 already finished in ${phase1Dir}; selecting from it\n`);
  else {
    out.write(
      `lt_sft phase 1: full fine-tuning of ${targeted.toLocaleString("en-US")} entries in ${sizes.size} weights, ${o.fullSteps} steps\n`,
    );
    let peft1: PeftModel | null = null;
    const s1 = await runTraining({
      ...o,
      outputDir: phase1Dir,
      peftConfig: phase1Config,
      maxSteps: o.fullSteps,
      // A time budget is shared between the phases in proportion to their steps.
      maxSeconds: o.maxSeconds === undefined ? undefined : (o.maxSeconds * o.fullSteps) / o.maxSteps,
      epochs: undefined,
      record: { ...o.record, lt_sft_phase: 1 },
      prepareAdapter: (p) => {
        peft1 = p;
      },
    });
    (peft1 as PeftModel | null)?.unload();
    if (s1.stoppedBy === "interrupted") return s1;
    if (s1.stoppedBy === "non_finite_loss")
      throw new TrainingArgsError(`lt_sft phase 1 stopped on a non-finite loss; nothing to select from`);
  }

  // The selection: the K largest |θ₁ − θ₀| over all targeted weights (phase 1's values).
  const phase1 = PeftModel.fromPretrained(o.model, phase1Dir);
  const changes = [...sizes.keys()].map((key) => {
    const t = phase1.adapter("default").tensors;
    const keys = sftKeys({ key });
    const idx = t.get(keys.indices)?.data as Int32Array;
    const val = t.get(keys.values)?.data as Float32Array;
    const change = new Float32Array(sizes.get(key) as number);
    for (let i = 0; i < idx.length; i++) change[idx[i]] = val[i];
    return { key, change };
  });
  phase1.unload();
  const chosen = selectLargestChanges(changes, k);
  out.write(
    `lt_sft: kept the ${k.toLocaleString("en-US")} entries that changed most (${((100 * k) / targeted).toFixed(3)}% of the targeted weights) in ${chosen.size} weights\n`,
  );

  // Phase 2: back at θ₀, only the chosen entries train.
  const phase2Config = { ...base, num_deltas: Object.fromEntries([...chosen].map(([key, p]) => [key, p.length])) };
  let peft2: PeftModel | null = null;
  const s2 = await runTraining({
    ...o,
    peftConfig: phase2Config,
    maxSteps: o.maxSteps - o.fullSteps,
    maxSeconds: o.maxSeconds === undefined ? undefined : (o.maxSeconds * (o.maxSteps - o.fullSteps)) / o.maxSteps,
    epochs: undefined,
    record: { ...o.record, lt_sft_phase: 2, lt_sft_entries: k },
    prepareAdapter: (p) => {
      peft2 = p;
      const tensors = p.adapter("default").tensors;
      for (const [key, positions] of chosen) tensors.set(sftKeys({ key }).indices, hostTensor("i32", [positions.length], positions));
    },
  });
  const trained = peft2 as PeftModel | null;
  if (s2.stoppedBy !== "interrupted" && trained) {
    const set = sftDeltaSet(trained.info, trained.adapter("default").tensors, o.outputDir);
    saveSparseDeltas(join(o.outputDir, DELTA_FILE), set);
    s2.files.push(DELTA_FILE, `${PHASE1_DIR}/`);
    out.write(`lt_sft: the delta is also in ${join(o.outputDir, DELTA_FILE)} (base model ${set.baseModel})\n`);
  }
  trained?.unload();
  return s2;
}
