/**
 * SNELLA's layer-wise allocation (ssfgunner/SNELL sparse_allocator.py, Allocator): a global
 * budget of kept entries decreasing cubically from the initial to the target volume, shared out
 * over the layers in proportion to their AdaLoRA-style importance. Pure functions; the
 * controller (controller.ts) holds the state.
 */

/** Where the schedule is at a step (the authors' schedule_threshold). */
export interface Budget {
  /** Kept entries over all layers. */
  volume: number;
  /** Whether the layers are re-allocated at this step (mask_ind). */
  allocate: boolean;
}

export interface Schedule {
  /** Σ (1 − init_ratio)·n_l (a float, as the authors'). */
  initVolume: number;
  /** Σ (1 − target_ratio)·n_l. */
  targetVolume: number;
  initWarmup: number;
  finalWarmup: number;
  maskInterval: number;
  totalStep: number;
}

/**
 * The budget after `step` updates: initial through init_warmup; then
 * target + (init − target)·(1 − (step − init_warmup)/(total − final_warmup − init_warmup))³
 * truncated, re-allocated every mask_interval steps; the target (re-allocated every step) for the
 * last final_warmup steps.
 */
export function budgetAt(s: Schedule, step: number): Budget {
  if (step <= s.initWarmup) return { volume: s.initVolume, allocate: false };
  if (step > s.totalStep - s.finalWarmup) return { volume: s.targetVolume, allocate: true };
  const mul = 1 - (step - s.initWarmup) / (s.totalStep - s.finalWarmup - s.initWarmup);
  const volume = Math.trunc(s.targetVolume + (s.initVolume - s.targetVolume) * mul ** 3);
  return { volume, allocate: step % s.maskInterval === 0 };
}

/** EMA sensitivity and uncertainty of one tensor's |p ⊙ ∇p|, elementwise (update_ipt, metric "ipt"). */
export interface Importance {
  ipt: Float64Array;
  unc: Float64Array;
}

export function newImportance(n: number): Importance {
  return { ipt: new Float64Array(n), unc: new Float64Array(n) };
}

/** One update: ipt ← β₁·ipt + (1−β₁)·|p·g| (NaN → 0), unc ← β₂·unc + (1−β₂)·||p·g| − ipt| (new ipt). */
export function updateImportance(m: Importance, p: ArrayLike<number>, g: ArrayLike<number>, beta1: number, beta2: number): void {
  for (let i = 0; i < m.ipt.length; i++) {
    let s = Math.abs(p[i] * g[i]);
    if (Number.isNaN(s)) s = 0;
    m.ipt[i] = beta1 * m.ipt[i] + (1 - beta1) * s;
    m.unc[i] = beta2 * m.unc[i] + (1 - beta2) * Math.abs(s - m.ipt[i]);
  }
}

/** mean(ipt ⊙ unc) of one tensor (calculate_score(...).mean()). */
export function meanScore(m: Importance): number {
  let s = 0;
  for (let i = 0; i < m.ipt.length; i++) s += m.ipt[i] * m.unc[i];
  return m.ipt.length ? s / m.ipt.length : 0;
}

/**
 * Kept entries per layer (param_alloc): truncate volume × normalised score, cap at the layer's
 * size, hand what is left to the layers with room in proportion to their scores until it is
 * placed, truncate. Scores all zero: equal shares. The sum is at most `volume` and short of it by
 * less than the number of layers (the final truncation).
 */
export function allocate(scores: readonly number[], volume: number, sizes: readonly number[]): number[] {
  const total = scores.reduce((a, b) => a + b, 0);
  const s = total > 0 ? scores.map((v) => v / total) : scores.map(() => 1 / scores.length);
  const alloc = s.map((v, i) => Math.min(sizes[i], Math.trunc(volume * v)));
  const sum = () => alloc.reduce((a, b) => a + b, 0);
  let delta = volume - sum();
  for (let round = 0; delta > 1e-9 * Math.max(1, volume) && round <= sizes.length + 1; round++) {
    const room = alloc.map((a, i) => sizes[i] - a);
    const open = room.map((r, i) => (r > 0 ? i : -1)).filter((i) => i >= 0);
    if (open.length === 0) break;
    const openScore = open.reduce((a, i) => a + s[i], 0);
    for (const i of open) {
      // Open layers all scored zero: share by room (the authors' code divides by zero here).
      const share = openScore > 0 ? s[i] / openScore : room[i] / open.reduce((a, j) => a + room[j], 0);
      alloc[i] += Math.min(delta * share, room[i]);
    }
    delta = volume - sum();
  }
  return alloc.map(Math.trunc);
}

/** A layer's sparsity ratio from its kept entries: 1 − kept/n, in [0, 1]. */
export function ratioOf(kept: number, n: number): number {
  return Math.min(Math.max(1 - kept / n, 0), 1);
}
