/**
 * LT-SFT's selection (Ansell et al. 2022, cambridgeltl/composable-sft src/sft/lt_sft.py,
 * `unfreeze_k_most_changed_params`): after full fine-tuning, the K entries whose value moved
 * most from θ₀, ranked by |θ₁ − θ₀| over every targeted weight at once (one global threshold,
 * not a quota per layer). Pure host logic.
 */
import { SparseDeltaError } from "../sparse/delta.js";

export interface LayerChange {
  /** The layer's adapter key ("model.layers.0.self_attn.q_proj"). */
  readonly key: string;
  /** θ₁ − θ₀ over the whole weight, flat row-major. */
  readonly change: ArrayLike<number>;
}

/** |x|, with NaN ranked below everything (a diverged entry is never chosen first). */
const magnitude = (x: number) => (Number.isNaN(x) ? -1 : Math.abs(x));

/**
 * The K globally largest |change| as increasing positions per layer (layers with none are left
 * out). The threshold is the K-th largest magnitude, as the authors' np.partition; where their
 * `>= thresh` can keep more than K on ties, the tied entries here are taken in layer order, then
 * position order, so exactly K are kept.
 */
export function selectLargestChanges(layers: readonly LayerChange[], k: number): Map<string, Int32Array> {
  let n = 0;
  for (const l of layers) n += l.change.length;
  if (!(Number.isInteger(k) && k >= 1 && k <= n))
    throw new SparseDeltaError(`lt_sft: cannot keep ${k} entries of the ${n} in the targeted weights`);
  const all = new Float32Array(n);
  let o = 0;
  for (const l of layers) for (let i = 0; i < l.change.length; i++) all[o++] = magnitude(l.change[i]);
  all.sort();
  const threshold = all[n - k];
  let above = 0;
  for (let i = n - k + 1; i < n; i++) if (all[i] > threshold) above++;
  let ties = k - above;
  const out = new Map<string, Int32Array>();
  for (const l of layers) {
    const chosen: number[] = [];
    for (let i = 0; i < l.change.length; i++) {
      const m = Math.fround(magnitude(l.change[i]));
      if (m > threshold || (m === threshold && ties-- > 0)) chosen.push(i);
    }
    if (chosen.length) out.set(l.key, Int32Array.from(chosen));
  }
  return out;
}
