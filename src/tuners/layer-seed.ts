/**
 * Random ops inside a tuner's forward (dropout) get the training step's one seed. Used as is, every
 * layer would draw the same mask (the random op depends only on the seed and the element index),
 * so q, k and v of a layer, which share their input, would drop the same features: PEFT's dropout
 * modules draw independently. Each use adds a stable salt of its layer key instead.
 */
import type { Tensor } from "../engine/trace/tensor.js";

/** A stable per-(key, use) offset (FNV-1a of the key), so masks differ across layers and uses. */
export function layerSalt(key: string, use = 0): number {
  let h = 2166136261;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619) >>> 0;
  return ((h % 1000003) * 4 + use + 1) | 0;
}

/** The step's seed offset for one layer's random op; `use` tells apart several ops of a layer (0–3). */
export function layerSeed(seed: Tensor, key: string, use = 0): Tensor {
  return seed.add(layerSalt(key, use));
}
