/**
 * SNELL's kernelised low-rank merge and its competition-based sparsification, in the graph and
 * (float64) on the host. Math after ssfgunner/SNELL model/vision_transformer_timm.py
 * (KLoRA/SNELL/SNELLA.pathIntegrals and sparsify):
 *
 *   D[i, j] = Σ_h c_h · ‖P[h, i, :] − Q[h, j, :]‖₂,   c_h = coefficient · (−1)^h   (D is [in, out])
 *   SNELLA: D ← D + α · softmax(D / γ, over out) + β
 *   t = quantile(|D|, s) (torch.quantile: linear interpolation between order statistics)
 *   ΔWᵀ = D ⊙ m with m = sg(|D|) ⊙ 1[|D| > t] ("magnitude", the code) or 1[|D| > t] ("mask", the paper)
 *
 * The mask and the magnitude factor are not differentiated (the authors detach |D| before
 * F.threshold), so ∂L/∂D = m ⊙ ∂L/∂ΔWᵀ. The threshold follows the current D in every step: it
 * is read off a TopK of sg(|D|) inside the graph.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { constant, type Tensor } from "../../engine/trace/tensor.js";
import type { SparsifyMode } from "./config.js";

/** c_h = coefficient · (−1)^h for h = 0 … H−1 (the authors' shared_coeff_fc). */
export function coefficients(heads: number, coefficient: number): number[] {
  return Array.from({ length: heads }, (_, h) => coefficient * (h % 2 === 0 ? 1 : -1));
}

/**
 * ‖a − b‖₂ from the squared norm ‖a‖² + ‖b‖² − 2a·b (torch.cdist's matmul path), 0 with zero
 * gradient where that is ≤ 0 (torch.cdist's backward gives 0 at coincident points).
 */
function safeSqrt(sq: Tensor): Tensor {
  const pos = sq.gt(0);
  return pos.where(pos.where(sq, 1).sqrt(), 0);
}

/** D [in, out] from P [H, in, k] and Q [H, out, k]. */
export function kernelMatrix(p: Tensor, q: Tensor, coefs: readonly number[]): Tensor {
  const h = coefs.length;
  const pn = p.square().sum(-1, true); // [H, in, 1]
  const qn = q.square().sum(-1, true).transpose(); // [H, 1, out]
  const sq = pn.add(qn).sub(p.matmul(q.transpose()).mul(2));
  // In f64 (the interpreter's checks) the coefficients stay exact.
  const c =
    p.dtype === "f64"
      ? constant(hostTensor("f64", [h, 1, 1], Float64Array.from(coefs)))
      : constant(hostTensor("f32", [h, 1, 1], Float32Array.from(coefs)));
  return safeSqrt(sq).mul(c).sum(0);
}

/** SNELLA's D + α·softmax(D/γ over out) + β, with α, γ, β [1]. */
export function snellaTransform(d: Tensor, alpha: Tensor, gamma: Tensor, beta: Tensor): Tensor {
  return d.add(alpha.mul(d.div(gamma).softmax(-1))).add(beta);
}

/** Where the s-quantile of n values sits: v[lo] + frac·(v[lo+1] − v[lo]) (torch.quantile, linear). */
export function quantilePosition(s: number, n: number): { lo: number; frac: number } {
  const pos = s * (n - 1);
  const lo = Math.floor(pos);
  return { lo, frac: pos - lo };
}

/** Entries of an n-element layer kept at sparsity s, without ties: those above the quantile. */
export function keptCount(s: number, n: number): number {
  return n - 1 - quantilePosition(s, n).lo;
}

function applyMask(d: Tensor, absD: Tensor, t: Tensor, mode: SparsifyMode): Tensor {
  const keep = absD.gt(t);
  return d.mul(mode === "magnitude" ? keep.where(absD, 0) : keep.cast(d.dtype));
}

/**
 * D sparsified at a ratio known when the graph is built (SNELL): a TopK of k = lo + 2 smallest
 * or n − lo largest |D| (whichever is fewer) gives the two order statistics around the quantile.
 */
export function sparsifyStatic(d: Tensor, s: number, mode: SparsifyMode): Tensor {
  const [rows, cols] = d.shape as number[];
  const n = rows * cols;
  const absD = d.abs().stopGradient();
  const flat = absD.reshape([n]);
  const { lo, frac } = quantilePosition(s, n);
  const hi = Math.min(lo + 1, n - 1);
  let vLo: Tensor;
  let vHi: Tensor;
  if (lo + 2 <= n - lo) {
    const [asc] = flat.topk(Math.min(lo + 2, n), 0, false);
    vLo = asc.slice(0, lo, lo + 1);
    vHi = asc.slice(0, hi, hi + 1);
  } else {
    // Descending: ascending index a is at n − 1 − a.
    const [desc] = flat.topk(n - lo, 0, true);
    vLo = desc.slice(0, n - 1 - lo, n - lo);
    vHi = desc.slice(0, n - 1 - hi, n - hi);
  }
  const t = frac === 0 ? vLo : vLo.add(vHi.sub(vLo).mul(frac));
  return applyMask(d, absD, t, mode);
}

/**
 * D sparsified at a ratio fed as a [1] tensor (SNELLA's allocator changes it without a
 * recompile): |D| is sorted whole (TopK with k = n) and the order statistics are gathered at
 * lo = ⌊s·(n−1)⌋, computed in the graph.
 */
export function sparsifyDynamic(d: Tensor, ratio: Tensor, mode: SparsifyMode): Tensor {
  const [rows, cols] = d.shape as number[];
  const n = rows * cols;
  const absD = d.abs().stopGradient();
  const [asc] = absD.reshape([n]).topk(n, 0, false);
  const pos = ratio
    .stopGradient()
    .cast(d.dtype)
    .mul(n - 1);
  const lo = pos.floor();
  const frac = pos.sub(lo);
  const loI = lo.cast("i64");
  const hiI = loI.add(1).minimum(n - 1);
  const vLo = asc.gather(loI, 0);
  const vHi = asc.gather(hiI, 0);
  return applyMask(d, absD, vLo.add(vHi.sub(vLo).mul(frac)), mode);
}

// ---- host (float64), for merge() and the tests ----

/** D [in, out] as a float64 row-major array, by the direct distance (no norm expansion). */
export function kernelMatrixHost(p: HostTensor, q: HostTensor, coefs: readonly number[]): Float64Array {
  const [h, inF, k] = p.shape;
  const outF = q.shape[1];
  const P = p.data as Float32Array;
  const Q = q.data as Float32Array;
  const d = new Float64Array(inF * outF);
  for (let hh = 0; hh < h; hh++)
    for (let i = 0; i < inF; i++)
      for (let j = 0; j < outF; j++) {
        let s = 0;
        for (let c = 0; c < k; c++) {
          const v = P[(hh * inF + i) * k + c] - Q[(hh * outF + j) * k + c];
          s += v * v;
        }
        d[i * outF + j] += coefs[hh] * Math.sqrt(s);
      }
  return d;
}

/** SNELLA's transform on a host D [in, out]. */
export function snellaTransformHost(d: Float64Array, outF: number, alpha: number, gamma: number, beta: number): Float64Array {
  const out = new Float64Array(d.length);
  for (let i = 0; i < d.length / outF; i++) {
    const row = d.subarray(i * outF, (i + 1) * outF);
    let m = -Infinity;
    for (const v of row) m = Math.max(m, v / gamma);
    let z = 0;
    for (const v of row) z += Math.exp(v / gamma - m);
    for (let j = 0; j < outF; j++) out[i * outF + j] = row[j] + (alpha * Math.exp(row[j] / gamma - m)) / z + beta;
  }
  return out;
}

/** torch.quantile(|d|, s) (linear interpolation). */
export function quantileHost(d: Float64Array, s: number): number {
  const sorted = Float64Array.from(d, Math.abs).sort();
  const { lo, frac } = quantilePosition(s, sorted.length);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + frac * (sorted[hi] - sorted[lo]);
}

/** D sparsified on the host (s = null: dense, SNELL's KLoRA at ratio 0). */
export function sparsifyHost(d: Float64Array, s: number | null, mode: SparsifyMode): Float64Array {
  if (s === null) return Float64Array.from(d);
  const t = quantileHost(d, s);
  return Float64Array.from(d, (v) => (Math.abs(v) > t ? (mode === "magnitude" ? v * Math.abs(v) : v) : 0));
}
