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

/** The sum of several delta sets for one base model. */
export function composeDeltaSets(sets: readonly NamedDeltaSet[]): SparseDeltaSet {
  if (sets.length === 0) throw new SparseDeltaError("compose: no sparse deltas given");
  const known = sets.filter((s) => s.set.baseModel !== null);
  for (const s of known)
    if (s.set.baseModel !== known[0].set.baseModel)
      throw new SparseDeltaError(
        `${s.file}: made for a different base model (fingerprint ${s.set.baseModel}) than ${known[0].file} (${known[0].set.baseModel}); deltas compose only on the model they were trained from`,
      );
  const sum = new Map<string, SparseDelta>();
  for (const { set, file } of sets)
    for (const [name, d] of set.deltas) {
      const prev = sum.get(name);
      sum.set(name, prev ? addDeltas(prev, d, `${file}: "${name}"`) : d);
    }
  return { deltas: sum, baseModel: known.length ? known[0].set.baseModel : null };
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
