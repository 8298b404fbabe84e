/**
 * Deterministic train/held-out split of WordNet synsets: a synset is held out when a hash of
 * its file and offset falls in the lowest `heldOutFraction` of the range. The split depends on
 * nothing but the synset's identity, so pretraining and the demo task always agree on it.
 */
import type { PosFile, Synset } from "./wordnet.js";

/** 32-bit FNV-1a of a string's UTF-16 code units (the keys are ASCII). */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // A final avalanche so nearby offsets do not land in nearby buckets.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

export const DEFAULT_HELD_OUT_FRACTION = 0.1;

/** True when the synset (file + offset) belongs to the held-out part. */
export function isHeldOut(file: PosFile, offset: number, heldOutFraction = DEFAULT_HELD_OUT_FRACTION): boolean {
  return fnv1a(`${file}:${offset}`) / 4294967296 < heldOutFraction;
}

export function splitSynsets(
  synsets: readonly Synset[],
  heldOutFraction = DEFAULT_HELD_OUT_FRACTION,
): { train: Synset[]; heldOut: Synset[] } {
  const train: Synset[] = [];
  const heldOut: Synset[] = [];
  for (const s of synsets) (isHeldOut(s.file, s.offset, heldOutFraction) ? heldOut : train).push(s);
  return { train, heldOut };
}
