/**
 * Sparse deltas on the host: the chosen entries of a base weight and what training added to
 * them. Merging adds them into the weight, unmerging subtracts them, and deltas for the same base
 * compose by addition (LT-SFT's θ₀ + Δ_language + Δ_task).
 */
import { type HostTensor, hostTensor } from "../engine/ir/host.js";

/** A bad sparse delta or density: the message names the file, tensor or field. */
export class SparseDeltaError extends Error {
  override readonly name = "SparseDeltaError";
}

export interface SparseDelta {
  /** The base weight's shape (its stored layout: [out, in] for Linear, [in, out] for Conv1D). */
  readonly shape: readonly number[];
  /** Flat row-major positions in that layout, strictly increasing. */
  readonly indices: Int32Array;
  /** What the delta adds at each position. */
  readonly values: Float32Array;
}

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Throws unless 0 < density ≤ 1. `what` names the flag or field. */
export function checkDensity(density: number, what: string): void {
  if (!(density > 0 && density <= 1)) throw new SparseDeltaError(`${what}: the density must be in (0, 1], got ${density}`);
}

/** Throws unless the indices are in range and strictly increasing (sorted, no duplicates). */
export function checkDelta(d: SparseDelta, where: string): void {
  const n = numel(d.shape);
  if (d.values.length !== d.indices.length)
    throw new SparseDeltaError(`${where}: ${d.indices.length} indices but ${d.values.length} values`);
  for (let i = 0; i < d.indices.length; i++) {
    const p = d.indices[i];
    if (p < 0 || p >= n) throw new SparseDeltaError(`${where}: index ${p} (entry ${i}) is out of range for a weight of ${n} entries`);
    if (i > 0 && p <= d.indices[i - 1])
      throw new SparseDeltaError(
        p === d.indices[i - 1]
          ? `${where}: index ${p} is duplicated (entries ${i - 1} and ${i})`
          : `${where}: indices must be increasing (entry ${i}: ${p} after ${d.indices[i - 1]})`,
      );
  }
}

/** A new weight: `w` plus `scale` × the delta (1 merges, −1 unmerges). Computed in f32. */
export function applyDelta(w: HostTensor, d: SparseDelta, scale = 1, where = "sparse delta"): HostTensor {
  if (w.shape.length !== d.shape.length || w.shape.some((s, i) => s !== d.shape[i]))
    throw new SparseDeltaError(`${where}: made for a weight of shape [${d.shape}], this one is [${w.shape}]`);
  const out = Float32Array.from(w.data as ArrayLike<number>);
  for (let i = 0; i < d.indices.length; i++) out[d.indices[i]] += scale * d.values[i];
  return hostTensor("f32", w.shape, out);
}

/** a + b: the union of their positions, values summed where both have one. */
export function addDeltas(a: SparseDelta, b: SparseDelta, where = "sparse deltas"): SparseDelta {
  if (a.shape.length !== b.shape.length || a.shape.some((s, i) => s !== b.shape[i]))
    throw new SparseDeltaError(`${where}: shapes differ ([${a.shape}] and [${b.shape}])`);
  const idx: number[] = [];
  const val: number[] = [];
  let i = 0;
  let j = 0;
  while (i < a.indices.length || j < b.indices.length) {
    const pa = i < a.indices.length ? a.indices[i] : Number.POSITIVE_INFINITY;
    const pb = j < b.indices.length ? b.indices[j] : Number.POSITIVE_INFINITY;
    if (pa === pb) {
      idx.push(pa);
      val.push(a.values[i++] + b.values[j++]);
    } else if (pa < pb) {
      idx.push(pa);
      val.push(a.values[i++]);
    } else {
      idx.push(pb);
      val.push(b.values[j++]);
    }
  }
  return { shape: [...a.shape], indices: Int32Array.from(idx), values: Float32Array.from(val) };
}

/**
 * k distinct positions of [0, n) drawn uniformly (Floyd's algorithm: k draws whatever n is), in
 * increasing order. `uniform` returns numbers in [0, 1).
 */
export function samplePositions(n: number, k: number, uniform: () => number): Int32Array {
  if (!(Number.isInteger(k) && k >= 0 && k <= n)) throw new SparseDeltaError(`cannot draw ${k} distinct positions of ${n}`);
  const chosen = new Set<number>();
  for (let j = n - k; j < n; j++) {
    const t = Math.floor(uniform() * (j + 1));
    chosen.add(chosen.has(t) ? j : t);
  }
  return Int32Array.from(chosen).sort();
}
