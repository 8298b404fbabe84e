/**
 * LoCA's phases as a Controller: update gates switch between coefficients and locations without
 * recompiling (schedule.ts). The locations' own learning rate (the authors: 1e-4 against 5e-3 for
 * the coefficients) is applied here, since the step has one learning rate: after a location
 * update ℓ₁ = ℓ₀ − lr·(u + wd·ℓ₀) the controller sets ℓ₀ + ρ·(ℓ₁ − ℓ₀), which is exactly the
 * AdamW (or SGD) update with lr·ρ, because the update is linear in lr and the optimizer state does
 * not depend on it; the moments are kept.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { PeftConfigError } from "../config.js";
import type { Controller, ControllerRun, ControllerState, ControllerStep } from "../controller.js";
import type { LocaConfig } from "./config.js";
import { COEFFICIENTS, LOCATIONS, learnLocationIter, type Phase, phaseAt } from "./schedule.js";

interface State {
  /** Phase of the last update (for the log); -1 before the first. */
  last: Phase | -1;
}

export interface LocaControllerKeys {
  coefficients: readonly string[];
  locations: readonly string[];
}

export function locaController(c: LocaConfig, keys: LocaControllerKeys, run: ControllerRun): Controller<LocaConfig> | null {
  // learn_location_iter 0: the locations are fixed tensors, nothing alternates.
  if (c.learnLocationIter === 0) return null;
  const lli = learnLocationIter(c, run.totalSteps);
  const phase = (t: number) => phaseAt(t, lli, c.coefficientSteps, c.locationSteps);
  const ratio = c.locationLrRatio;
  let st: State = { last: -1 };
  /** The locations before the current location update (only while one runs and ratio ≠ 1). */
  let before: Map<string, Float32Array> | null = null;

  const gates = (p: Phase) =>
    new Map<string, boolean>([
      ...keys.coefficients.map((k) => [k, p === COEFFICIENTS] as const),
      ...keys.locations.map((k) => [k, p === LOCATIONS] as const),
    ]);
  const snapshot = (tensors: ReadonlyMap<string, HostTensor>) =>
    new Map(keys.locations.map((k) => [k, Float32Array.from(tensors.get(k)?.data as Float32Array)]));

  return {
    gradientKeys: [],
    gatedUpdates: true,
    begin(tensors) {
      if (phase(0) === LOCATIONS && ratio !== 1) before = snapshot(tensors);
      return { trainable: gates(phase(0)) };
    },
    afterStep(s: ControllerStep) {
      const done = phase(s.step - 1);
      const next = phase(s.step);
      st.last = done;
      let tensors: Map<string, HostTensor> | undefined;
      if (done === LOCATIONS && ratio !== 1) {
        if (!before) throw new PeftConfigError("LoCA: a location update ran without the locations it started from");
        tensors = new Map();
        for (const k of keys.locations) {
          const t = s.tensors.get(k) as HostTensor;
          const now = t.data as Float32Array;
          const from = before.get(k) as Float32Array;
          tensors.set(
            k,
            hostTensor(
              "f32",
              [...t.shape],
              Float32Array.from(now, (v, i) => from[i] + ratio * (v - from[i])),
            ),
          );
        }
      }
      before = next === LOCATIONS && ratio !== 1 ? snapshot(tensors ?? s.tensors) : null;
      if (!tensors && next === done) return null;
      return { ...(tensors ? { tensors } : {}), ...(next !== done ? { trainable: gates(next) } : {}) };
    },
    metrics: (): Record<string, number> => (st.last === -1 ? {} : { loca_phase: st.last }),
    state(): ControllerState {
      return { tensors: new Map(before ? [...before].map(([k, v]) => [k, hostTensor("f32", [v.length], v)] as const) : []), json: st };
    },
    restore(saved: ControllerState) {
      st = structuredClone(saved.json as State);
      before = saved.tensors.size ? new Map([...saved.tensors].map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)])) : null;
      for (const k of before?.keys() ?? [])
        if (!keys.locations.includes(k))
          throw new PeftConfigError(`LoCA: the checkpoint's controller holds locations of "${k}", which this adapter does not have`);
      return null;
    },
  };
}
