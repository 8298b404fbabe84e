/**
 * Which linear layers an SFT (SpIEL) config changes and how many entries each trains:
 * SftModel.inject_adapter's rule. With num_deltas the counts are given per module; otherwise
 * N = num_tunable_weights, or ⌊density · (all of the model's parameters)⌋, is spread over the
 * targets in proportion to their sizes, ⌊N·numel/Σ numel⌋ each.
 */

import { type SparseKeys, type SparseTarget, sparseTargets } from "../../sparse/adapter.js";
import { PeftConfigError } from "../config.js";
import { targetedLinears } from "../targets.js";
import type { ModelInfo } from "../tuner.js";
import type { SftConfig } from "./config.js";

/** The adapter keys of a module (AlanAnsell/peft: "<module>.sft_delta.<adapter>.{indices,values}"). */
export const sftKeys = (t: { key: string }): SparseKeys => ({ indices: `${t.key}.sft_delta.indices`, values: `${t.key}.sft_delta.values` });

/**
 * Training only, with reselection on: the positions where the step reads ∂L/∂W for the open
 * selection phase (set by the controller; not saved with the adapter).
 */
export const candidatesKey = (t: { key: string }): string => `${t.key}.sft_delta.candidates`;

/** Every parameter of the base model once (tied weights once), as SftModel's total_params. */
export function totalParameters(info: ModelInfo): number {
  const seen = new Set<unknown>();
  let n = 0;
  for (const name of info.weightNames()) {
    const w = info.weight(name);
    if (seen.has(w)) continue;
    seen.add(w);
    n += w.data.length;
  }
  return n;
}

export function sftTargets(info: ModelInfo, c: SftConfig): SparseTarget[] {
  const where = "SFT config";
  if (c.numDeltas) {
    const byPeft = new Map(info.linearLayers.map((p) => [info.peftName(p), p]));
    const layers = Object.keys(c.numDeltas).map((key) => {
      const path = byPeft.get(key);
      if (!path)
        throw new PeftConfigError(`${where}: num_deltas names "${key}", which is not a linear layer of this ${info.modelType} model`);
      const [d0, d1] = info.weight(`${path}.weight`).shape;
      return { path, key, inFeatures: info.fanInFanOut ? d0 : d1, outFeatures: info.fanInFanOut ? d1 : d0 };
    });
    return sparseTargets(info, layers, (l, numel) => {
      const k = (c.numDeltas as Record<string, number>)[l.key];
      if (k > numel) throw new PeftConfigError(`${where}: num_deltas["${l.key}"] = ${k} exceeds the ${numel} weights of that layer`);
      return k;
    });
  }
  const layers = targetedLinears(info, c, where, null);
  const sizes = layers.map((l) => l.inFeatures * l.outFeatures);
  const inTargets = sizes.reduce((a, b) => a + b, 0);
  const total = c.numTunableWeights ?? Math.floor(totalParameters(info) * c.density);
  if (total < 1) throw new PeftConfigError(`${where}: density ${c.density} leaves no weight to train`);
  if (total > inTargets)
    throw new PeftConfigError(`${where}: ${total} tunable weights exceed the ${inTargets} weights of the targeted layers`);
  return sparseTargets(info, layers, (_l, numel) => Math.floor((total * numel) / inTargets)).filter((t) => t.k > 0);
}
