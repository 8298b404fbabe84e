/** Helpers shared by the ONNX backend tests: fresh random inputs and tolerant comparison. */
import type { DType } from "../../ir/dtype.js";
import type { Graph } from "../../ir/graph.js";
import { f16ToF32, f32ToF16, type HostTensor, hostTensor } from "../../ir/host.js";
import { bindShape, type Shape } from "../../ir/shape.js";

export type Gen = (i: number) => number;

export const gens = {
  signed: () => Math.random() * 4 - 2,
  positive: () => 0.1 + Math.random() * 3,
  smallInt: () => Math.floor(Math.random() * 11) - 5,
  nonzeroInt: () => (Math.random() < 0.5 ? -1 : 1) * (1 + Math.floor(Math.random() * 5)),
  bool: () => (Math.random() < 0.5 ? 1 : 0),
};

/** Random tensor of `dtype` and concrete `shape`, values from `gen` (a default per dtype). */
export function randomTensor(dtype: DType, shape: readonly number[], gen?: Gen): HostTensor {
  let n = 1;
  for (const d of shape) n *= d;
  const g = gen ?? (dtype === "bool" ? gens.bool : dtype === "i32" || dtype === "i64" ? gens.smallInt : gens.signed);
  const vals = Array.from({ length: n }, (_, i) => g(i));
  if (dtype === "f16")
    return hostTensor(
      "f16",
      shape,
      Uint16Array.from(vals, (v) => f32ToF16(v)),
    );
  return hostTensor(dtype, shape, vals);
}

/** Random inputs for a traced graph, with symbolic dims bound by `binds`. */
export function randomInputs(g: Graph, binds: Record<string, number>, gensByInput: Record<string, Gen> = {}): HostTensor[] {
  return g.inputs.map((inp) => {
    const t = g.type(inp.id);
    return randomTensor(t.dtype, bindShape(t.shape as Shape, binds), gensByInput[inp.name]);
  });
}

function num(t: HostTensor, i: number): number {
  const d = t.data;
  if (d instanceof BigInt64Array) return Number(d[i]);
  if (t.dtype === "f16") return f16ToF32(d[i] as number);
  return d[i] as number;
}

export interface Tolerance {
  /** relative error allowed per element (default 1e-5 for f32, 1e-12 for f64, 1e-3 for f16). */
  rtol?: number;
  /** absolute slack as a fraction of the largest |reference| value in the tensor (default rtol/10). */
  scaleTol?: number;
}

/** Returns a description of the first mismatch, or null when `got` matches `want`. */
export function mismatch(got: HostTensor, want: HostTensor, tol: Tolerance = {}): string | null {
  if (got.dtype !== want.dtype) return `dtype ${got.dtype} vs ${want.dtype}`;
  if (got.shape.join(",") !== want.shape.join(",")) return `shape [${got.shape}] vs [${want.shape}]`;
  const n = want.data.length;
  const exact = want.dtype === "i32" || want.dtype === "i64" || want.dtype === "bool";
  const rtol = tol.rtol ?? (want.dtype === "f64" ? 1e-12 : want.dtype === "f16" ? 1e-3 : 1e-5);
  let maxAbs = 0;
  for (let i = 0; i < n; i++) maxAbs = Math.max(maxAbs, Math.abs(num(want, i)));
  const atol = (tol.scaleTol ?? rtol / 10) * maxAbs;
  for (let i = 0; i < n; i++) {
    const a = num(got, i);
    const b = num(want, i);
    if (exact ? a !== b : !(Math.abs(a - b) <= rtol * Math.abs(b) + atol || (Number.isNaN(a) && Number.isNaN(b)) || a === b)) {
      return `element ${i}: got ${a}, want ${b}`;
    }
  }
  return null;
}

export function show(t: HostTensor): string {
  return `${t.dtype}[${t.shape}] ${Array.from(t.data as ArrayLike<number | bigint>, String)
    .slice(0, 24)
    .join(" ")}`;
}
