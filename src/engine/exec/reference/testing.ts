/** Helpers shared by this folder's tests (not a test file itself). */
import assert from "node:assert/strict";
import type { DType } from "../../ir/dtype.js";
import { type HostTensor, hostTensor, readNumber } from "../../ir/host.js";
import type { Tensor } from "../../trace/tensor.js";
import { type InputSpec, type TraceOutput, trace } from "../../trace/trace.js";
import { type InterpretOptions, interpret } from "./interpreter.js";

export function run(
  fn: (...args: Tensor[]) => TraceOutput,
  specs: readonly InputSpec[],
  inputs: readonly HostTensor[],
  opts?: InterpretOptions,
): HostTensor[] {
  return interpret(trace(fn, specs), inputs, opts);
}

export function ht(dtype: DType, shape: readonly number[], values: ArrayLike<number>): HostTensor {
  return hostTensor(dtype, shape, values);
}

export function i64(shape: readonly number[], values: readonly number[]): HostTensor {
  return hostTensor("i64", shape, BigInt64Array.from(values.map((v) => BigInt(v))));
}

/** Uniform values in [lo, hi), already representable in f32 so f32 and f64 runs see the same inputs. */
export function randVals(n: number, lo = -2, hi = 2): number[] {
  return Array.from({ length: n }, () => Math.fround(lo + (hi - lo) * Math.random()));
}

export function nums(t: HostTensor): number[] {
  return Array.from({ length: t.data.length }, (_, i) => readNumber(t, i));
}

/** Element-wise comparison with an absolute + relative tolerance; tol 0 means exact (NaN equals NaN, -0 equals 0). */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 0, what = ""): void {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length} vs ${expected.length}`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    const ok = tol === 0 ? a === e : Math.abs(a - e) <= tol * (1 + Math.abs(e));
    if (!ok) {
      assert.fail(
        `${what}: element ${i} is ${a}, expected ${e} (tol ${tol})\nactual:   ${Array.from(actual).slice(0, 40)}\nexpected: ${Array.from(expected).slice(0, 40)}`,
      );
    }
  }
}

/** Row-major flat index → multi-index. */
export function unravel(i: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
  return idx;
}

/** Multi-index → flat index, with broadcasting of size-1 dims (right-aligned) as NumPy does. */
export function ravelBroadcast(idx: readonly number[], shape: readonly number[]): number {
  const off = idx.length - shape.length;
  let flat = 0;
  for (let d = 0; d < shape.length; d++) flat = flat * shape[d] + (shape[d] === 1 ? 0 : idx[d + off]);
  return flat;
}

export function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
