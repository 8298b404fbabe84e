/**
 * LoCA's phases as a Controller: update gates switch between coefficients and locations without
 * recompiling (schedule.ts). The locations' own learning rate (the authors: 1e-4 against 5e-3 for
 * the coefficients) is their gate's value: a gate above 0 multiplies an element's learning rate,
 * as a torch parameter group's own lr (TrainStepDefinition.gatedUpdates), so a location phase
 * gates the locations at location_lr_ratio. The gates are saved with the optimizer state; the
 * controller's own state is only the phase it logs.
 */
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
  let st: State = { last: -1 };

  /** Coefficients train at the step's lr in their phase, locations at lr·ratio in theirs; 0 freezes. */
  const gates = (p: Phase) =>
    new Map<string, number>([
      ...keys.coefficients.map((k) => [k, p === COEFFICIENTS ? 1 : 0] as const),
      ...keys.locations.map((k) => [k, p === LOCATIONS ? c.locationLrRatio : 0] as const),
    ]);

  return {
    gradientKeys: [],
    gatedUpdates: true,
    begin: () => ({ trainable: gates(phase(0)) }),
    afterStep(s: ControllerStep) {
      const done = phase(s.step - 1);
      const next = phase(s.step);
      st.last = done;
      return next === done ? null : { trainable: gates(next) };
    },
    metrics: (): Record<string, number> => (st.last === -1 ? {} : { loca_phase: st.last }),
    state(): ControllerState {
      return { tensors: new Map(), json: st };
    },
    restore(saved: ControllerState) {
      const json = saved.json as State | null;
      if (!json || ![-1, COEFFICIENTS, LOCATIONS].includes(json.last))
        throw new PeftConfigError(`LoCA: the checkpoint's controller state ${JSON.stringify(saved.json)} is not LoCA's`);
      st = structuredClone(json);
      return null;
    },
  };
}
