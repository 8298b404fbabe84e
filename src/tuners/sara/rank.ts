/**
 * SaRA's low-rank constraint λ·‖ΔW‖_* without an SVD in the graph (the engine has none): between
 * steps the controller decomposes the chosen layer's ΔW = U Σ Vᵀ on the host, and the step's
 * method loss is λ·⟨G, S⟩ with G = U Vᵀ read at the layer's indices, a fixed input. At the step's
 * ΔW that is λ·Σσ = λ·‖ΔW‖_* in value and λ·(U Vᵀ)[indices] in gradient: the nuclear norm's
 * (sub)gradient restricted to the trained entries, exactly what autograd through torch.svd gives.
 */
import { matrix } from "../../linalg/matrix.js";
import { svd } from "../../linalg/svd.js";
import { Rng } from "../../util/rng.js";

/** The layer (index into the targets) whose ΔW step `step` (1-based) regularises: uniform, stateless so resume is exact. */
export function rankLayerAt(step: number, layers: number): number {
  return Math.floor(new Rng((step * 0x9e3779b1) >>> 0).next() * layers);
}

/**
 * ‖ΔW‖_* and (U Vᵀ) at `indices` for ΔW of `shape` (stored layout; the norm does not depend on
 * it) with `values` at the flat positions `indices`. Directions of singular values at round-off
 * level (relative 1e-6, f32 values) count as zero: the subgradient 0 there.
 */
export function nuclearDirection(
  shape: readonly [number, number],
  indices: Int32Array,
  values: Float32Array,
): { norm: number; grad: Float32Array } {
  const [rows, cols] = shape;
  const d = matrix(rows, cols);
  indices.forEach((p, j) => {
    d.data[p] = values[j];
  });
  const grad = new Float32Array(indices.length);
  const { u, s, v } = svd(d);
  const k = s.length;
  const tol = (s[0] ?? 0) * 1e-6;
  let norm = 0;
  const kept: number[] = [];
  for (let i = 0; i < k; i++) {
    norm += s[i];
    if (s[i] > tol && s[i] > 0) kept.push(i);
  }
  indices.forEach((p, j) => {
    const r = Math.floor(p / cols);
    const c = p - r * cols;
    let g = 0;
    for (const i of kept) g += u.data[r * u.cols + i] * v.data[c * v.cols + i];
    grad[j] = g;
  });
  return { norm, grad };
}
