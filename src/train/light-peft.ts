/**
 * Light-PEFT (Gu et al. 2024; gccnlp/Light-PEFT NLU/estimate.py then train.py --draw_and_training)
 * as two ordinary runs of `runTraining`:
 *
 *   estimation  OUT/estimation/  --estimation-steps steps of LoRA + head/neuron masks (peft_type
 *                                LIGHT_PEFT, tuners/light_peft): the masks' final values and the
 *                                modules' importances are in its adapter folder;
 *   pruning                      heads (whole KV groups) and FFN neurons with the lowest masks, the
 *                                least important LoRA modules, then the least important ranks
 *                                (tuners/light_peft/plan.ts); the base is sliced (prune/heads-ffn.ts);
 *   phase 2     OUT/             the kept LoRA (peft_type LORA), from its phase-1 values, on the
 *                                pruned base, masks gone (the authors reset them to 1 and freeze
 *                                them), for the rest of --max-steps, with a fresh optimizer.
 *
 * OUT/pruned_backbone.json says which heads and neurons each layer kept; `peftkit eval`/`generate`
 * slice the base by it when loading OUT. With --save-pruned-model the pruned base is also written
 * as a model folder, OUT/pruned_model/. Each phase checkpoints into its own folder, so --resume
 * continues whichever was interrupted; a finished estimation is not rerun.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { HostTensor } from "../engine/ir/host.js";
import { keptQueryHeads, prunableShape, pruneModel } from "../prune/heads-ffn.js";
import { writePlan, writePrunedModel } from "../prune/heads-ffn-files.js";
import type { LightPeftConfig } from "../tuners/light_peft/config.js";
import { maskSites, recordedImportance } from "../tuners/light_peft/index.js";
import { adapterPlan, backbonePlan } from "../tuners/light_peft/plan.js";
import { phase2LoraConfig, phase2LoraTensors } from "../tuners/light_peft/prune-adapter.js";
import { PeftModel } from "../tuners/peft-model.js";
import { type RunOptions, type RunSummary, refuseEarlierRun, runTraining } from "./run.js";
import { TrainingArgsError } from "./schedule.js";

export const ESTIMATION_DIR = "estimation";
export const PRUNED_MODEL_DIR = "pruned_model";

export interface LightPeftOptions extends RunOptions {
  /** Optimizer steps of the estimation phase; phase 2 takes the rest of maxSteps. */
  estimationSteps: number;
  maxSteps: number;
  /** Also write the pruned base as a model folder (OUT/pruned_model). */
  savePrunedModel?: boolean;
}

/**
 * --estimation-steps when not given: a fifth of --max-steps, at least 2 where --max-steps allows
 * (a 1-step estimation scores every module 0: LoRA's B starts at 0).
 */
export function defaultEstimationSteps(maxSteps: number): number {
  return Math.max(1, Math.min(maxSteps - 1, Math.max(2, Math.floor(maxSteps / 5))));
}

export function checkEstimationSteps(estimationSteps: number, maxSteps: number): void {
  if (!(Number.isInteger(estimationSteps) && estimationSteps >= 1 && estimationSteps < maxSteps))
    throw new TrainingArgsError(
      `--estimation-steps ${estimationSteps} must be at least 1 and below --max-steps ${maxSteps} (light_peft: phase 2 takes the rest)`,
    );
}

const count = (n: number) => n.toLocaleString("en-US");

export async function runLightPeft(o: LightPeftOptions): Promise<RunSummary> {
  const out = o.out ?? process.stdout;
  checkEstimationSteps(o.estimationSteps, o.maxSteps);
  refuseEarlierRun(o.outputDir, Boolean(o.resume), { dir: ESTIMATION_DIR, method: "light_peft" });
  const estDir = join(o.outputDir, ESTIMATION_DIR);
  const original = prunableShape(o.model, "light_peft");

  if (existsSync(join(estDir, "adapter_config.json"))) out.write(`light_peft: the estimation in ${estDir} is finished; pruning from it\n`);
  else {
    out.write(
      `light_peft estimation: LoRA + ${original.layers}×(${original.heads} head + ${count(original.intermediate)} neuron) masks, ${o.estimationSteps} steps\n`,
    );
    let peft1: PeftModel | null = null;
    const s1 = await runTraining({
      ...o,
      outputDir: estDir,
      maxSteps: o.estimationSteps,
      maxSeconds: o.maxSeconds === undefined ? undefined : (o.maxSeconds * o.estimationSteps) / o.maxSteps,
      epochs: undefined,
      record: { ...o.record, light_peft_phase: "estimation" },
      prepareAdapter: (p) => {
        peft1 = p;
      },
    });
    (peft1 as PeftModel | null)?.unload();
    if (s1.stoppedBy === "interrupted") return s1;
    if (s1.stoppedBy === "non_finite_loss")
      throw new TrainingArgsError("light_peft estimation stopped on a non-finite loss; nothing to prune from");
  }

  // The pruning decisions, from the estimation folder.
  const est = PeftModel.fromPretrained(o.model, estDir);
  const a = est.adapter("default");
  const c = a.config as LightPeftConfig;
  const info = est.info;
  const tensors = new Map<string, HostTensor>(a.tensors);
  const sites = maskSites(info);
  const masks = (kind: "head" | "neuron") => sites.filter((s) => s.kind === kind).map((s) => tensors.get(s.key)?.data as Float32Array);
  const backbone = backbonePlan(original, masks("head"), masks("neuron"), c.attnPruningRatio, c.ffnPruningRatio);
  const imp = recordedImportance(info, c, tensors);
  const plan = adapterPlan(imp.modules, imp.ranks, c.modulePruningRatio, c.rankPruningRatio);
  if (plan.ranks.size === 0)
    throw new TrainingArgsError(
      `light_peft: every LoRA module is pruned (the recorded importances tie; a 1-step estimation scores all 0, since LoRA's B starts at 0): raise --estimation-steps or lower --module-pruning-ratio ${c.modulePruningRatio} / --rank-pruning-ratio ${c.rankPruningRatio}`,
    );
  const phase2Config = phase2LoraConfig(info, c, plan);
  const phase2Tensors = phase2LoraTensors(info, c, tensors, backbone, plan);
  est.unload();

  const kv = backbone.layers[0].kvHeads.length;
  const heads = keptQueryHeads(original, backbone.layers[0].kvHeads).length;
  const neurons = backbone.layers[0].neurons.length;
  const ranksKept = [...plan.ranks.values()].reduce((n, r) => n + r.length, 0);
  const summary = {
    light_peft_heads: `${heads}/${original.heads}`,
    light_peft_kv_heads: `${kv}/${original.kvHeads}`,
    light_peft_neurons: `${neurons}/${original.intermediate}`,
    light_peft_modules: `${plan.ranks.size}/${imp.modules.size}`,
    light_peft_ranks: `${ranksKept}/${[...imp.ranks.values()].reduce((n, r) => n + r.length, 0)}`,
  };
  out.write(
    `light_peft: pruned to ${heads}/${original.heads} heads (${kv}/${original.kvHeads} KV groups) and ${count(neurons)}/${count(original.intermediate)} FFN neurons per layer; LoRA keeps ${plan.ranks.size}/${imp.modules.size} modules, ${ranksKept} ranks\n`,
  );
  const pruned = pruneModel(o.model, backbone);
  // Before phase 2 trains: a finished OUT (adapter_config.json) always has its plan beside it.
  writePlan(o.outputDir, backbone, {
    method: "light_peft",
    ratios: { attn: c.attnPruningRatio, ffn: c.ffnPruningRatio, module: c.modulePruningRatio, rank: c.rankPruningRatio },
  });
  let peft2: PeftModel | null = null;
  try {
    const s2 = await runTraining({
      ...o,
      model: pruned,
      peftConfig: phase2Config,
      maxSteps: o.maxSteps - o.estimationSteps,
      maxSeconds: o.maxSeconds === undefined ? undefined : (o.maxSeconds * (o.maxSteps - o.estimationSteps)) / o.maxSteps,
      epochs: undefined,
      record: { ...o.record, light_peft_phase: 2, ...summary },
      prepareAdapter: (p) => {
        peft2 = p;
        // From the phase-1 values; a classifier head (modules_to_save) carries over as trained.
        const t = new Map(p.adapter("default").tensors);
        for (const k of t.keys()) {
          const from = phase2Tensors.get(k) ?? tensors.get(k);
          if (from && from.shape.join() === t.get(k)?.shape.join()) t.set(k, from);
        }
        p.setAdapterTensors("default", t);
      },
    });
    if (s2.stoppedBy !== "interrupted") {
      s2.files.push("pruned_backbone.json", `${ESTIMATION_DIR}/`);
      if (o.savePrunedModel) {
        writePrunedModel(pruned, backbone, join(o.outputDir, PRUNED_MODEL_DIR), o.model.dir);
        s2.files.push(`${PRUNED_MODEL_DIR}/`);
        out.write(`light_peft: the pruned base model is in ${join(o.outputDir, PRUNED_MODEL_DIR)}\n`);
      }
    }
    return s2;
  } finally {
    (peft2 as PeftModel | null)?.unload();
    await pruned.release();
  }
}
