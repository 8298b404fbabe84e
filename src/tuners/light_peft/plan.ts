/**
 * Light-PEFT's pruning decisions from the estimation phase's scores (gccnlp/Light-PEFT
 * NLU/nlu_utils.py: prune_bert_attn, prune_bert_ffn, prune_peft_modules, prune_peft_rank):
 * a unit survives when its score is above np.quantile(scores, ratio) (default "linear"
 * interpolation), so units tied at the threshold go; a ratio of 0 prunes nothing (the authors skip
 * the step then). Pure host code.
 */
import { type PrunedBackbone, planFromScores } from "../../prune/heads-ffn.js";

/**
 * numpy.quantile(values, q) with method "linear" (numpy ≥ 1.22 default): the virtual index
 * (n − 1)·q between sorted neighbours, interpolated as numpy's _lerp does (from below when the
 * fraction is under 1/2, from above otherwise), in float64.
 */
export function quantileLinear(values: ArrayLike<number>, q: number): number {
  const s = Float64Array.from(values).sort();
  const n = s.length;
  if (n === 0) throw new RangeError("quantile of no values");
  const pos = (n - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, n - 1);
  const t = pos - lo;
  const a = s[lo];
  const b = s[hi];
  const diff = b - a;
  return t >= 0.5 ? b - diff * (1 - t) : a + diff * t;
}

/** Which values survive the rule `value > quantile(values, ratio)`; all of them at ratio 0. */
export function keptByQuantile(values: ArrayLike<number>, ratio: number): boolean[] {
  if (ratio === 0) return Array.from(values, () => true);
  const thr = quantileLinear(values, ratio);
  return Array.from(values, (v) => v > thr);
}

/**
 * Units the rule prunes from n distinct scores: those at sorted positions ≤ (n − 1)·ratio, i.e.
 * ⌊(n − 1)·ratio⌋ + 1; none at ratio 0. Every layer prunes this many heads and neurons, so a
 * layer with scores tied at the threshold (where the rule itself would prune all of the tied
 * units) still matches the one size the config can state.
 */
export function prunedCount(n: number, ratio: number): number {
  return ratio === 0 ? 0 : Math.floor((n - 1) * ratio) + 1;
}

/**
 * The backbone plan from the final mask values: per layer, a KV group's score is the mean of its
 * query heads' masks (one head per group without GQA, as the authors'), and the lowest-scoring
 * `prunedCount` groups and neurons go (ties: the lower index goes first).
 */
export function backbonePlan(
  original: PrunedBackbone["original"],
  headMasks: readonly ArrayLike<number>[],
  neuronMasks: readonly ArrayLike<number>[],
  attnRatio: number,
  ffnRatio: number,
): PrunedBackbone {
  const perKv = original.heads / original.kvHeads;
  const groups = headMasks.map((m) =>
    Array.from({ length: original.kvHeads }, (_, g) => {
      let s = 0;
      for (let j = 0; j < perKv; j++) s += m[g * perKv + j];
      return s / perKv;
    }),
  );
  return planFromScores(
    original,
    groups,
    neuronMasks.map((m) => Array.from(m)),
    original.kvHeads - prunedCount(original.kvHeads, attnRatio),
    original.intermediate - prunedCount(original.intermediate, ffnRatio),
  );
}

/** LoRA modules kept and the ranks each keeps (indices into its r). */
export interface AdapterPlan {
  /** Module key → kept rank indices (sorted); modules absent here are removed. */
  ranks: Map<string, number[]>;
}

/**
 * Modules: kept when their module importance is above the quantile over all modules. Ranks: over
 * the kept modules' rank importances together (the scripts' peft_pruning_method "global"), kept
 * when above the quantile; a module left with no rank is removed.
 */
export function adapterPlan(
  moduleScores: ReadonlyMap<string, number>,
  rankScores: ReadonlyMap<string, ArrayLike<number>>,
  moduleRatio: number,
  rankRatio: number,
): AdapterPlan {
  const keys = [...moduleScores.keys()];
  const keepModule = keptByQuantile(
    keys.map((k) => moduleScores.get(k) as number),
    moduleRatio,
  );
  const kept = keys.filter((_, i) => keepModule[i]);
  const all = kept.flatMap((k) => Array.from(rankScores.get(k) as ArrayLike<number>));
  const keepRank = all.length ? keptByQuantile(all, rankRatio) : [];
  const ranks = new Map<string, number[]>();
  let at = 0;
  for (const k of kept) {
    const r = (rankScores.get(k) as ArrayLike<number>).length;
    const idx: number[] = [];
    for (let j = 0; j < r; j++) if (keepRank[at + j]) idx.push(j);
    at += r;
    if (idx.length) ranks.set(k, idx);
  }
  return { ranks };
}
