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
 * found inside the graph by bisection over sg(|D|) (orderStatistics).
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
 * Halvings of the bisection. From [−max, max], 40 leave an interval of 2⁻³⁹·max: below one f32
 * ulp of any threshold ≥ 2⁻¹⁵·max, so there the result is exact (it is the torch.quantile
 * threshold); a smaller threshold (a ratio of roughly 1e−4 or less) may treat two values closer
 * than 2⁻³⁹·max as tied. f64 (the interpreter's checks): 64.
 */
const BISECTIONS = { f32: 40, f64: 64 } as const;

/**
 * The order statistics v[lo] and v[lo+1] (ascending, 0-based) of |D| ≥ 0, by bisection on the
 * value: b keeps count(|D| ≤ b) ≥ lo + 1, a keeps it below; each halving is one compare and one
 * count over the layer; once the interval holds one value, v[lo] is the largest |D| ≤ b. ORT's TopK
 * with k ≈ n/2 costs ~230 ms on 176k entries where this costs ~15 ms. `lo` is a scalar of
 * countType(n): counts are summed in floats (ORT's i64 ReduceSum is ~25× slower) while they are
 * exact there.
 */
function orderStatistics(abs: Tensor, lo: Tensor): { vLo: Tensor; vHi: Tensor } {
  const max = abs.max();
  let a = max.neg();
  let b = max;
  const need = lo.add(1);
  const count = (x: Tensor) => abs.le(x).cast(lo.dtype).sum();
  const steps = abs.dtype === "f64" ? BISECTIONS.f64 : BISECTIONS.f32;
  for (let i = 0; i < steps; i++) {
    const mid = a.add(b).mul(0.5);
    const enough = count(mid).ge(need);
    b = enough.where(mid, b);
    a = enough.where(a, mid);
  }
  const vLo = abs.le(b).where(abs, -1).max();
  // v[lo+1]: v[lo] again when it is tied, else the least |D| above b (max|D| when none is).
  const next = abs.gt(b).where(abs, max).neg().max().neg();
  const vHi = count(b).ge(lo.add(2)).where(vLo, next);
  return { vLo, vHi };
}

/** The dtype counts over n entries are exact in: the float type while n < 2²⁴ (f32), else i64. */
function countType(d: Tensor, n: number): "f32" | "f64" | "i64" {
  if (d.dtype === "f64") return "f64";
  return n < 2 ** 24 ? "f32" : "i64";
}

function sparsifyAt(d: Tensor, lo: Tensor, frac: Tensor | number, mode: SparsifyMode): Tensor {
  const [rows, cols] = d.shape as number[];
  const absD = d.abs().stopGradient();
  const { vLo, vHi } = orderStatistics(absD.reshape([rows * cols]), lo);
  const t = frac === 0 ? vLo : vLo.add(vHi.sub(vLo).mul(frac));
  return applyMask(d, absD, t, mode);
}

/** D sparsified at a ratio known when the graph is built (SNELL): lo and frac are constants. */
export function sparsifyStatic(d: Tensor, s: number, mode: SparsifyMode): Tensor {
  const [rows, cols] = d.shape as number[];
  const { lo, frac } = quantilePosition(s, rows * cols);
  const type = countType(d, rows * cols);
  const at =
    type === "i64" ? hostTensor("i64", [], [lo]) : hostTensor(type, [], type === "f64" ? Float64Array.of(lo) : Float32Array.of(lo));
  return sparsifyAt(d, constant(at), frac, mode);
}

/**
 * D sparsified at a ratio fed as a [1] tensor (SNELLA's allocator changes it without a
 * recompile): lo = ⌊s·(n−1)⌋ and frac are computed in the graph.
 */
export function sparsifyDynamic(d: Tensor, ratio: Tensor, mode: SparsifyMode): Tensor {
  const [rows, cols] = d.shape as number[];
  const pos = ratio
    .stopGradient()
    .cast(d.dtype)
    .reshape([])
    .mul(rows * cols - 1);
  const lo = pos.floor();
  return sparsifyAt(d, lo.cast(countType(d, rows * cols)), pos.sub(lo), mode);
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
