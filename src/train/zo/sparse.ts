/**
 * Sparse MeZO's per-tensor magnitude thresholds (Liu et al. 2024, arXiv 2402.15751; the authors'
 * code is not public, so this follows the paper's description: secondary). The mask
 * m = 1[|θ| ≤ h_l] perturbs and updates the small-magnitude entries of each tensor l.
 *
 * Choice (docs/methods/mezo.md): `sparsity` s ∈ [0, 1) is the share of each tensor's entries NOT
 * perturbed; h_l is the ⌈(1−s)·n⌉-th smallest |θ| of the tensor at setup (ties at h_l are all
 * perturbed), computed once from the weights training starts from and kept fixed (checkpoints
 * carry it). The mask itself is recomputed every step from the unperturbed θ_t, so entries that
 * grow past h_l stop moving, as in the paper's memory-efficient form (one scalar per layer, no
 * mask tensor). A tensor that is all zeros at setup (LoRA's B) gets h = +∞: every entry moves.
 */
import { TrainingArgsError } from "../schedule.js";

export class ZoSparsityError extends TrainingArgsError {}

/** Checks --zo-sparsity (the flag named in the error). */
export function checkSparsity(s: number, flag = "--zo-sparsity"): void {
  if (!(s >= 0 && s < 1)) throw new ZoSparsityError(`${flag} ${s}: want a share of entries left unperturbed in [0, 1)`);
}

/** k-th smallest (0-based) of a copy of `values` (quickselect; the input is left alone). */
function kthSmallest(values: Float32Array, k: number): number {
  const a = Float32Array.from(values, Math.abs);
  let lo = 0;
  let hi = a.length - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1];
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        const t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return a[k];
  }
  return a[k];
}

/** h for one tensor at sparsity s (see the file comment). */
export function magnitudeThreshold(values: Float32Array, s: number): number {
  checkSparsity(s);
  const n = values.length;
  if (n === 0) return Number.POSITIVE_INFINITY;
  if (values.every((v) => v === 0)) return Number.POSITIVE_INFINITY;
  const keep = Math.ceil((1 - s) * n);
  return kthSmallest(values, keep - 1);
}
