/**
 * SNELLA's Allocator (sparse_allocator.py) as a Controller. After every update it folds
 * |p ⊙ ∇p| of each layer's P and Q into the EMA sensitivity and uncertainty (update_ipt, called
 * after optimizer.step() in engine.py); when the budget schedule says so it re-allocates the kept
 * entries over the layers and feeds each layer's new ratio to the step as the fixed tensor
 * <m>.snella_ratio (mask_to_target_ratio). No recompile: the step finds the threshold of the
 * current |D| at the fed ratio (kernel.ts, sparsifyDynamic).
 *
 * Timing: the authors call allocator.update(model, epoch) before each epoch, after the previous
 * epoch's update_ipt calls, and count the schedule in epochs; here it is counted in optimizer
 * steps: after update k (k = 1, 2, …) the importance is updated, then budgetAt(k) decides the
 * ratios the next update trains with (budgetAt(0) — before the first update — is the initial
 * budget, with no allocation).
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { PeftConfigError } from "../config.js";
import type { Controller, ControllerRun, ControllerState, ControllerStep } from "../controller.js";
import type { ModelInfo } from "../tuner.js";
import { allocate, budgetAt, type Importance, meanScore, newImportance, ratioOf, type Schedule, updateImportance } from "./allocator.js";
import type { SnellaConfig } from "./config.js";
import { snellKeys, snellLayers } from "./layers.js";

interface Json {
  ratios: number[];
  volume: number;
}

export function snellaSchedule(info: ModelInfo, c: SnellaConfig, totalStep: number): Schedule {
  const sizes = snellLayers(info, c).map((l) => l.inFeatures * l.outFeatures);
  if (c.initWarmup + c.finalWarmup >= totalStep)
    throw new PeftConfigError(
      `SNELLA: init_warmup (${c.initWarmup}) + final_warmup (${c.finalWarmup}) must be less than the total steps (${totalStep})`,
    );
  return {
    initVolume: sizes.reduce((a, n) => a + (1 - c.initRatio) * n, 0),
    targetVolume: sizes.reduce((a, n) => a + (1 - c.targetRatio) * n, 0),
    initWarmup: c.initWarmup,
    finalWarmup: c.finalWarmup,
    maskInterval: c.maskInterval,
    totalStep,
  };
}

export function snellaController(info: ModelInfo, c: SnellaConfig, run: ControllerRun): Controller<SnellaConfig> | null {
  const total = c.totalStep ?? run.totalSteps;
  // Without a planned length there is no schedule: the ratios stay as they are.
  if (total === null) return null;
  const schedule = snellaSchedule(info, c, total);
  const layers = snellLayers(info, c);
  const keys = layers.map((l) => snellKeys(l.key, "SNELLA"));
  const sizes = layers.map((l) => l.inFeatures * l.outFeatures);
  const tensorKeys = keys.flatMap((k) => [k.p, k.q]);
  let imp = new Map<string, Importance>();
  let st: Json = { ratios: layers.map(() => c.initRatio), volume: schedule.initVolume };

  const ratioTensors = () => new Map(keys.map((k, i) => [k.ratio, hostTensor("f32", [1], [st.ratios[i]])]));

  return {
    gradientKeys: tensorKeys,
    begin: () => ({ tensors: ratioTensors() }),
    afterStep(s: ControllerStep) {
      for (const key of tensorKeys) {
        const p = s.tensors.get(key);
        const g = s.gradients.get(key);
        if (!p || !g) throw new PeftConfigError(`SNELLA: the training step did not report "${key}" or its gradient`);
        let m = imp.get(key);
        if (!m) {
          m = newImportance(p.data.length);
          imp.set(key, m);
        }
        updateImportance(m, p.data as Float32Array, g.data as Float32Array, c.beta1, c.beta2);
      }
      const b = budgetAt(schedule, s.step);
      st.volume = b.volume;
      if (!b.allocate) return null;
      const scores = keys.map((k) => meanScore(imp.get(k.p) as Importance) + meanScore(imp.get(k.q) as Importance));
      const kept = allocate(scores, b.volume, sizes);
      st.ratios = kept.map((n, i) => ratioOf(n, sizes[i]));
      return { tensors: ratioTensors() };
    },
    metrics: () => {
      const n = sizes.reduce((a, b) => a + b, 0);
      const kept = st.ratios.reduce((a, r, i) => a + (1 - r) * sizes[i], 0);
      return { sparsity: 1 - kept / n, budget: Math.round(st.volume) };
    },
    state(): ControllerState {
      const tensors = new Map<string, HostTensor>();
      for (const [k, m] of imp) {
        tensors.set(`${k}.ipt`, hostTensor("f64", [m.ipt.length], Float64Array.from(m.ipt)));
        tensors.set(`${k}.unc`, hostTensor("f64", [m.unc.length], Float64Array.from(m.unc)));
      }
      return { tensors, json: st };
    },
    restore(saved: ControllerState) {
      const j = saved.json as Json;
      if (!Array.isArray(j?.ratios) || j.ratios.length !== layers.length)
        throw new PeftConfigError(`SNELLA: the checkpoint's allocator has ${j?.ratios?.length} layers, this model ${layers.length}`);
      st = { ratios: [...j.ratios], volume: j.volume };
      imp = new Map();
      for (const k of tensorKeys) {
        const ipt = saved.tensors.get(`${k}.ipt`);
        const unc = saved.tensors.get(`${k}.unc`);
        if (ipt && unc) imp.set(k, { ipt: Float64Array.from(ipt.data as Float64Array), unc: Float64Array.from(unc.data as Float64Array) });
      }
      return { tensors: ratioTensors() };
    },
  };
}
