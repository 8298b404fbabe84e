/**
 * SaRA's index sets: per targeted linear layer, the flat positions (stored layout, increasing)
 * of the base weight's entries with |W| < θ, from the weights the adapter is created on (and
 * loaded onto: the saved folder keeps the positions too).
 */
import { type SparseKeys, type SparseTarget, sparseTargets } from "../../sparse/adapter.js";
import { PeftConfigError } from "../config.js";
import { targetedLinears } from "../targets.js";
import type { ModelInfo } from "../tuner.js";
import type { SaraConfig } from "./config.js";

/** Training only, with lambda_rank > 0: λ's direction U Vᵀ at the layer's indices for the next step (rank.ts). */
export const rankKey = (t: { key: string }): string => `${t.key}.sara.rank_direction`;

export const saraKeys = (t: { key: string }): SparseKeys => ({ indices: `${t.key}.sara.indices`, values: `${t.key}.sara.values` });

/** Scans of a weight by threshold: the targets are asked for on every wrap and save. */
const scanned = new WeakMap<object, Map<number, Int32Array>>();

/** Positions p with |w[p]| < θ, increasing (the result is shared: do not edit it). */
export function smallEntries(w: ArrayLike<number>, threshold: number): Int32Array {
  const byThreshold = scanned.get(w) ?? new Map<number, Int32Array>();
  scanned.set(w, byThreshold);
  const hit = byThreshold.get(threshold);
  if (hit) return hit;
  const out: number[] = [];
  for (let p = 0; p < w.length; p++) if (Math.abs(w[p]) < threshold) out.push(p);
  const idx = Int32Array.from(out);
  byThreshold.set(threshold, idx);
  return idx;
}

/** The targeted layers with at least one entry below θ (k = how many). */
export function saraTargets(info: ModelInfo, c: SaraConfig): SparseTarget[] {
  const where = "SARA config";
  const layers = targetedLinears(info, c, where, null);
  const targets = sparseTargets(
    info,
    layers,
    (l) => smallEntries(info.weight(`${l.path}.weight`).data as ArrayLike<number>, c.threshold).length,
  );
  const kept = targets.filter((t) => t.k > 0);
  if (!kept.length) throw new PeftConfigError(`${where}: no entry of the targeted weights has |W| < threshold ${c.threshold}`);
  return kept;
}
