/**
 * Test helpers for LoRA-SB (not a test file): calibration statistics with prescribed gradient
 * sums for the layers a config asks about, and a PeftModel whose adapter is created from them.
 */
import type { PreTrainedModel } from "../../models/pretrained.js";
import { type Matrix, matrix } from "../../util/linalg.js";
import { Rng } from "../../util/rng.js";
import { modelInfo } from "../model-info.js";
import { calibrationRequest, PeftModel } from "../peft-model.js";
import type { CalibrationStats } from "../tuner.js";

export type GradientSource = (path: string, out: number, inF: number) => Matrix;

/**
 * Stats whose gradient sum for each requested layer is `g(path, out, in)` (logical [out, in]),
 * stored in W's layout ([in, out] for GPT-2's Conv1D, as the calibration pass stores it).
 */
export function statsFor(model: PreTrainedModel, config: Record<string, unknown>, g: GradientSource): CalibrationStats {
  const req = calibrationRequest(model, config);
  const fif = modelInfo(model).fanInFanOut;
  const gradientSum = new Map<string, Matrix>();
  for (const path of req?.layers ?? []) {
    const [d0, d1] = model.weights.get(`${path}.weight`)?.shape ?? [0, 0];
    const [out, inF] = fif ? [d1, d0] : [d0, d1];
    const logical = g(path, out, inF);
    const stored = matrix(d0, d1);
    for (let o = 0; o < out; o++) for (let i = 0; i < inF; i++) stored.data[fif ? i * out + o : o * inF + i] = logical.data[o * inF + i];
    gradientSum.set(`${path}.weight`, stored);
  }
  return { samples: 4, batches: 2, tokens: 20, inputCovariance: new Map(), gradientSum, gradientSquareSum: new Map() };
}

/** Random gradient sums (seeded). */
export function randomGradients(seed: number): GradientSource {
  const rng = new Rng(seed);
  return (_p, out, inF) =>
    matrix(
      out,
      inF,
      Array.from({ length: out * inF }, () => rng.next() * 2 - 1),
    );
}

/** A PeftModel with a LoRA-SB adapter created from prescribed gradient sums. */
export function withLoraSb(model: PreTrainedModel, config: Record<string, unknown>, grads: GradientSource): PeftModel {
  return PeftModel.create(model, config, { seed: 0, calibration: statsFor(model, config, grads) });
}
