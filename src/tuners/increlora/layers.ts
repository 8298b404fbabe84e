/** IncreLoRA's targeted layers, their capacities and tensor keys. */
import { PeftConfigError } from "../config.js";
import { type FamilyLayer, familyLayers } from "../svfit/family.js";
import type { ModelInfo } from "../tuner.js";
import { type IncreloraConfig, increRankNum } from "./config.js";

export interface IncreloraLayer extends FamilyLayer {
  /** The largest rank this module may reach. */
  maxRank: number;
  /** Rank slots compiled into the step: maxRank plus room for the reserved ranks. */
  capacity: number;
}

export interface IncreloraKeys {
  a: string;
  e: string;
  b: string;
  /** The module's rank count, which sets its scaling α / (ranknum + 1e-5). */
  ranknum: string;
  /** 1 for slots that exist (active or reserved), 0 for room not yet used (training only, not saved). */
  exists: string;
}

export function increloraKeys(key: string): IncreloraKeys {
  return {
    a: `${key}.increlora_A.weight`,
    e: `${key}.increlora_E`,
    b: `${key}.increlora_B.weight`,
    ranknum: `${key}.increlora_ranknum`,
    exists: `${key}.increlora_exists`,
  };
}

/** Saved with the adapter but never trained. */
export const FIXED_SUFFIXES = [".increlora_ranknum", ".increlora_exists"];
/** Training bookkeeping only: not written to a saved adapter (rebuilt when one is read). */
export const EXISTS_SUFFIX = ".increlora_exists";

export function increloraLayers(info: ModelInfo, c: IncreloraConfig): IncreloraLayer[] {
  const add = increRankNum(c);
  return familyLayers(info, c, "IncreLoRA").map((l) => {
    const room = Math.min(l.inFeatures, l.outFeatures) - add;
    const maxRank = Math.min(c.maxRank ?? 3 * c.targetR, room);
    if (maxRank < c.initR)
      throw new PeftConfigError(
        `IncreLoRA: init_r = ${c.initR} plus ${add} reserved rank(s) exceeds min(out, in) = ${room + add} of "${l.key}" [${l.outFeatures}x${l.inFeatures}]`,
      );
    return { ...l, r: c.initR, scaling: c.loraAlpha, maxRank, capacity: maxRank + add };
  });
}

/** How many rank slots a module's tensors hold: its saved triplets when the config has them, else its capacity. */
export function slotsOf(c: IncreloraConfig, l: IncreloraLayer): number {
  if (!c.tripletPattern) return l.capacity;
  const n = c.tripletPattern[l.key];
  if (n === undefined) throw new PeftConfigError(`IncreLoRA config: "triplet_pattern" has no entry for module "${l.key}"`);
  return n;
}
