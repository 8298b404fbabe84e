/** TriAdaptLoRA's targeted layers, their capacities and tensor keys. */
import { PeftConfigError } from "../config.js";
import { type FamilyLayer, familyLayers } from "../svfit/family.js";
import type { ModelInfo } from "../tuner.js";
import { increRankNum, type TriadaptloraConfig } from "./config.js";
import { isBlockRank } from "./schedule.js";

export interface TriadaptloraLayer extends FamilyLayer {
  /** The largest rank this module may reach (a whole number of blocks). */
  maxRank: number;
  /** Rank slots compiled into the training step (= maxRank). */
  capacity: number;
}

export interface TriadaptloraKeys {
  a: string;
  b: string;
  /** The block-lower-triangular part of the core (the authors' C_row blocks). */
  lower: string;
  /** The block-upper-triangular part (C_col blocks). */
  upper: string;
  /** The module's rank R, which sets its scaling α / (R + 1e-5) and which slots exist. */
  ranknum: string;
}

export function triadaptloraKeys(key: string): TriadaptloraKeys {
  return {
    a: `${key}.triadaptlora_A.weight`,
    b: `${key}.triadaptlora_B.weight`,
    lower: `${key}.triadaptlora_C_lower`,
    upper: `${key}.triadaptlora_C_upper`,
    ranknum: `${key}.triadaptlora_ranknum`,
  };
}

/** Saved with the adapter but never trained. */
export const FIXED_SUFFIX = ".triadaptlora_ranknum";

export function triadaptloraLayers(info: ModelInfo, c: TriadaptloraConfig): TriadaptloraLayer[] {
  const add = increRankNum(c);
  return familyLayers(info, c, "TriAdaptLoRA").map((l) => {
    const room = Math.min(l.inFeatures, l.outFeatures);
    if (c.initRank > room)
      throw new PeftConfigError(
        `TriAdaptLoRA: init_rank = ${c.initRank} exceeds min(out, in) = ${room} of "${l.key}" [${l.outFeatures}x${l.inFeatures}]`,
      );
    const most = Math.min(c.maxRank ?? 3 * c.referenceRank, room);
    const maxRank = c.initRank + Math.floor((most - c.initRank) / add) * add;
    return { ...l, r: c.initRank, scaling: c.loraAlpha > 0 ? c.loraAlpha : c.initRank, maxRank, capacity: maxRank };
  });
}

/** How many rank slots a module's tensors hold: its rank when the config has a rank_pattern (a saved adapter), else its capacity. */
export function slotsOf(c: TriadaptloraConfig, l: TriadaptloraLayer): number {
  if (!c.rankPattern) return l.capacity;
  const n = c.rankPattern[l.key];
  if (n === undefined) throw new PeftConfigError(`TriAdaptLoRA config: "rank_pattern" has no entry for module "${l.key}"`);
  const add = increRankNum(c);
  if (!isBlockRank(n, c.initRank, add))
    throw new PeftConfigError(
      `TriAdaptLoRA config: "rank_pattern" gives module "${l.key}" rank ${n}, not init_rank ${c.initRank} plus whole blocks of ${add}`,
    );
  return n;
}
