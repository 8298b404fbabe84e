/**
 * The orthogonal blocks of OFT and BOFT, built in the graph from their parameters (so gradients
 * flow through them) and on the host in float64 (merging, tests). Follows PEFT 0.20.0:
 * tuners/oft/layer.py OFTRotationModule (_pytorch_skew_symmetric, _cayley_batch, _project_batch)
 * and tuners/boft/layer.py BOFTLayer.cayley_batch.
 */

import type { DType } from "../../engine/ir/dtype.js";
import { hostTensor } from "../../engine/ir/host.js";
import { concat, constant, type Tensor } from "../../engine/trace/tensor.js";

/** Position of (i, j), i < j, in torch.triu_indices(b, b, 1) order (row-major upper triangle). */
export function packedIndex(i: number, j: number, b: number): number {
  return i * b - (i * (i + 1)) / 2 + (j - i - 1);
}

export function identity(b: number, dtype: DType): Tensor {
  const d = new Float64Array(b * b);
  for (let i = 0; i < b; i++) d[i * b + i] = 1;
  return constant(hostTensor(dtype, [b, b], dtype === "f64" ? d : Float32Array.from(d)));
}

/**
 * Q = U − Uᵀ with U's strict upper triangle filled from vec [N, b(b−1)/2] (OFT's packed oft_R):
 * [N, b, b]. Two gathers from vec padded with one zero.
 */
export function skewFromPacked(vec: Tensor, b: number): Tensor {
  const n = (b * (b - 1)) / 2;
  const up = new BigInt64Array(b * b).fill(BigInt(n));
  const lo = new BigInt64Array(b * b).fill(BigInt(n));
  for (let i = 0; i < b; i++)
    for (let j = i + 1; j < b; j++) {
      up[i * b + j] = BigInt(packedIndex(i, j, b));
      lo[j * b + i] = BigInt(packedIndex(i, j, b));
    }
  const padded = vec.pad([0, 0, 0, 1]);
  const idx = (a: BigInt64Array) => constant(hostTensor("i64", [b * b], a as unknown as number[]));
  const rows = vec.dim(0);
  return padded
    .gather(idx(up), 1)
    .sub(padded.gather(idx(lo), 1))
    .reshape([rows, b, b]);
}

/**
 * PEFT ≥ 0.18's truncated Cayley–Neumann series for R ≈ (I + Q)(I − Q)⁻¹:
 * terms ≤ 1: I; 2: I + 2Q; ≥ 3: I + 2Q + 2Q² + 2Q³ + … + 2Q^(terms−2) + Q^max(3, terms−1)
 * (the last power weighted 1; PEFT < 0.18 weighted it 2).
 */
export function cayleyNeumann(q: Tensor, terms: number): Tensor {
  const b = q.dim(-1);
  const eye = identity(b, q.dtype);
  if (terms <= 1) return eye.add(q.mul(0));
  let r = eye.add(q.mul(2));
  if (terms <= 2) return r;
  let p = q.matmul(q);
  r = r.add(p.mul(2));
  for (let k = 3; k < terms - 1; k++) {
    p = p.matmul(q);
    r = r.add(p.mul(2));
  }
  return r.add(p.matmul(q));
}

/**
 * The exact Cayley transform R = (I − Q)(I + Q)⁻¹ of skew-symmetric blocks Q [N, b, b]: what
 * torch.linalg.solve(I + Q, I − Q, left=False) gives. Gauss–Jordan on [I + Q | I − Q], unrolled
 * over the b columns, yields (I + Q)⁻¹(I − Q), the same matrix (both factors are functions of Q,
 * so they commute). No pivoting is needed: I + Q has symmetric part I, so every pivot is ≥ 1.
 */
export function cayleyExact(q: Tensor): Tensor {
  const b = q.dim(-1);
  const eye = identity(b, q.dtype);
  let m = concat([eye.add(q), eye.sub(q)], -1);
  for (let k = 0; k < b; k++) {
    const row = m.slice(-2, k, k + 1);
    const pivotRow = row.div(row.slice(-1, k, k + 1));
    const e = new Float64Array(b);
    e[k] = 1;
    // Subtracting (column k − e_k) ⊗ pivotRow clears column k and divides row k by its pivot.
    const col = m.slice(-1, k, k + 1).sub(constant(hostTensor(q.dtype, [b, 1], q.dtype === "f64" ? e : Float32Array.from(e))));
    m = m.sub(col.mul(pivotRow));
  }
  return m.slice(-1, b, 2 * b);
}

/**
 * COFT's projection (PEFT's _project_batch): each block's Q is scaled back onto the Frobenius
 * ball of radius eps/√N (N = stored blocks) when it leaves it. PEFT writes the projected value
 * into the parameter under no_grad before using it, so the gradient passes straight through.
 */
export function coftProject(vec: Tensor, eps: number): Tensor {
  const radius = eps / Math.sqrt(vec.dim(0));
  // ‖Q‖_F of Q = U − Uᵀ is √2 · ‖vec‖.
  const norm = vec.square().sum(-1, true).mul(2).sqrt();
  const scale = norm.le(radius).where(1, norm.maximum(1e-30).reciprocal().mul(radius));
  return vec.add(vec.mul(scale).sub(vec).stopGradient());
}

/** x [..., nBlocks·b] with each consecutive b-slice multiplied on the right by its block of r [nBlocks or 1, b, b]. */
export function rotateBlocks(x: Tensor, r: Tensor, nBlocks: number): Tensor {
  const b = r.dim(-1);
  const lead = x.shape.slice(0, -1);
  return x
    .reshape([...lead, nBlocks, 1, b])
    .matmul(r)
    .reshape([...x.shape]);
}

// ---- host, float64 ----

/** Blocks as [N][b*b] row-major Float64Arrays. */
export type Blocks = Float64Array[];

export function hostSkewFromPacked(vec: ArrayLike<number>, rows: number, b: number): Blocks {
  const n = (b * (b - 1)) / 2;
  const out: Blocks = [];
  for (let r = 0; r < rows; r++) {
    const q = new Float64Array(b * b);
    for (let i = 0; i < b; i++)
      for (let j = i + 1; j < b; j++) {
        const v = vec[r * n + packedIndex(i, j, b)];
        q[i * b + j] = v;
        q[j * b + i] = -v;
      }
    out.push(q);
  }
  return out;
}

export function hostMatmul(a: Float64Array, c: Float64Array, b: number): Float64Array {
  const out = new Float64Array(b * b);
  for (let i = 0; i < b; i++)
    for (let k = 0; k < b; k++) {
      const v = a[i * b + k];
      if (v === 0) continue;
      for (let j = 0; j < b; j++) out[i * b + j] += v * c[k * b + j];
    }
  return out;
}

export function hostCayleyNeumann(q: Float64Array, b: number, terms: number): Float64Array {
  const r = new Float64Array(b * b);
  for (let i = 0; i < b; i++) r[i * b + i] = 1;
  const add = (p: Float64Array, w: number) => {
    for (let i = 0; i < r.length; i++) r[i] += w * p[i];
  };
  if (terms <= 1) return r;
  add(q, 2);
  if (terms <= 2) return r;
  let p = hostMatmul(q, q, b);
  add(p, 2);
  for (let k = 3; k < terms - 1; k++) {
    p = hostMatmul(p, q, b);
    add(p, 2);
  }
  add(hostMatmul(p, q, b), 1);
  return r;
}

/** (I − Q)(I + Q)⁻¹ by Gauss–Jordan with partial pivoting, in float64. */
export function hostCayleyExact(q: Float64Array, b: number): Float64Array {
  const w = 2 * b;
  const m = new Float64Array(b * w);
  for (let i = 0; i < b; i++)
    for (let j = 0; j < b; j++) {
      const id = i === j ? 1 : 0;
      m[i * w + j] = id + q[i * b + j];
      m[i * w + b + j] = id - q[i * b + j];
    }
  for (let k = 0; k < b; k++) {
    let p = k;
    for (let i = k + 1; i < b; i++) if (Math.abs(m[i * w + k]) > Math.abs(m[p * w + k])) p = i;
    if (p !== k)
      for (let j = 0; j < w; j++) {
        const t = m[k * w + j];
        m[k * w + j] = m[p * w + j];
        m[p * w + j] = t;
      }
    const piv = m[k * w + k];
    for (let j = 0; j < w; j++) m[k * w + j] /= piv;
    for (let i = 0; i < b; i++) {
      if (i === k) continue;
      const f = m[i * w + k];
      if (f === 0) continue;
      for (let j = 0; j < w; j++) m[i * w + j] -= f * m[k * w + j];
    }
  }
  const out = new Float64Array(b * b);
  for (let i = 0; i < b; i++) for (let j = 0; j < b; j++) out[i * b + j] = m[i * w + b + j];
  return out;
}

/** The packed vectors after COFT's projection (float64). */
export function hostCoftProject(vec: ArrayLike<number>, rows: number, n: number, eps: number): Float64Array {
  const out = Float64Array.from(vec);
  const radius = eps / Math.sqrt(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += out[r * n + i] ** 2;
    const norm = Math.sqrt(2 * s);
    if (norm <= radius) continue;
    for (let i = 0; i < n; i++) out[r * n + i] *= radius / norm;
  }
  return out;
}
