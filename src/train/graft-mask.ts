/**
 * Skill localisation by grafting (Panigrahi et al. 2023, arXiv 2302.06600;
 * abhishekpanigrahi1996/Skill-Localization-by-grafting src/graft_trainer.py): the host
 * arithmetic of the graft mask, pure and unit-tested. With τ = θ_ft − θ_pre per graftable
 * tensor, the base patch γ0 and real-valued scores S,
 *
 *   γ(S) = γ0 + (1 − 2γ0) ⊙ σ(S − b)        (`create_binary_masks`, `interpolate_model`)
 *
 * and the graft is θ_pre + round(γ(S)) ⊙ τ. The scores move by plain SGD on ∂L/∂S, which the
 * chain rule gives from the dense ∂L/∂θ at θ_pre + γ(S) ⊙ τ (`train_graft`):
 *
 *   ∂L/∂S = (∂L/∂θ ⊙ τ) ⊙ (1 − 2γ0) ⊙ σ(S − b) ⊙ (1 − σ(S − b)).
 */
import { type SparseDelta, SparseDeltaError } from "../sparse/delta.js";
import { selectLargestChanges } from "./lt-sft-select.js";

/** One graftable tensor: θ_pre and τ = θ_ft − θ_pre, flat in the weight's stored layout. */
export interface GraftTensor {
  /** The base weight's name ("model.layers.0.self_attn.q_proj.weight"). */
  readonly name: string;
  readonly shape: readonly number[];
  readonly pre: Float32Array;
  readonly tau: Float32Array;
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

/**
 * Entries of the base patch: k = ⌊s · N⌋ over all N graftable entries (the authors' int(s · Σ numel)).
 * `flag` names the option in errors.
 */
export function graftCount(sparsity: number, total: number, flag = "--sparsity"): number {
  if (!(sparsity > 0 && sparsity <= 1)) throw new SparseDeltaError(`${flag}: the sparsity must be in (0, 1], got ${sparsity}`);
  const k = Math.floor(sparsity * total);
  if (k < 1) throw new SparseDeltaError(`${flag} ${sparsity} keeps no entry of the ${total} graftable ones (⌊s·N⌋ = 0)`);
  return k;
}

/**
 * The base patch γ0 ("highest_movement", `create_basepatch`): 1 at the k entries with the largest
 * |τ| over all graftable tensors at once (one global threshold), 0 elsewhere. Exactly k entries:
 * ties at the threshold are taken in tensor order, then position order (the authors' strict
 * `> threshold` keeps fewer than k when the k-th value is tied).
 */
export function basePatch(tensors: readonly GraftTensor[], k: number): Uint8Array[] {
  const chosen = selectLargestChanges(
    tensors.map((t) => ({ key: t.name, change: t.tau })),
    k,
  );
  return tensors.map((t) => {
    const m = new Uint8Array(t.tau.length);
    for (const p of chosen.get(t.name) ?? []) m[p] = 1;
    return m;
  });
}

/** γ(S) of one entry. */
export function gammaOf(gamma0: number, score: number, bias: number): number {
  const s = sigmoid(score - bias);
  return gamma0 + (1 - 2 * gamma0) * s;
}

/**
 * Whether round(γ) = 1, i.e. γ > 0.5 (torch.round rounds 0.5 to even, 0): for γ0 = 0 when
 * S > b, for γ0 = 1 when S < b. Compared on S so no sigmoid rounding can flip an entry.
 */
export function inGraft(gamma0: number, score: number, bias: number): boolean {
  return gamma0 ? score < bias : score > bias;
}

/** θ_pre + γ(S) ⊙ τ, or with `rounded` θ_pre + round(γ(S)) ⊙ τ (computed in f64, stored f32). */
export function interpolate(t: GraftTensor, gamma0: Uint8Array, scores: Float32Array, bias: number, rounded: boolean): Float32Array {
  const out = new Float32Array(t.pre.length);
  for (let i = 0; i < out.length; i++) {
    const g = rounded ? (inGraft(gamma0[i], scores[i], bias) ? 1 : 0) : gammaOf(gamma0[i], scores[i], bias);
    out[i] = g === 0 ? t.pre[i] : t.pre[i] + g * t.tau[i];
  }
  return out;
}

/**
 * One mask update, in place: S ← S − lr · (ḡ ⊙ τ) ⊙ (1 − 2γ0) ⊙ σ(S − b) ⊙ (1 − σ(S − b)), where
 * ḡ is ∂L/∂θ at θ_pre + γ(S) ⊙ τ averaged over the batches (the authors add lr · ∂L/∂θ ⊙ τ per
 * batch and divide by the batch count: the same sum).
 */
export function updateScores(
  scores: Float32Array,
  gamma0: Uint8Array,
  meanGrad: ArrayLike<number>,
  tau: Float32Array,
  lr: number,
  bias: number,
): void {
  for (let i = 0; i < scores.length; i++) {
    const s = sigmoid(scores[i] - bias);
    scores[i] = scores[i] - lr * meanGrad[i] * tau[i] * (1 - 2 * gamma0[i]) * s * (1 - s);
  }
}

/** The graft as a sparse delta per tensor: the entries with round(γ) = 1, valued τ. */
export function graftDelta(t: GraftTensor, gamma0: Uint8Array, scores: Float32Array, bias: number): SparseDelta {
  const idx: number[] = [];
  for (let i = 0; i < scores.length; i++) if (inGraft(gamma0[i], scores[i], bias)) idx.push(i);
  return { shape: [...t.shape], indices: Int32Array.from(idx), values: Float32Array.from(idx, (i) => t.tau[i]) };
}
