/**
 * AdaLoRA's rank allocator as pure functions, after PEFT 0.20's RankAllocator
 * (src/peft/tuners/adalora/layer.py) and AdaLoraModel.update_and_allocate (model.py). Scores
 * are kept in float32 with every operation rounded to float32, as PEFT's tensors are.
 */

export interface BudgetSchedule {
  tinit: number;
  tfinal: number;
  totalStep: number;
  deltaT: number;
  /** Σ init_r over the targeted layers. */
  initBgt: number;
  /** target_r × number of targeted layers. */
  targetBgt: number;
}

/**
 * RankAllocator.budget_schedule at PEFT's `global_step` (0 for the call after the first update):
 * the full budget while step ≤ tinit, target_bgt after total_step − tfinal, in between
 * ⌊(init − target)·(1 − (step − tinit)/(total − tfinal − tinit))³ + target⌋, masking every deltaT steps.
 */
export function budgetSchedule(step: number, s: BudgetSchedule): { budget: number; mask: boolean } {
  if (step <= s.tinit) return { budget: s.initBgt, mask: false };
  if (step > s.totalStep - s.tfinal) return { budget: s.targetBgt, mask: true };
  const mul = 1 - (step - s.tinit) / (s.totalStep - s.tfinal - s.tinit);
  // Python's int() truncates toward zero; the value is ≥ target_bgt ≥ 0.
  const budget = Math.trunc((s.initBgt - s.targetBgt) * mul ** 3 + s.targetBgt);
  return { budget, mask: step % s.deltaT === 0 };
}

const f = Math.fround;

/** EMA buffers of one adapter tensor (exp_avg_ipt, exp_avg_unc), float32 like the parameter. */
export interface Importance {
  ipt: Float32Array;
  unc: Float32Array;
}

export function zeroImportance(n: number): Importance {
  return { ipt: new Float32Array(n), unc: new Float32Array(n) };
}

/**
 * RankAllocator.update_ipt for one tensor, in place: ipt = |p·∇p|, sensitivity EMA with β1,
 * uncertainty EMA of |ipt − sensitivity| with β2 (the new sensitivity, as PEFT).
 */
export function updateImportance(p: ArrayLike<number>, grad: ArrayLike<number>, s: Importance, beta1: number, beta2: number): void {
  const b1 = f(beta1);
  const c1 = f(1 - beta1);
  const b2 = f(beta2);
  const c2 = f(1 - beta2);
  for (let i = 0; i < s.ipt.length; i++) {
    const ipt = Math.abs(f(p[i] * grad[i]));
    const e = f(f(b1 * s.ipt[i]) + f(c1 * ipt));
    s.ipt[i] = e;
    s.unc[i] = f(f(b2 * s.unc[i]) + f(c2 * Math.abs(f(ipt - e))));
  }
}

/** _element_score: sensitivity × uncertainty. */
function elementScore(s: Importance, i: number): number {
  return f(s.ipt[i] * s.unc[i]);
}

/**
 * The score of each of a layer's r triplets (_combine_ipt): E's element score plus the mean
 * score of A's row and of B's column. `a` is [r, in], `e` [r], `b` [out, r].
 */
export function tripletScores(a: Importance, e: Importance, b: Importance, r: number): Float32Array {
  const inF = a.ipt.length / r;
  const outF = b.ipt.length / r;
  const out = new Float32Array(r);
  for (let i = 0; i < r; i++) {
    let sa = 0;
    for (let j = 0; j < inF; j++) sa += elementScore(a, i * inF + j);
    let sb = 0;
    for (let o = 0; o < outF; o++) sb += elementScore(b, o * r + i);
    out[i] = f(elementScore(e, i) + f(f(sa / inF) + f(sb / outF)));
  }
  return out;
}

/**
 * RankAllocator.mask_to_budget's rule over every layer's triplet scores: the threshold is the
 * k-th smallest score (torch.kthvalue) with k = init_bgt − budget, and a triplet is kept when its
 * score is above it, so exactly `budget` triplets stay when scores are distinct. k ≤ 0 keeps all
 * (PEFT's kthvalue would fail there: only when target_r = init_r).
 */
export function keepMasks(scores: readonly Float32Array[], initBgt: number, budget: number): { threshold: number; keep: boolean[][] } {
  const k = initBgt - budget;
  if (k <= 0) return { threshold: Number.NEGATIVE_INFINITY, keep: scores.map((s) => Array.from(s, () => true)) };
  const all = Float32Array.from(scores.flatMap((s) => Array.from(s)));
  if (k > all.length) throw new RangeError(`kthvalue: k = ${k} exceeds the ${all.length} scores`);
  const threshold = all.sort()[k - 1];
  return { threshold, keep: scores.map((s) => Array.from(s, (v) => !(v <= threshold))) };
}

/** E [r, 1] with the dropped triplets' singular values set to zero (masked_fill_). */
export function maskValues(e: Float32Array, keep: readonly boolean[]): Float32Array {
  return Float32Array.from(e, (v, i) => (keep[i] ? v : 0));
}
