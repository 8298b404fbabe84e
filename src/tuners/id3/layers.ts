/**
 * Which linear layers ID³ selects from, the budget B, and each layer's slots. Selection is one
 * global pool over all targets (the toolkit's), so any layer may take the whole budget: each
 * layer is compiled with min(B, its size) slots, all masked at first.
 */
import { type SparseKeys, type SparseTarget, sparseTargets } from "../../sparse/adapter.js";
import { PeftConfigError } from "../config.js";
import { totalParameters } from "../sft/layers.js";
import { targetedLinears } from "../targets.js";
import type { ModelInfo } from "../tuner.js";
import type { Id3Config } from "./config.js";

/** A layer's slot positions (i32, fixed) and their values (f32, trained). */
export const id3Keys = (t: { key: string }): SparseKeys => ({ indices: `${t.key}.id3.indices`, values: `${t.key}.id3.values` });
/** Training only: 1 where a slot holds an unmasked entry, 0 for a free slot (its position a placeholder). */
export const usedKey = (t: { key: string }): string => `${t.key}.id3.used`;

export function id3Budget(info: ModelInfo, c: Id3Config): number {
  return c.budget ?? Math.floor(totalParameters(info) * c.density);
}

export function id3Targets(info: ModelInfo, c: Id3Config): SparseTarget[] {
  const where = "ID3 config";
  const layers = targetedLinears(info, c, where, null);
  const inTargets = layers.reduce((a, l) => a + l.inFeatures * l.outFeatures, 0);
  const budget = id3Budget(info, c);
  if (budget < 1) throw new PeftConfigError(`${where}: density ${c.density} leaves no weight to train`);
  if (budget > inTargets) throw new PeftConfigError(`${where}: budget ${budget} exceeds the ${inTargets} weights of the targeted layers`);
  return sparseTargets(info, layers, (_l, numel) => Math.min(budget, numel));
}
