/**
 * Test helpers for LoRA-SB (not a test file): calibration statistics with prescribed gradient
 * sums, and an adapter created from them (PeftModel.create passes real ones once it is given a
 * calibration pass).
 */
import type { PreTrainedModel } from "../../models/pretrained.js";
import { type Matrix, matrix } from "../../util/linalg.js";
import { Rng } from "../../util/rng.js";
import type { CalibrationStats } from "../tuner.js";
import { PeftModel } from "../peft-model.js";
import { parseLoraSbConfig } from "./config.js";
import { LORA_SB, loraSbLayers } from "./index.js";

/** Stats whose gradient sum for each weight is `g(path, out, in)` (logical [out, in]), stored in W's layout. */
export function statsFor(peft: PeftModel, config: Record<string, unknown>, g: (path: string, out: number, inF: number) => Matrix): CalibrationStats {
  const c = parseLoraSbConfig(normalize(config), "test");
  const gradientSum = new Map<string, Matrix>();
  for (const l of loraSbLayers(peft.info, c)) {
    const logical = g(l.path, l.outFeatures, l.inFeatures);
    const stored = peft.info.fanInFanOut ? matrix(l.inFeatures, l.outFeatures) : matrix(l.outFeatures, l.inFeatures);
    for (let o = 0; o < l.outFeatures; o++)
      for (let i = 0; i < l.inFeatures; i++) stored.data[peft.info.fanInFanOut ? i * l.outFeatures + o : o * l.inFeatures + i] = logical.data[o * l.inFeatures + i];
    gradientSum.set(`${l.path}.weight`, stored);
  }
  return { samples: 4, batches: 2, tokens: 20, inputCovariance: new Map(), gradientSum, gradientSquareSum: new Map() };
}

function normalize(config: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(config).map(([k, v]) => [k.replace(/[A-Z]/g, (ch) => `_${ch.toLowerCase()}`), v]));
}

/** Random gradient sums (seeded). */
export function randomGradients(seed: number): (path: string, out: number, inF: number) => Matrix {
  const rng = new Rng(seed);
  return (_p, out, inF) => matrix(out, inF, Array.from({ length: out * inF }, () => rng.next() * 2 - 1));
}

/** A PeftModel with a LoRA-SB adapter made from `stats` (added the way addAdapter does). */
export function withLoraSb(model: PreTrainedModel, config: Record<string, unknown>, grads: (path: string, out: number, inF: number) => Matrix, name = "default", peft = new PeftModel(model)): PeftModel {
  const c = parseLoraSbConfig(normalize(config), "test");
  const created = LORA_SB.create(peft.info, c, new Rng(0), { calibration: statsFor(peft, config, grads) });
  peft.insertAdapter(name, LORA_SB as never, c, created.tensors);
  return peft;
}
