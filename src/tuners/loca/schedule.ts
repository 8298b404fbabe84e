/**
 * LoCA's alternation (the authors' LoCA layer forward, TL-UESTC/LoCA
 * peft/src/peft/tuners/loca/layer.py): at iteration 0 the coefficients train; before
 * learn_location_iter, at every cycle position 0 (cycle = 10 + 20 steps) the coefficients
 * switch on and the locations off, at position 10 the reverse; from learn_location_iter on the
 * locations stay frozen. The authors count training forwards; we count optimizer steps (the
 * same with one micro-batch per step; with accumulation the phase holds for a whole update).
 */
import type { LocaConfig } from "./config.js";

export const COEFFICIENTS = 0;
export const LOCATIONS = 1;
export type Phase = typeof COEFFICIENTS | typeof LOCATIONS;

/** What trains in the optimizer step with 0-based index t. */
export function phaseAt(t: number, learnLocationIter: number, coefficientSteps: number, locationSteps: number): Phase {
  if (t === 0 || t >= learnLocationIter || locationSteps === 0) return COEFFICIENTS;
  return t % (coefficientSteps + locationSteps) < coefficientSteps ? COEFFICIENTS : LOCATIONS;
}

/** Used when learn_location_iter is null and the run's length is unknown. */
export const FALLBACK_LOCATION_ITER = 1000;

/** learn_location_iter as set, or 10% of the planned steps (the paper's setting). */
export function learnLocationIter(c: LocaConfig, totalSteps: number | null): number {
  if (c.learnLocationIter !== null) return c.learnLocationIter;
  return totalSteps === null ? FALLBACK_LOCATION_ITER : Math.round(0.1 * totalSteps);
}
