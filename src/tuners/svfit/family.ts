/**
 * What SVFit, KaSA and LoLDU share: each writes its update as a delta on the ORIGINAL base weight,
 * ΔW = L·diag(c)·R with frozen factors L [out, k], R [k, in] stored in the adapter, so a saved
 * adapter applied to the unmodified base reproduces the trained model (no base edits). The
 * forward computes the delta as low-rank products on x; only merge() materialises ΔW.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { type Matrix, matrix } from "../../util/linalg.js";
import { PeftConfigError } from "../config.js";
import type { LoraLayer } from "../lora/layers.js";
import { type TargetSpec, targetedLinears } from "../targets.js";
import type { ModelInfo } from "../tuner.js";

/** A targeted linear layer (LoRA's layer record, so LoRA's weight-layout helpers apply). */
export type FamilyLayer = LoraLayer;

/** The linear layers a config targets (PEFT's rules; LoRA's per-architecture defaults). */
export function familyLayers(info: ModelInfo, spec: TargetSpec, method: string): FamilyLayer[] {
  return targetedLinears(info, spec, `${method} config`).map((l) => ({ ...l, kind: "linear", r: 0, scaling: 1 }));
}

/** Refuses a rank the layer cannot hold (one line naming the layer). */
export function checkRank(method: string, l: FamilyLayer, r: number, field = "r"): void {
  const k = Math.min(l.inFeatures, l.outFeatures);
  if (r > k)
    throw new PeftConfigError(`${method}: ${field} = ${r} exceeds min(out, in) = ${k} of "${l.key}" [${l.outFeatures}x${l.inFeatures}]`);
}

/** Columns `from`…`from+n−1` of an [m, k] matrix as an f32 [m, n] tensor (U → U_r). */
export function columns(a: Matrix, from: number, n: number): HostTensor {
  const out = new Float32Array(a.rows * n);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < n; j++) out[i * n + j] = a.data[i * a.cols + from + j];
  return hostTensor("f32", [a.rows, n], out);
}

/** Columns `from`…`from+n−1` of an [m, k] matrix, transposed: an f32 [n, m] tensor (V → Vᵀ rows). */
export function columnsT(a: Matrix, from: number, n: number): HostTensor {
  const out = new Float32Array(n * a.rows);
  for (let j = 0; j < n; j++) for (let i = 0; i < a.rows; i++) out[j * a.rows + i] = a.data[i * a.cols + from + j];
  return hostTensor("f32", [n, a.rows], out);
}

export function vector(values: ArrayLike<number>): HostTensor {
  return hostTensor("f32", [values.length], Float32Array.from(values));
}

/** x·Rᵀ·diag(c)·Lᵀ for x [..., in], R [k, in], c [k], L [out, k]: the delta's output, never forming ΔW. */
export function lowRankApply(x: Tensor, right: Tensor, coef: Tensor, left: Tensor): Tensor {
  return x.matmul(right.transpose()).mul(coef).matmul(left.transpose());
}

/** L·diag(c)·R in float64 ([out, in]) from f32 tensors. */
export function lowRankDelta(left: HostTensor, coef: ArrayLike<number>, right: HostTensor): Matrix {
  const [out, k] = left.shape;
  const inF = right.shape[1];
  const l = left.data as Float32Array;
  const r = right.data as Float32Array;
  const d = matrix(out, inF);
  for (let o = 0; o < out; o++)
    for (let j = 0; j < k; j++) {
      const v = l[o * k + j] * coef[j];
      if (v === 0) continue;
      for (let i = 0, at = o * inF, rj = j * inF; i < inF; i++) d.data[at + i] += v * r[rj + i];
    }
  return d;
}

/** The adapter tensor `key`, or a one-line error naming it. */
export function need(method: string, tensors: ReadonlyMap<string, HostTensor>, key: string): HostTensor {
  const t = tensors.get(key);
  if (!t) throw new PeftConfigError(`${method}: the adapter has no tensor "${key}"`);
  return t;
}

export const f32 = (t: HostTensor): Float32Array => t.data as Float32Array;
