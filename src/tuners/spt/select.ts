/**
 * SPT's allocation (ziplab/SPT, engine.py get_sensitivity), on the host: the τ most sensitive
 * entries over every targeted matrix (sensitivity Σ over calibration batches of (∂L/∂W)²) are
 * chosen; a matrix holding n_s of them gets a LoRA module when n_s ≥ n_struct/α (n_struct =
 * r·(in + out), its LoRA's size) and otherwise trains those n_s entries. τ is the one whose total
 * cost (LoRA sizes plus single entries) comes closest to the budget; the authors scan τ in steps
 * of 0.02M, here a binary search finds it exactly (ties to the larger τ, as their scan keeps the
 * later one).
 */

export interface SensitiveMatrix {
  key: string;
  /** Sensitivity per entry, in the weight's stored layout. */
  scores: ArrayLike<number>;
  /** The LoRA module's size for this matrix. */
  structuredSize: number;
}

export interface Allocation {
  /** Matrices given a LoRA module. */
  structured: string[];
  /** Per other matrix with entries chosen: their positions (increasing). */
  entries: Map<string, Int32Array>;
  /** What the allocation trains. */
  total: number;
  /** The number of sensitive entries it was cut at. */
  tau: number;
}

/** Total cost and per-matrix counts when every entry scoring ≥ v is sensitive. */
function costAt(sorted: Float32Array[], ms: readonly SensitiveMatrix[], v: number, alpha: number): { total: number; counts: number[] } {
  const counts = sorted.map((s) => {
    // s is descending: count of entries ≥ v.
    let lo = 0;
    let hi = s.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (s[mid] >= v) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  });
  let total = 0;
  ms.forEach((m, i) => {
    total += counts[i] >= m.structuredSize / alpha ? m.structuredSize : counts[i];
  });
  return { total, counts };
}

export function allocate(ms: readonly SensitiveMatrix[], budget: number, alpha: number): Allocation {
  // Compared in float32 throughout, so the cut and the chosen positions agree exactly.
  const scores = ms.map((m) => Float32Array.from(m.scores, (x) => (Number.isFinite(x) ? x : 0)));
  const sorted = scores.map((s) => s.slice().sort().reverse());
  // Candidate thresholds: every distinct score, descending (the τ-th largest score cuts at τ).
  const all = new Float32Array(sorted.reduce((n, s) => n + s.length, 0));
  let at = 0;
  for (const s of sorted) {
    all.set(s, at);
    at += s.length;
  }
  all.sort().reverse();
  // Largest index t (threshold all[t]) whose cost stays ≤ budget; the cost grows with t.
  let lo = -1;
  let hi = all.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (costAt(sorted, ms, all[mid], alpha).total <= budget) lo = mid;
    else hi = mid - 1;
  }
  const below = lo >= 0 ? costAt(sorted, ms, all[lo], alpha) : { total: 0, counts: ms.map(() => 0) };
  const above = lo + 1 < all.length ? costAt(sorted, ms, all[lo + 1], alpha) : null;
  const pickAbove = above !== null && Math.abs(above.total - budget) <= Math.abs(budget - below.total);
  const chosen = pickAbove ? (above as typeof below) : below;
  const v = pickAbove ? all[lo + 1] : lo >= 0 ? all[lo] : Number.POSITIVE_INFINITY;
  const structured: string[] = [];
  const entries = new Map<string, Int32Array>();
  ms.forEach((m, i) => {
    const n = chosen.counts[i];
    if (n === 0) return;
    if (n >= m.structuredSize / alpha) {
      structured.push(m.key);
      return;
    }
    const pos: number[] = [];
    const sc = scores[i];
    for (let j = 0; j < sc.length; j++) if (sc[j] >= v) pos.push(j);
    entries.set(m.key, Int32Array.from(pos));
  });
  return { structured, entries, total: chosen.total, tau: chosen.counts.reduce((a, b) => a + b, 0) };
}
