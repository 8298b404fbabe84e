/**
 * DSEE with its sparse final model (VITA-Group/DSEE run_glue.py, then run_glue_prune_with_WAB.py
 * on its checkpoint) as two ordinary runs of `runTraining`:
 *
 *   phase 1  OUT/phase1/  DSEE (LoRA + S) on the pretrained base, --dsee-prune-at steps;
 *   prune                the base's other linear weights by |W| and the adapted ones by |ΔW|
 *                        (tuners/dsee/prune.ts): a sparse delta, −W at the pruned positions,
 *                        written to OUT/dsee_pruned_base.safetensors before phase 2 trains;
 *   phase 2  OUT/         LoRA + S from their phase-1 values, re-tuned on the pruned base (fixed),
 *                        for the rest of --max-steps, with a fresh optimizer and schedule (the
 *                        authors' second script).
 *
 * OUT's adapter_config.json names the delta (base_delta) and the ratios: `peftkit eval`/`generate`
 * apply it to the base when loading OUT (cli/load.ts), and `peftkit delta apply` of it to the base
 * plus the adapter give the trained model. Each phase checkpoints into its own folder, so --resume
 * continues whichever was interrupted, exactly; a finished phase 1 is not rerun, and the pruning is
 * recomputed from it (deterministic).
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { HostTensor } from "../engine/ir/host.js";
import { PreTrainedModel } from "../models/pretrained.js";
import { mergeDeltaSet } from "../sparse/compose.js";
import { saveSparseDeltas } from "../sparse/file.js";
import type { DseeConfig } from "../tuners/dsee/config.js";
import { dseePruning } from "../tuners/dsee/prune.js";
import { PeftModel } from "../tuners/peft-model.js";
import { type RunOptions, type RunSummary, refuseEarlierRun, runTraining } from "./run.js";
import { TrainingArgsError } from "./schedule.js";

export const DSEE_PHASE1_DIR = "phase1";
export const DSEE_DELTA_FILE = "dsee_pruned_base.safetensors";

export interface DseePruneOptions extends RunOptions {
  /** Optimizer steps before the pruning; phase 2 takes the rest of maxSteps. */
  pruneAt: number;
  maxSteps: number;
  /** Shares pruned: of the other linear weights by |W|, of the adapted ones by |ΔW|. */
  pruningRatio: number;
  adPruningRatio: number;
}

/** --dsee-prune-at when not given: half of --max-steps (as lt_sft's --full-steps). */
export const defaultPruneAt = (maxSteps: number): number => Math.max(1, Math.floor(maxSteps / 2));

export function checkPruneAt(pruneAt: number, maxSteps: number): void {
  if (!(Number.isInteger(pruneAt) && pruneAt >= 1 && pruneAt < maxSteps))
    throw new TrainingArgsError(
      `--dsee-prune-at ${pruneAt} must be at least 1 and below --max-steps ${maxSteps} (dsee: phase 2 takes the rest)`,
    );
}

/** The same model with some weights replaced (the caller's model is left as it is). */
export function withWeights(model: PreTrainedModel, edits: ReadonlyMap<string, HostTensor>): PreTrainedModel {
  const weights = new Map(model.weights);
  for (const [name, w] of edits) weights.set(name, w);
  return new PreTrainedModel(
    model.config,
    model.arch,
    model.archConfig,
    model.head,
    weights,
    model.dir,
    model.newlyInitialized,
    model.compileOptions,
  );
}

export async function runDseePrune(o: DseePruneOptions): Promise<RunSummary> {
  const out = o.out ?? process.stdout;
  checkPruneAt(o.pruneAt, o.maxSteps);
  refuseEarlierRun(o.outputDir, Boolean(o.resume), { dir: DSEE_PHASE1_DIR, method: "dsee" });
  const phase1Dir = join(o.outputDir, DSEE_PHASE1_DIR);
  const share = (steps: number) => (o.maxSeconds === undefined ? undefined : (o.maxSeconds * steps) / o.maxSteps);

  if (existsSync(join(phase1Dir, "adapter_config.json"))) out.write(`dsee phase 1 already finished in ${phase1Dir}; pruning from it\n`);
  else {
    out.write(`dsee phase 1: LoRA + S on the pretrained base, ${o.pruneAt} steps\n`);
    let peft1: PeftModel | null = null;
    const s1 = await runTraining({
      ...o,
      outputDir: phase1Dir,
      maxSteps: o.pruneAt,
      maxSeconds: share(o.pruneAt),
      epochs: undefined,
      record: { ...o.record, dsee_phase: 1 },
      prepareAdapter: (p) => {
        peft1 = p;
      },
    });
    (peft1 as PeftModel | null)?.unload();
    if (s1.stoppedBy === "interrupted") return s1;
    if (s1.stoppedBy === "non_finite_loss") throw new TrainingArgsError("dsee phase 1 stopped on a non-finite loss; nothing to prune from");
  }

  // The pruning, from phase 1's adapter and the pretrained base.
  const phase1 = PeftModel.fromPretrained(o.model, phase1Dir);
  const a = phase1.adapter("default");
  const trained = new Map(a.tensors);
  const pruning = dseePruning(phase1.info, a.config as DseeConfig, trained, { pruning: o.pruningRatio, adPruning: o.adPruningRatio });
  phase1.unload();
  const pct = (p: { pruned: number; total: number }) => `${p.pruned.toLocaleString("en-US")}/${p.total.toLocaleString("en-US")}`;
  out.write(
    `dsee: pruned ${pct(pruning.other)} entries of the other linear weights by |W| (ratio ${o.pruningRatio}) and ${pct(pruning.adapted)} of the adapted ones by |ΔW| (ratio ${o.adPruningRatio})\n`,
  );
  // Before phase 2 trains: a finished OUT always has its delta beside it.
  saveSparseDeltas(join(o.outputDir, DSEE_DELTA_FILE), pruning.delta);
  const pruned = withWeights(o.model, mergeDeltaSet(o.model.weights, { set: pruning.delta, file: DSEE_DELTA_FILE }));
  const phase2Config = {
    ...o.peftConfig,
    pruning_ratio: o.pruningRatio,
    ad_pruning_ratio: o.adPruningRatio,
    base_delta: DSEE_DELTA_FILE,
  };
  let peft2: PeftModel | null = null;
  try {
    const s2 = await runTraining({
      ...o,
      model: pruned,
      peftConfig: phase2Config,
      maxSteps: o.maxSteps - o.pruneAt,
      maxSeconds: share(o.maxSteps - o.pruneAt),
      epochs: undefined,
      record: {
        ...o.record,
        dsee_phase: 2,
        dsee_pruned: pruning.other.pruned,
        dsee_ad_pruned: pruning.adapted.pruned,
      },
      prepareAdapter: (p) => {
        peft2 = p;
        // From phase 1's values, its support of S included (a new "omp" pick on the pruned base could differ).
        const t = new Map(p.adapter("default").tensors);
        for (const k of t.keys()) {
          const from = trained.get(k);
          if (from && from.shape.join() === t.get(k)?.shape.join()) t.set(k, from);
        }
        p.setAdapterTensors("default", t);
      },
    });
    if (s2.stoppedBy !== "interrupted") s2.files.push(DSEE_DELTA_FILE, `${DSEE_PHASE1_DIR}/`);
    return s2;
  } finally {
    (peft2 as PeftModel | null)?.unload();
    await pruned.release();
  }
}
