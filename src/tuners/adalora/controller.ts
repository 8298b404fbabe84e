/**
 * AdaLoRA's rank allocator as a Controller: PEFT 0.20's AdaLoraModel.update_and_allocate
 * (tuners/adalora/model.py) with RankAllocator (layer.py), called after every optimizer update.
 *
 * Step numbering: PEFT's examples (examples/conditional_generation/peft_adalora_seq2seq.py,
 * examples/int8_training/peft_adalora_whisper_large_training.py) call
 * update_and_allocate(global_step) after optimizer.step() with global_step counting the updates
 * done before this one (0 after the first update); ControllerStep.step counts this one, so PEFT's
 * step is `step − 1`.
 *
 * With g = step − 1, T = total_step, tf = tfinal:
 * - g < T − tf: update the importance EMAs from |p·∇p| (p after the update, ∇p the update's
 *   gradient, as PEFT reads them); on a masking step of the budget schedule, zero the singular
 *   values E of the lowest-scored triplets so `budget` remain, and record rank_pattern;
 * - g = T − tf: mask to target_bgt with the current scores, record the final rank_pattern, reset
 *   the EMAs;
 * - g > T − tf: zero E outside the final rank_pattern after every update.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { PeftConfigError } from "../config.js";
import type { Controller, ControllerAction, ControllerRun, ControllerState, ControllerStep } from "../controller.js";
import type { ModelInfo } from "../tuner.js";
import {
  type BudgetSchedule,
  budgetSchedule,
  type Importance,
  keepMasks,
  maskValues,
  tripletScores,
  updateImportance,
  zeroImportance,
} from "./allocator.js";
import { type AdaLoraConfig, checkSchedule } from "./config.js";
import { type AdaLoraKeys, adaLoraKeys, adaLoraLayers } from "./layers.js";

interface Layer {
  key: string;
  keys: AdaLoraKeys;
  /** Sizes of A [r, in], E [r, 1], B [out, r]. */
  sizes: Record<"a" | "e" | "b", number>;
}

/** What the controller keeps in checkpoints besides tensors. */
interface StateJson {
  totalStep: number;
  budget: number;
  rankPattern: Record<string, boolean[]> | null;
}

export class AdaLoraController implements Controller<AdaLoraConfig> {
  readonly gradientKeys: readonly string[];
  readonly configFields = ["rank_pattern", "total_step"] as const;
  private readonly layers: Layer[];
  private readonly schedule: BudgetSchedule;
  private readonly ema = new Map<string, Importance>();
  private config: AdaLoraConfig;
  private budget: number;
  /** Whether the config still lacks total_step (filled from the run on the first update). */
  private fillTotal: boolean;

  constructor(info: ModelInfo, c: AdaLoraConfig, run: ControllerRun) {
    const totalStep = c.totalStep ?? run.totalSteps ?? 0;
    if (!(Number.isInteger(totalStep) && totalStep > 0))
      throw new PeftConfigError(
        `ADALORA config: field "total_step" is missing and the trainer was not told the run's planned steps (PeftTrainer.create's totalSteps)`,
      );
    checkSchedule(c, totalStep, "ADALORA config");
    this.layers = adaLoraLayers(info, c).map((l) => ({
      key: l.key,
      keys: adaLoraKeys(l.key),
      sizes: { a: c.initR * l.inFeatures, e: c.initR, b: l.outFeatures * c.initR },
    }));
    this.gradientKeys = this.layers.flatMap((l) => [l.keys.a, l.keys.e, l.keys.b]);
    this.schedule = {
      tinit: c.tinit,
      tfinal: c.tfinal,
      totalStep,
      deltaT: c.deltaT,
      initBgt: c.initR * this.layers.length,
      targetBgt: c.targetR * this.layers.length,
    };
    this.fillTotal = c.totalStep === null;
    this.config = { ...c, totalStep };
    this.budget = this.schedule.initBgt;
    this.resetImportance();
  }

  private resetImportance(): void {
    for (const l of this.layers) for (const part of ["a", "e", "b"] as const) this.ema.set(l.keys[part], zeroImportance(l.sizes[part]));
  }

  afterStep(s: ControllerStep): ControllerAction<AdaLoraConfig> | null {
    const g = s.step - 1;
    const { totalStep, tfinal } = this.schedule;
    const final = totalStep - tfinal;
    let pattern = this.config.rankPattern;
    let newE: Map<string, HostTensor> | null = null;
    if (g < final) {
      for (const key of this.gradientKeys) {
        const p = s.tensors.get(key);
        const grad = s.gradients.get(key);
        if (!p || !grad) throw new PeftConfigError(`ADALORA controller: step ${s.step} has no tensor or gradient "${key}"`);
        updateImportance(
          p.data as Float32Array,
          grad.data as Float32Array,
          this.ema.get(key) as Importance,
          this.config.beta1,
          this.config.beta2,
        );
      }
      const { budget, mask } = budgetSchedule(g, this.schedule);
      this.budget = budget;
      if (mask) ({ pattern, newE } = this.maskToBudget(s.tensors, budget));
    } else if (g === final) {
      const { budget } = budgetSchedule(g, this.schedule);
      this.budget = budget;
      ({ pattern, newE } = this.maskToBudget(s.tensors, budget));
      this.resetImportance();
    } else {
      this.budget = this.schedule.targetBgt;
      if (pattern) newE = this.applyPattern(s.tensors, pattern);
    }
    const configChanged = pattern !== this.config.rankPattern || this.fillTotal;
    this.fillTotal = false;
    if (pattern !== this.config.rankPattern) this.config = { ...this.config, rankPattern: pattern };
    if (!newE && !configChanged) return null;
    return { ...(newE ? { tensors: newE } : {}), ...(configChanged ? { config: this.config } : {}) };
  }

  /** mask_to_budget: scores of every triplet, the threshold for `budget`, E zeroed below it. */
  private maskToBudget(
    tensors: ReadonlyMap<string, HostTensor>,
    budget: number,
  ): { pattern: Record<string, boolean[]>; newE: Map<string, HostTensor> } {
    const r = this.config.initR;
    const scores = this.layers.map((l) =>
      tripletScores(this.ema.get(l.keys.a) as Importance, this.ema.get(l.keys.e) as Importance, this.ema.get(l.keys.b) as Importance, r),
    );
    const { keep } = keepMasks(scores, this.schedule.initBgt, budget);
    const pattern = Object.fromEntries(this.layers.map((l, i) => [l.key, keep[i]]));
    return { pattern, newE: this.applyPattern(tensors, pattern) };
  }

  /** mask_using_rank_pattern: E zeroed where the pattern drops a triplet. */
  private applyPattern(tensors: ReadonlyMap<string, HostTensor>, pattern: Record<string, boolean[]>): Map<string, HostTensor> {
    const out = new Map<string, HostTensor>();
    for (const l of this.layers) {
      const e = tensors.get(l.keys.e) as HostTensor;
      out.set(l.keys.e, hostTensor("f32", e.shape, maskValues(e.data as Float32Array, pattern[l.key])));
    }
    return out;
  }

  metrics(): Record<string, number> {
    const p = this.config.rankPattern;
    const rank = p ? Object.values(p).reduce((n, bits) => n + bits.filter(Boolean).length, 0) : this.schedule.initBgt;
    return { adalora_budget: this.budget, rank_total: rank };
  }

  state(): ControllerState {
    const tensors = new Map<string, HostTensor>();
    for (const [k, s] of this.ema) {
      tensors.set(`ema_ipt.${k}`, hostTensor("f32", [s.ipt.length], Float32Array.from(s.ipt)));
      tensors.set(`ema_unc.${k}`, hostTensor("f32", [s.unc.length], Float32Array.from(s.unc)));
    }
    // The adapter's own tensors are not here: a checkpoint keeps them at init_r
    // (adapter_state.safetensors) besides the folder pruned to the rank pattern.
    const json: StateJson = { totalStep: this.schedule.totalStep, budget: this.budget, rankPattern: this.config.rankPattern };
    return { tensors, json };
  }

  restore(s: ControllerState): ControllerAction<AdaLoraConfig> | null {
    const json = s.json as StateJson;
    if (json.totalStep !== this.schedule.totalStep)
      throw new PeftConfigError(
        `ADALORA controller: the checkpoint's total_step is ${json.totalStep}, this run's ${this.schedule.totalStep}`,
      );
    for (const [k, e] of this.ema) {
      const ipt = s.tensors.get(`ema_ipt.${k}`);
      const unc = s.tensors.get(`ema_unc.${k}`);
      if (!ipt || !unc || ipt.data.length !== e.ipt.length || unc.data.length !== e.unc.length)
        throw new PeftConfigError(`ADALORA controller: the checkpoint has no importance state for "${k}"`);
      e.ipt.set(ipt.data as Float32Array);
      e.unc.set(unc.data as Float32Array);
    }
    this.budget = json.budget;
    this.fillTotal = false;
    this.config = { ...this.config, rankPattern: json.rankPattern };
    return { config: this.config };
  }
}
