/**
 * One interpreter kernel per primitive of ir/ops.ts, following the matching ONNX operator.
 * Kernels compute in f64 and leave rounding to the result dtype to `settle`.
 */
import { BackendError } from "../../errors.js";
import { type DType, isFloat } from "../../ir/dtype.js";
import { f16ToF32, f32ToF16, type HostTensor } from "../../ir/host.js";
import type { BinaryArithOp, CompareOp, OpName, UnaryFloatOp, UnaryNumericOp } from "../../ir/ops.js";
import { normalAt, reduceSeed, uniformAt } from "../../ir/random.js";
import { broadcastShapes, type Dim, shapeStr } from "../../ir/shape.js";
import { around, broadcastTo, range, size, stridesOf, transposeData } from "./layout.js";
import { erf, floatToI32, floatToI64, powC, roundHalfEven, sigmoid } from "./math.js";
import { checkStorage, hostToVal, type Val, val } from "./values.js";

export interface KernelContext {
  /** Round f32 results to f32 (false in f64 precision). */
  readonly roundF32: boolean;
  /** Resolves symbolic dims of an attribute shape with the bindings of this run. */
  dims(shape: readonly Dim[], op: string): number[];
}

export type Kernel = (ins: readonly Val[], attrs: Readonly<Record<string, unknown>>, ctx: KernelContext) => Val[];

/** Rounds freshly computed values to what the dtype can hold, in place. */
function settle(ctx: KernelContext, dtype: DType, d: Float64Array): Float64Array {
  switch (dtype) {
    case "f32":
      if (ctx.roundF32) for (let i = 0; i < d.length; i++) d[i] = Math.fround(d[i]);
      break;
    case "f16":
      for (let i = 0; i < d.length; i++) d[i] = f16ToF32(f32ToF16(d[i]));
      break;
    case "i32":
      // two's-complement wrap, as int32 arithmetic in ORT
      for (let i = 0; i < d.length; i++) d[i] = d[i] | 0;
      break;
    case "bool":
      for (let i = 0; i < d.length; i++) d[i] = d[i] !== 0 ? 1 : 0;
      break;
    default:
      break;
  }
  return d;
}

function settleScalar(ctx: KernelContext, dtype: DType, v: number): number {
  return settle(ctx, dtype, Float64Array.of(v))[0];
}

function normIndex(i: number, n: number, op: string): number {
  const j = i < 0 ? i + n : i;
  if (!(j >= 0 && j < n)) throw new BackendError(`${op}: index ${i} is out of range for an axis of size ${n}`);
  return j;
}

function normAxisOf(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

// ---------------------------------------------------------------- elementwise

const UNARY_FLOAT: Record<UnaryFloatOp, (x: number) => number> = {
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  rsqrt: (x) => 1 / Math.sqrt(x),
  tanh: Math.tanh,
  erf,
  sigmoid,
  sin: Math.sin,
  cos: Math.cos,
  reciprocal: (x) => 1 / x,
  floor: Math.floor,
  round: roundHalfEven,
};

const UNARY_NUMERIC: Record<UnaryNumericOp, (x: number) => number> = {
  neg: (x) => -x,
  abs: Math.abs,
  sign: Math.sign,
};

function map1(x: Val, f: (v: number) => number, dtype: DType, ctx: KernelContext): Val {
  const src = x.data;
  const out = new Float64Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f(src[i]);
  return val(dtype, x.shape, settle(ctx, dtype, out));
}

function map2(a: Val, b: Val, f: (x: number, y: number) => number, dtype: DType, ctx: KernelContext, op: string): Val {
  const shape = broadcastShapes(a.shape, b.shape, op) as number[];
  const n = size(shape);
  const out = new Float64Array(n);
  const A = a.data;
  const B = b.data;
  if (A.length === n && B.length === n) {
    for (let i = 0; i < n; i++) out[i] = f(A[i], B[i]);
  } else if (B.length === 1 && A.length === n) {
    const y = B[0];
    for (let i = 0; i < n; i++) out[i] = f(A[i], y);
  } else if (A.length === 1 && B.length === n) {
    const x = A[0];
    for (let i = 0; i < n; i++) out[i] = f(x, B[i]);
  } else {
    const X = broadcastTo(A, a.shape, shape);
    const Y = broadcastTo(B, b.shape, shape);
    for (let i = 0; i < n; i++) out[i] = f(X[i], Y[i]);
  }
  return val(dtype, shape, settle(ctx, dtype, out));
}

function intDiv(x: number, y: number): number {
  if (y === 0) throw new BackendError(`div: integer division by zero (${x} / 0)`);
  return Math.trunc(x / y) + 0;
}

function binaryFn(op: BinaryArithOp, dtype: DType): (x: number, y: number) => number {
  const int = !isFloat(dtype);
  switch (op) {
    case "add":
      return (x, y) => x + y;
    case "sub":
      return (x, y) => x - y;
    case "mul":
      // i32 products can exceed 2^53, so multiply mod 2^32 directly
      return dtype === "i32" ? Math.imul : (x, y) => x * y;
    case "div":
      return int ? intDiv : (x, y) => x / y;
    case "pow":
      return powC;
    case "maximum":
      // Math.max/min propagate NaN, as ORT's Max/Min do
      return Math.max;
    case "minimum":
      return Math.min;
  }
}

const COMPARE: Record<CompareOp, (x: number, y: number) => number> = {
  lt: (x, y) => (x < y ? 1 : 0),
  le: (x, y) => (x <= y ? 1 : 0),
  gt: (x, y) => (x > y ? 1 : 0),
  ge: (x, y) => (x >= y ? 1 : 0),
  eq: (x, y) => (x === y ? 1 : 0),
  ne: (x, y) => (x !== y ? 1 : 0),
};

function where([c, a, b]: readonly Val[]): Val[] {
  const shape = broadcastShapes(broadcastShapes(c.shape, a.shape, "where"), b.shape, "where") as number[];
  const C = broadcastTo(c.data, c.shape, shape);
  const A = broadcastTo(a.data, a.shape, shape);
  const B = broadcastTo(b.data, b.shape, shape);
  const out = new Float64Array(size(shape));
  for (let i = 0; i < out.length; i++) out[i] = C[i] ? A[i] : B[i];
  return [val(a.dtype, shape, out)];
}

// ---------------------------------------------------------------- linear algebra

function matmul([a, b]: readonly Val[], ctx: KernelContext): Val[] {
  const ra = a.shape.length;
  const rb = b.shape.length;
  const m = a.shape[ra - 2];
  const k = a.shape[ra - 1];
  const n = b.shape[rb - 1];
  if (b.shape[rb - 2] !== k) {
    throw new BackendError(`matmul: inner dimensions differ for ${shapeStr(a.shape)} and ${shapeStr(b.shape)}`);
  }
  const batchA = a.shape.slice(0, -2);
  const batchB = b.shape.slice(0, -2);
  const batch = broadcastShapes(batchA, batchB, "matmul") as number[];
  const nb = size(batch);
  // which matrix of a and of b each output matrix uses
  const whichA = broadcastTo(range(size(batchA)), batchA, batch);
  const whichB = broadcastTo(range(size(batchB)), batchB, batch);
  const A = a.data;
  const B = b.data;
  const out = new Float64Array(nb * m * n);
  for (let t = 0; t < nb; t++) {
    const a0 = whichA[t] * m * k;
    const b0 = whichB[t] * k * n;
    const o0 = t * m * n;
    for (let i = 0; i < m; i++) {
      const orow = o0 + i * n;
      const arow = a0 + i * k;
      for (let p = 0; p < k; p++) {
        const av = A[arow + p];
        const brow = b0 + p * n;
        for (let j = 0; j < n; j++) out[orow + j] += av * B[brow + j];
      }
    }
  }
  return [val(a.dtype, [...batch, m, n], settle(ctx, a.dtype, out))];
}

// ---------------------------------------------------------------- reductions

function lowest(dtype: DType): number {
  if (dtype === "i32") return -2147483648;
  if (dtype === "i64") return -(2 ** 63);
  return Number.NEGATIVE_INFINITY;
}

function reduce(x: Val, axes: readonly number[], keepdims: boolean, max: boolean, ctx: KernelContext): Val {
  const r = x.shape.length;
  const red = new Set(axes.map((a) => normAxisOf(a, r)));
  const kept: number[] = [];
  const reduced: number[] = [];
  for (let i = 0; i < r; i++) (red.has(i) ? reduced : kept).push(i);
  // reduced axes last, so each output element reduces one contiguous run
  const data = transposeData(x.data, x.shape, [...kept, ...reduced]);
  const M = size(kept.map((i) => x.shape[i]));
  const R = size(reduced.map((i) => x.shape[i]));
  const out = new Float64Array(M);
  if (max) {
    const init = lowest(x.dtype);
    for (let o = 0; o < M; o++) {
      let best = init;
      for (let p = o * R, e = p + R; p < e; p++) {
        const v = data[p];
        if (v > best || Number.isNaN(v)) best = v;
      }
      out[o] = best;
    }
  } else {
    for (let o = 0; o < M; o++) {
      let s = 0;
      for (let p = o * R, e = p + R; p < e; p++) s += data[p];
      out[o] = s;
    }
  }
  const shape = keepdims ? x.shape.map((d, i) => (red.has(i) ? 1 : d)) : kept.map((i) => x.shape[i]);
  return val(x.dtype, shape, settle(ctx, x.dtype, out));
}

function argmax([x]: readonly Val[], attrs: Readonly<Record<string, unknown>>): Val[] {
  const axis = normAxisOf(attrs.axis as number, x.shape.length);
  const [outer, D, inner] = around(x.shape, axis);
  if (D === 0) throw new BackendError(`argmax: axis ${axis} of ${shapeStr(x.shape)} is empty`);
  const X = x.data;
  const out = new Float64Array(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let q = 0; q < inner; q++) {
      const base = o * D * inner + q;
      let best = X[base];
      let bi = 0;
      for (let a = 1; a < D; a++) {
        const v = X[base + a * inner];
        // strict > keeps the first index among ties
        if (v > best) {
          best = v;
          bi = a;
        }
      }
      out[o * inner + q] = bi;
    }
  }
  const shape = attrs.keepdims ? x.shape.map((d, i) => (i === axis ? 1 : d)) : x.shape.filter((_, i) => i !== axis);
  return [val("i64", shape, out)];
}

// ---------------------------------------------------------------- shape ops

function reshape([x]: readonly Val[], attrs: Readonly<Record<string, unknown>>, ctx: KernelContext): Val[] {
  const shape = ctx.dims(attrs.shape as Dim[], "reshape");
  if (size(shape) !== x.data.length) {
    throw new BackendError(`reshape: cannot reshape ${shapeStr(x.shape)} to ${shapeStr(shape)}`);
  }
  return [val(x.dtype, shape, x.data, x.big)];
}

function transpose([x]: readonly Val[], attrs: Readonly<Record<string, unknown>>): Val[] {
  const perm = attrs.perm as number[];
  return [
    val(
      x.dtype,
      perm.map((p) => x.shape[p]),
      transposeData(x.data, x.shape, perm),
    ),
  ];
}

function concat(ins: readonly Val[], attrs: Readonly<Record<string, unknown>>): Val[] {
  const first = ins[0];
  const axis = normAxisOf(attrs.axis as number, first.shape.length);
  const outer = size(first.shape.slice(0, axis));
  const inner = size(first.shape.slice(axis + 1));
  const chunks = ins.map((v) => v.shape[axis] * inner);
  const total = chunks.reduce((s, c) => s + c, 0);
  const out = new Float64Array(outer * total);
  let pos = 0;
  for (let o = 0; o < outer; o++) {
    for (let t = 0; t < ins.length; t++) {
      const c = chunks[t];
      out.set(ins[t].data.subarray(o * c, o * c + c), pos);
      pos += c;
    }
  }
  const shape = [...first.shape];
  shape[axis] = ins.reduce((s, v) => s + v.shape[axis], 0);
  return [val(first.dtype, shape, out)];
}

function slice([x]: readonly Val[], attrs: Readonly<Record<string, unknown>>): Val[] {
  const axis = normAxisOf(attrs.axis as number, x.shape.length);
  const start = attrs.start as number;
  const end = attrs.end as number;
  const [outer, D, inner] = around(x.shape, axis);
  if (!(start >= 0 && start <= end && end <= D)) {
    throw new BackendError(`slice: range [${start}, ${end}) is out of bounds for axis ${axis} of ${shapeStr(x.shape)}`);
  }
  const w = (end - start) * inner;
  const out = new Float64Array(outer * w);
  for (let o = 0; o < outer; o++) {
    const from = (o * D + start) * inner;
    out.set(x.data.subarray(from, from + w), o * w);
  }
  const shape = [...x.shape];
  shape[axis] = end - start;
  return [val(x.dtype, shape, out)];
}

function gather([x, idx]: readonly Val[], attrs: Readonly<Record<string, unknown>>): Val[] {
  const axis = normAxisOf(attrs.axis as number, x.shape.length);
  const [outer, D, inner] = around(x.shape, axis);
  const I = idx.data;
  const n = I.length;
  const rows = new Int32Array(n);
  for (let j = 0; j < n; j++) rows[j] = normIndex(I[j], D, "gather");
  const X = x.data;
  const out = new Float64Array(outer * n * inner);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < n; j++) {
      const src = (o * D + rows[j]) * inner;
      const dst = (o * n + j) * inner;
      if (inner === 1) out[dst] = X[src];
      else out.set(X.subarray(src, src + inner), dst);
    }
  }
  const shape = [...x.shape.slice(0, axis), ...idx.shape, ...x.shape.slice(axis + 1)];
  return [val(x.dtype, shape, out)];
}

function scatterAdd([base, idx, upd]: readonly Val[], attrs: Readonly<Record<string, unknown>>, ctx: KernelContext): Val[] {
  const axis = normAxisOf(attrs.axis as number, base.shape.length);
  const [outer, D, inner] = around(base.shape, axis);
  const I = idx.data;
  const n = I.length;
  if (upd.data.length !== outer * n * inner) {
    throw new BackendError(
      `scatter_add: updates ${shapeStr(upd.shape)} do not fit base ${shapeStr(base.shape)} and indices ${shapeStr(idx.shape)}`,
    );
  }
  const out = base.data.slice();
  const U = upd.data;
  for (let j = 0; j < n; j++) {
    const row = normIndex(I[j], D, "scatter_add");
    for (let o = 0; o < outer; o++) {
      const dst = (o * D + row) * inner;
      const src = (o * n + j) * inner;
      for (let q = 0; q < inner; q++) out[dst + q] += U[src + q];
    }
  }
  return [val(base.dtype, base.shape, settle(ctx, base.dtype, out))];
}

function takeAlongAxis([x, idx]: readonly Val[], attrs: Readonly<Record<string, unknown>>): Val[] {
  const axis = normAxisOf(attrs.axis as number, x.shape.length);
  const [outer, D, inner] = around(x.shape, axis);
  const A = idx.shape[axis];
  const I = idx.data;
  const X = x.data;
  const out = new Float64Array(I.length);
  for (let o = 0; o < outer; o++) {
    for (let a = 0; a < A; a++) {
      const p0 = (o * A + a) * inner;
      for (let q = 0; q < inner; q++) {
        out[p0 + q] = X[(o * D + normIndex(I[p0 + q], D, "take_along_axis")) * inner + q];
      }
    }
  }
  return [val(x.dtype, idx.shape, out)];
}

function putAlongAxisAdd([base, idx, upd]: readonly Val[], attrs: Readonly<Record<string, unknown>>, ctx: KernelContext): Val[] {
  const axis = normAxisOf(attrs.axis as number, base.shape.length);
  const [outer, D, inner] = around(base.shape, axis);
  const A = idx.shape[axis];
  const I = idx.data;
  const U = upd.data;
  const out = base.data.slice();
  for (let o = 0; o < outer; o++) {
    for (let a = 0; a < A; a++) {
      const p0 = (o * A + a) * inner;
      for (let q = 0; q < inner; q++) {
        out[(o * D + normIndex(I[p0 + q], D, "put_along_axis_add")) * inner + q] += U[p0 + q];
      }
    }
  }
  return [val(base.dtype, base.shape, settle(ctx, base.dtype, out))];
}

function expand([x]: readonly Val[], attrs: Readonly<Record<string, unknown>>, ctx: KernelContext): Val[] {
  const shape = ctx.dims(attrs.shape as Dim[], "expand");
  broadcastShapes(x.shape, shape, "expand");
  return [val(x.dtype, shape, broadcastTo(x.data, x.shape, shape))];
}

function pad([x]: readonly Val[], attrs: Readonly<Record<string, unknown>>, ctx: KernelContext): Val[] {
  const pads = attrs.pads as number[];
  const r = x.shape.length;
  const shape = x.shape.map((d, i) => d + pads[i] + pads[i + r]);
  const out = new Float64Array(size(shape)).fill(settleScalar(ctx, x.dtype, attrs.value as number));
  const X = x.data;
  if (X.length === 0) return [val(x.dtype, shape, out)];
  if (r === 0) {
    out[0] = X[0];
    return [val(x.dtype, shape, out)];
  }
  // copy the input row by row (rows = runs along the last axis) to its shifted place
  const os = stridesOf(shape);
  const last = x.shape[r - 1];
  const idx = new Int32Array(r);
  let dst = 0;
  for (let d = 0; d < r; d++) dst += pads[d] * os[d];
  for (let src = 0; src < X.length; src += last) {
    out.set(X.subarray(src, src + last), dst);
    for (let d = r - 2; d >= 0; d--) {
      idx[d]++;
      dst += os[d];
      if (idx[d] < x.shape[d]) break;
      dst -= os[d] * idx[d];
      idx[d] = 0;
    }
  }
  return [val(x.dtype, shape, out)];
}

function cast([x]: readonly Val[], attrs: Readonly<Record<string, unknown>>, ctx: KernelContext): Val[] {
  const to = attrs.to as DType;
  if (to === x.dtype) return [x];
  const src = x.data;
  const n = src.length;
  const out = new Float64Array(n);
  const fromFloat = isFloat(x.dtype);
  switch (to) {
    case "bool":
      // NaN != 0, so NaN casts to true as in C++
      for (let i = 0; i < n; i++) out[i] = src[i] !== 0 ? 1 : 0;
      break;
    case "i32":
      if (fromFloat) for (let i = 0; i < n; i++) out[i] = floatToI32(src[i]);
      else for (let i = 0; i < n; i++) out[i] = src[i] | 0;
      break;
    case "i64":
      if (fromFloat) for (let i = 0; i < n; i++) out[i] = floatToI64(src[i]);
      else out.set(src);
      break;
    default:
      out.set(src);
      settle(ctx, to, out);
  }
  return [val(to, x.shape, out)];
}

function topk([x]: readonly Val[], attrs: Readonly<Record<string, unknown>>): Val[] {
  const axis = normAxisOf(attrs.axis as number, x.shape.length);
  const k = attrs.k as number;
  const largest = attrs.largest as boolean;
  const [outer, D, inner] = around(x.shape, axis);
  if (!(k >= 1 && k <= D)) throw new BackendError(`topk: k=${k} is out of range for axis ${axis} of ${shapeStr(x.shape)}`);
  const X = x.data;
  const vals = new Float64Array(outer * k * inner);
  const idxs = new Float64Array(outer * k * inner);
  const line = new Float64Array(D);
  const order: number[] = new Array(D);
  // NaN ranks above +inf (as NumPy sorts it); equal values keep the lower index first
  const above = (a: number, b: number) => a > b || (Number.isNaN(a) && !Number.isNaN(b));
  const cmp = largest
    ? (i: number, j: number) => (above(line[i], line[j]) ? -1 : above(line[j], line[i]) ? 1 : i - j)
    : (i: number, j: number) => (above(line[j], line[i]) ? -1 : above(line[i], line[j]) ? 1 : i - j);
  for (let o = 0; o < outer; o++) {
    for (let q = 0; q < inner; q++) {
      for (let a = 0; a < D; a++) {
        line[a] = X[(o * D + a) * inner + q];
        order[a] = a;
      }
      order.sort(cmp);
      for (let t = 0; t < k; t++) {
        const p = (o * k + t) * inner + q;
        vals[p] = line[order[t]];
        idxs[p] = order[t];
      }
    }
  }
  const shape = [...x.shape];
  shape[axis] = k;
  return [val(x.dtype, shape, vals), val("i64", [...shape], idxs)];
}

function cumsum([x]: readonly Val[], attrs: Readonly<Record<string, unknown>>, ctx: KernelContext): Val[] {
  const axis = normAxisOf(attrs.axis as number, x.shape.length);
  const reverse = attrs.reverse as boolean;
  const exclusive = attrs.exclusive as boolean;
  const [outer, D, inner] = around(x.shape, axis);
  const X = x.data;
  const out = new Float64Array(X.length);
  for (let o = 0; o < outer; o++) {
    for (let q = 0; q < inner; q++) {
      const base = o * D * inner + q;
      let acc = 0;
      for (let s = 0; s < D; s++) {
        const p = base + (reverse ? D - 1 - s : s) * inner;
        if (exclusive) {
          out[p] = acc;
          acc += X[p];
        } else {
          acc += X[p];
          out[p] = acc;
        }
      }
    }
  }
  return [val(x.dtype, x.shape, settle(ctx, x.dtype, out))];
}

function trilu([x]: readonly Val[], attrs: Readonly<Record<string, unknown>>): Val[] {
  const upper = attrs.upper as boolean;
  const k = attrs.k as number;
  const r = x.shape.length;
  const R = x.shape[r - 2];
  const C = x.shape[r - 1];
  const X = x.data;
  const out = new Float64Array(X.length);
  for (let b = 0, p = 0; b < X.length; b += R * C) {
    for (let i = 0; i < R; i++) {
      for (let j = 0; j < C; j++, p++) {
        const keep = upper ? j - i >= k : j - i <= k;
        if (keep) out[p] = X[p];
      }
    }
  }
  return [val(x.dtype, x.shape, out)];
}

function iota(_ins: readonly Val[], attrs: Readonly<Record<string, unknown>>, ctx: KernelContext): Val[] {
  const shape = ctx.dims(attrs.shape as Dim[], "iota");
  const dtype = attrs.dtype as DType;
  const axis = normAxisOf(attrs.axis as number, shape.length);
  const [outer, D, inner] = around(shape, axis);
  const out = new Float64Array(outer * D * inner);
  for (let o = 0, p = 0; o < outer; o++) {
    for (let a = 0; a < D; a++) {
      out.fill(a, p, p + inner);
      p += inner;
    }
  }
  return [val(dtype, shape, settle(ctx, dtype, out))];
}

function random(normal: boolean): Kernel {
  const op = normal ? "random_normal" : "random_uniform";
  return ([seed], attrs, ctx) => {
    const shape = ctx.dims(attrs.shape as Dim[], op);
    const dtype = attrs.dtype as DType;
    const n = size(shape);
    if (n > 2 ** 32) throw new BackendError(`${op}: ${n} elements exceed the 2^32 counters of the generator`);
    const m = seed.big ? seed.big.length : seed.data.length;
    const out = new Float64Array(m * n);
    for (let k = 0; k < m; k++) {
      const s = reduceSeed(seed.big ? seed.big[k] : BigInt(seed.data[k]));
      const o = k * n;
      if (normal) for (let i = 0; i < n; i++) out[o + i] = normalAt(s, i);
      else for (let i = 0; i < n; i++) out[o + i] = uniformAt(s, i);
    }
    return [val(dtype, [...seed.shape, ...shape], settle(ctx, dtype, out))];
  };
}

// ---------------------------------------------------------------- registry

type NoAttrKernel = (ins: readonly Val[], ctx: KernelContext) => Val[];
const plain =
  (f: NoAttrKernel): Kernel =>
  (ins, _attrs, ctx) =>
    f(ins, ctx);

function unaryFloat(op: UnaryFloatOp): Kernel {
  const f = UNARY_FLOAT[op];
  return ([x], _a, ctx) => [map1(x, f, x.dtype, ctx)];
}
function unaryNumeric(op: UnaryNumericOp): Kernel {
  const f = UNARY_NUMERIC[op];
  return ([x], _a, ctx) => [map1(x, f, x.dtype, ctx)];
}
function binary(op: BinaryArithOp): Kernel {
  return ([a, b], _a, ctx) => [map2(a, b, binaryFn(op, a.dtype), a.dtype, ctx, op)];
}
function compare(op: CompareOp): Kernel {
  const f = COMPARE[op];
  return ([a, b], _a, ctx) => [map2(a, b, f, "bool", ctx, op)];
}

export const KERNELS: { readonly [K in OpName]: Kernel } = {
  exp: unaryFloat("exp"),
  log: unaryFloat("log"),
  sqrt: unaryFloat("sqrt"),
  rsqrt: unaryFloat("rsqrt"),
  tanh: unaryFloat("tanh"),
  erf: unaryFloat("erf"),
  sigmoid: unaryFloat("sigmoid"),
  sin: unaryFloat("sin"),
  cos: unaryFloat("cos"),
  reciprocal: unaryFloat("reciprocal"),
  floor: unaryFloat("floor"),
  round: unaryFloat("round"),
  neg: unaryNumeric("neg"),
  abs: unaryNumeric("abs"),
  sign: unaryNumeric("sign"),
  add: binary("add"),
  sub: binary("sub"),
  mul: binary("mul"),
  div: binary("div"),
  pow: binary("pow"),
  maximum: binary("maximum"),
  minimum: binary("minimum"),
  lt: compare("lt"),
  le: compare("le"),
  gt: compare("gt"),
  ge: compare("ge"),
  eq: compare("eq"),
  ne: compare("ne"),
  and: ([a, b], _a, ctx) => [map2(a, b, (x, y) => (x && y ? 1 : 0), "bool", ctx, "and")],
  or: ([a, b], _a, ctx) => [map2(a, b, (x, y) => (x || y ? 1 : 0), "bool", ctx, "or")],
  not: ([x], _a, ctx) => [map1(x, (v) => (v ? 0 : 1), "bool", ctx)],
  constant: (_ins, attrs) => {
    const v = attrs.value as HostTensor;
    checkStorage(v, "constant");
    return [hostToVal(v)];
  },
  where: plain(where),
  matmul: plain(matmul),
  reduce_sum: ([x], a, ctx) => [reduce(x, a.axes as number[], a.keepdims as boolean, false, ctx)],
  reduce_max: ([x], a, ctx) => [reduce(x, a.axes as number[], a.keepdims as boolean, true, ctx)],
  argmax,
  reshape,
  transpose,
  concat,
  slice,
  gather,
  scatter_add: scatterAdd,
  take_along_axis: takeAlongAxis,
  put_along_axis_add: putAlongAxisAdd,
  expand,
  pad,
  cast,
  topk,
  cumsum,
  trilu,
  iota,
  random_uniform: random(false),
  random_normal: random(true),
  stop_gradient: ([x]) => [x],
  // the interpreter passes only the forward outputs (the primals are not needed to run)
  custom_vjp: (ins) => [...ins],
};
