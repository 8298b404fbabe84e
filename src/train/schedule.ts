/** Learning-rate schedules with linear warmup, as transformers' get_*_schedule_with_warmup. */
import { PeftkitError } from "../engine/errors.js";

export type ScheduleName = "constant" | "linear" | "cosine";

export class TrainingArgsError extends PeftkitError {}

/** lr at optimizer step `step` (0-based) of `total`. */
export function learningRate(schedule: ScheduleName, baseLr: number, step: number, total: number, warmup: number): number {
  if (warmup > 0 && step < warmup) return (baseLr * (step + 1)) / warmup;
  const progress = total > warmup ? Math.min(1, (step - warmup) / (total - warmup)) : 1;
  switch (schedule) {
    case "constant":
      return baseLr;
    case "linear":
      return baseLr * Math.max(0, 1 - progress);
    case "cosine":
      return baseLr * 0.5 * (1 + Math.cos(Math.PI * progress));
  }
}

/** Warmup given as steps (>= 1) or as a fraction of the total (< 1). */
export function warmupSteps(warmup: number, total: number): number {
  if (warmup < 0 || !Number.isFinite(warmup)) throw new TrainingArgsError(`warmup must be >= 0, got ${warmup}`);
  return warmup < 1 ? Math.round(warmup * total) : Math.round(warmup);
}
