/**
 * IncreLoRA's rank allocation as pure functions (after the authors' loralib/increlora.py
 * RankAllocator): per-module importance smoothed like AdaLoRA's, and the choice of the modules
 * that grow in a round.
 */

/** A module's smoothed importance: sensitivity EMA × uncertainty EMA. */
export interface Importance {
  /** The latest score Σ|ΔW ⊙ ∂L/∂ΔW| / √numel(ΔW). */
  ipt: number;
  avgIpt: number;
  avgUnc: number;
}

export const NO_IMPORTANCE: Importance = { ipt: 0, avgIpt: 0, avgUnc: 0 };

/** update_ipt: the sensitivity EMA first, then the uncertainty EMA of |score − new sensitivity|. */
export function updateImportance(s: Importance, score: number, beta1: number, beta2: number): Importance {
  const avgIpt = beta1 * s.avgIpt + (1 - beta1) * score;
  const avgUnc = beta2 * s.avgUnc + (1 - beta2) * Math.abs(score - avgIpt);
  return { ipt: score, avgIpt, avgUnc };
}

export const importanceOf = (s: Importance): number => s.avgIpt * s.avgUnc;

/**
 * increase_to_target_rank's choice: k = min(topH, remaining budget) (the authors compare a module
 * count with a rank count; kept), the threshold is the k-th largest importance among the
 * modules that may grow, and every such module at or above it grows (ties may add more than k).
 * Returns the chosen module indices and the threshold (null when none may grow).
 */
export function chooseModules(
  importance: readonly number[],
  mayGrow: readonly boolean[],
  topH: number,
  remaining: number,
): { chosen: number[]; threshold: number | null } {
  const candidates = importance.filter((_, i) => mayGrow[i]).sort((a, b) => b - a);
  const k = Math.min(topH, remaining, candidates.length);
  if (k <= 0) return { chosen: [], threshold: null };
  const threshold = candidates[k - 1];
  const chosen = importance.flatMap((v, i) => (mayGrow[i] && v >= threshold ? [i] : []));
  return { chosen, threshold };
}

/** Whether a round happens after the update of 0-based step g (the authors' global_step). */
export function isGrowthStep(g: number, initWarmup: number, increInterval: number): boolean {
  return g > initWarmup && g % increInterval === 0;
}
