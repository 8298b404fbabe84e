import { BackendError, DTypeError } from "../../errors.js";
import { type DType, dtypeOfArray } from "../../ir/dtype.js";
import { f16ToF32, f32ToF16, type HostTensor } from "../../ir/host.js";

/**
 * A value inside the interpreter. Every dtype is held as JS numbers in a Float64Array so kernels
 * need one code path: f16 decoded, bool as 0/1, ints as integral doubles (exact below 2^53).
 * `dtype` is the graph's dtype, so an "f32" value in f64 precision simply holds unrounded doubles.
 * Values are immutable once made, which is what lets identity ops share buffers.
 */
export interface Val {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: Float64Array;
  /** Exact i64 storage when the value came straight from an input or constant (seeds may exceed 2^53). */
  readonly big?: BigInt64Array;
}

export function val(dtype: DType, shape: readonly number[], data: Float64Array, big?: BigInt64Array): Val {
  return big ? { dtype, shape, data, big } : { dtype, shape, data };
}

/** Converts a host tensor; the caller has already checked dtype and length. Never mutates `t`. */
export function hostToVal(t: HostTensor, dtype: DType = t.dtype): Val {
  const d = t.data;
  const shape = [...t.shape];
  if (d instanceof Float64Array) return val(dtype, shape, d);
  if (d instanceof BigInt64Array) {
    const out = new Float64Array(d.length);
    for (let i = 0; i < d.length; i++) out[i] = Number(d[i]);
    return val(dtype, shape, out, d);
  }
  if (t.dtype === "f16") {
    const out = new Float64Array(d.length);
    for (let i = 0; i < d.length; i++) out[i] = f16ToF32(d[i]);
    return val(dtype, shape, out);
  }
  if (t.dtype === "bool") {
    const out = new Float64Array(d.length);
    for (let i = 0; i < d.length; i++) out[i] = d[i] ? 1 : 0;
    return val(dtype, shape, out);
  }
  return val(dtype, shape, new Float64Array(d as Float32Array));
}

/** Checks that a host tensor's storage matches its declared dtype (object literals can lie). */
export function checkStorage(t: HostTensor, where: string): void {
  const actual = dtypeOfArray(t.data);
  if (actual !== t.dtype) {
    throw new DTypeError(`${where}: dtype ${t.dtype} cannot be stored in a ${t.data.constructor.name}`);
  }
}

/**
 * Converts to a fresh host tensor (never aliasing an input's or constant's buffer).
 * f32 values come back as f32 in f32 precision and as f64 in f64 precision.
 */
export function valToHost(v: Val, f64: boolean): HostTensor {
  const shape = [...v.shape];
  const d = v.data;
  switch (v.dtype) {
    case "f32":
      return f64 ? { dtype: "f64", shape, data: d.slice() } : { dtype: "f32", shape, data: new Float32Array(d) };
    case "f64":
      return { dtype: "f64", shape, data: d.slice() };
    case "f16": {
      const out = new Uint16Array(d.length);
      for (let i = 0; i < d.length; i++) out[i] = f32ToF16(d[i]);
      return { dtype: "f16", shape, data: out };
    }
    case "i32":
      return { dtype: "i32", shape, data: new Int32Array(d) };
    case "bool":
      return { dtype: "bool", shape, data: new Uint8Array(d) };
    case "i64": {
      if (v.big) return { dtype: "i64", shape, data: v.big.slice() };
      const out = new BigInt64Array(d.length);
      for (let i = 0; i < d.length; i++) {
        const x = d[i];
        if (!Number.isInteger(x)) throw new BackendError(`interpreter: i64 result holds the non-integer ${x} at flat index ${i}`);
        out[i] = BigInt(x);
      }
      return { dtype: "i64", shape, data: out };
    }
  }
}
