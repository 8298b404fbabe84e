/**
 * Composition and merging of whole delta sets (LT-SFT: θ = θ₀ + Δ_language + Δ_task). Deltas
 * compose only when they were made for the same base model, which their fingerprints tell.
 */
import type { HostTensor } from "../engine/ir/host.js";
import { weightsFingerprint } from "../util/fingerprint.js";
import { addDeltas, applyDelta, type SparseDelta, SparseDeltaError } from "./delta.js";
import type { SparseDeltaSet } from "./format.js";

export interface NamedDeltaSet {
  set: SparseDeltaSet;
  /** Where it came from (a file path), for errors. */
  file: string;
}

/** The common base model of the sets (null when none records it); throws when two differ. */
function commonBase(sets: readonly NamedDeltaSet[]): string | null {
  const known = sets.filter((s) => s.set.baseModel !== null);
  for (const s of known)
    if (s.set.baseModel !== known[0].set.baseModel)
      throw new SparseDeltaError(
        `${s.file}: made for a different base model (fingerprint ${s.set.baseModel}) than ${known[0].file} (${known[0].set.baseModel}); deltas compose only on the model they were trained from`,
      );
  return known.length ? known[0].set.baseModel : null;
}

/** The sum of several delta sets for one base model. */
export function composeDeltaSets(sets: readonly NamedDeltaSet[]): SparseDeltaSet {
  if (sets.length === 0) throw new SparseDeltaError("compose: no sparse deltas given");
  const baseModel = commonBase(sets);
  const sum = new Map<string, SparseDelta>();
  for (const { set, file } of sets)
    for (const [name, d] of set.deltas) {
      const prev = sum.get(name);
      sum.set(name, prev ? addDeltas(prev, d, `${file}: "${name}"`) : d);
    }
  return { deltas: sum, baseModel };
}

/**
 * The weights with a delta set added (scale 1) or taken away (scale −1). Throws when the set was
 * made for another base model (checked only for merging, on the weights before any change) or
 * names a weight the model lacks.
 */
export function mergeDeltaSet(weights: ReadonlyMap<string, HostTensor>, named: NamedDeltaSet, scale: 1 | -1 = 1): Map<string, HostTensor> {
  const { set, file } = named;
  if (scale === 1 && set.baseModel !== null) {
    const have = weightsFingerprint(weights);
    if (have !== set.baseModel)
      throw new SparseDeltaError(`${file}: made for a different base model (fingerprint ${set.baseModel}, this model's is ${have})`);
  }
  const out = new Map<string, HostTensor>();
  for (const [name, d] of set.deltas) {
    const w = weights.get(name);
    if (!w) throw new SparseDeltaError(`${file}: the model has no weight "${name}"`);
    out.set(name, applyDelta(w, d, scale, `${file}: "${name}"`));
  }
  return out;
}

/**
 * Σ_i w_i·Δ_i for delta sets of one base model (LT-SFT-style sums, task-vector negation with
 * w = −λ): per weight, the union of the positions, each value the weighted sum of the values
 * there, accumulated in float64 and rounded to f32 once. Positions stay even where the sum is 0.
 */
export function weightedDeltaSum(sets: readonly NamedDeltaSet[], weights: readonly number[]): SparseDeltaSet {
  if (sets.length === 0) throw new SparseDeltaError("merge: no sparse deltas given");
  if (weights.length !== sets.length) throw new SparseDeltaError(`merge: ${weights.length} weights for ${sets.length} sparse deltas`);
  const bad = weights.find((w) => !Number.isFinite(w));
  if (bad !== undefined) throw new SparseDeltaError(`merge: weights must be finite, got ${bad}`);
  const baseModel = commonBase(sets);
  const sums = new Map<string, { shape: readonly number[]; acc: Map<number, number>; from: string }>();
  sets.forEach(({ set, file }, k) => {
    for (const [name, d] of set.deltas) {
      let s = sums.get(name);
      if (!s) {
        s = { shape: d.shape, acc: new Map(), from: file };
        sums.set(name, s);
      } else if (s.shape.length !== d.shape.length || s.shape.some((n, i) => n !== d.shape[i]))
        throw new SparseDeltaError(`${file}: "${name}" is [${d.shape}], [${s.shape}] in ${s.from}`);
      for (let i = 0; i < d.indices.length; i++) s.acc.set(d.indices[i], (s.acc.get(d.indices[i]) ?? 0) + weights[k] * d.values[i]);
    }
  });
  const deltas = new Map<string, SparseDelta>();
  for (const [name, { shape, acc }] of sums) {
    const indices = Int32Array.from(acc.keys()).sort();
    deltas.set(name, { shape: [...shape], indices, values: Float32Array.from(indices, (p) => acc.get(p) as number) });
  }
  return { deltas, baseModel };
}
