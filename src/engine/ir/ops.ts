/**
 * The primitive set. Everything else (softmax, norms, GELU, cross-entropy, ...) is lowered onto these.
 * A new primitive needs: an entry here (attrs + shape inference), one derivative rule
 * (autodiff/rules.ts), one ONNX lowering (exec/onnx/lower.ts) and one interpreter kernel
 * (exec/reference/kernels.ts).
 */
import { ShapeError } from "../errors.js";
import { type DType, isFloat } from "./dtype.js";
import type { HostTensor } from "./host.js";
import { broadcastShapes, type Dim, normAxis, type Shape, sameSize, shapeStr, sumDims } from "./shape.js";

export interface ValueType {
  dtype: DType;
  shape: Shape;
}

export const UNARY_FLOAT_OPS = [
  "exp",
  "log",
  "sqrt",
  "rsqrt",
  "tanh",
  "erf",
  "sigmoid",
  "sin",
  "cos",
  "reciprocal",
  "floor",
  "round",
] as const;
/** Unary ops that also accept integers. */
export const UNARY_NUMERIC_OPS = ["neg", "abs", "sign"] as const;
export const BINARY_ARITH_OPS = ["add", "sub", "mul", "div", "pow", "maximum", "minimum"] as const;
export const COMPARE_OPS = ["lt", "le", "gt", "ge", "eq", "ne"] as const;
export const LOGICAL_OPS = ["and", "or"] as const;

export type UnaryFloatOp = (typeof UNARY_FLOAT_OPS)[number];
export type UnaryNumericOp = (typeof UNARY_NUMERIC_OPS)[number];
export type BinaryArithOp = (typeof BINARY_ARITH_OPS)[number];
export type CompareOp = (typeof COMPARE_OPS)[number];
export type LogicalOp = (typeof LOGICAL_OPS)[number];

/** Attributes of each primitive. Ops not listed take no attributes. */
export interface OpAttrs {
  constant: { value: HostTensor };
  not: Record<string, never>;
  where: Record<string, never>;
  /** Batched matmul with NumPy broadcasting of the leading dims; both operands have rank >= 2. */
  matmul: Record<string, never>;
  reduce_sum: { axes: number[]; keepdims: boolean };
  reduce_max: { axes: number[]; keepdims: boolean };
  argmax: { axis: number; keepdims: boolean };
  reshape: { shape: Dim[] };
  transpose: { perm: number[] };
  concat: { axis: number };
  /** x[..., start:end, ...] along one axis with step 1; the axis must have a fixed size. */
  slice: { axis: number; start: number; end: number };
  /** Index-select: out = x.shape[:axis] + idx.shape + x.shape[axis+1:]. */
  gather: { axis: number };
  /** Adjoint of gather: base with updates added at the gathered positions (duplicates accumulate). */
  scatter_add: { axis: number };
  /** take_along_axis: idx has x's rank, out has idx's shape. */
  take_along_axis: { axis: number };
  /** Adjoint of take_along_axis. */
  put_along_axis_add: { axis: number };
  expand: { shape: Dim[] };
  /** Constant padding; pads = [begin_0..begin_{r-1}, end_0..end_{r-1}], non-negative. */
  pad: { pads: number[]; value: number };
  cast: { to: DType };
  topk: { k: number; axis: number; largest: boolean };
  cumsum: { axis: number; reverse: boolean; exclusive: boolean };
  /** Keeps the upper (or lower) triangle of the last two dims, diagonal offset k, zeroing the rest. */
  trilu: { upper: boolean; k: number };
  /** Index along `axis`, broadcast to `shape`. */
  iota: { shape: Dim[]; axis: number; dtype: DType };
  /**
   * Counter-based uniform [0,1) from an i64 seed input; same seed, same numbers on every backend.
   * A seed of rank > 0 is a batch of streams: the output is seed.shape ++ shape, and element
   * (i, j) is counter j of the stream of seed i.
   */
  random_uniform: { shape: Dim[]; dtype: DType };
  random_normal: { shape: Dim[]; dtype: DType };
  stop_gradient: Record<string, never>;
  /**
   * Marks a region with a hand-written derivative. Inputs are [primals..., fwd outputs...];
   * outputs are identities of the fwd outputs. Autodiff calls `bwd` instead of differentiating
   * the region, so the region's inner nodes are never differentiated.
   */
  custom_vjp: { nPrimals: number; bwd: CustomVjpBwd; name: string };
}

/** Backward function of a custom-VJP region, traced when autodiff reaches it. */
export type CustomVjpBwd = (
  primals: import("../trace/tensor.js").Tensor[],
  outputs: import("../trace/tensor.js").Tensor[],
  cotangents: (import("../trace/tensor.js").Tensor | null)[],
) => (import("../trace/tensor.js").Tensor | null)[];

type AttrOps = keyof OpAttrs;
export type OpName = AttrOps | UnaryFloatOp | UnaryNumericOp | BinaryArithOp | CompareOp | LogicalOp;
export type AttrsOf<O extends OpName> = O extends AttrOps ? OpAttrs[O] : Record<string, never>;

export const ALL_OPS: readonly OpName[] = [
  ...UNARY_FLOAT_OPS,
  ...UNARY_NUMERIC_OPS,
  ...BINARY_ARITH_OPS,
  ...COMPARE_OPS,
  ...LOGICAL_OPS,
  "constant",
  "not",
  "where",
  "matmul",
  "reduce_sum",
  "reduce_max",
  "argmax",
  "reshape",
  "transpose",
  "concat",
  "slice",
  "gather",
  "scatter_add",
  "take_along_axis",
  "put_along_axis_add",
  "expand",
  "pad",
  "cast",
  "topk",
  "cumsum",
  "trilu",
  "iota",
  "random_uniform",
  "random_normal",
  "stop_gradient",
  "custom_vjp",
];

const has = (list: readonly string[], op: string) => list.includes(op);

function describe(ins: readonly ValueType[]): string {
  return ins.map((v) => `${v.dtype}${shapeStr(v.shape)}`).join(" and ");
}

function requireFloat(op: string, v: ValueType): void {
  if (!isFloat(v.dtype) || v.dtype === "f16") {
    throw new ShapeError(`${op}: needs an f32 or f64 operand, got ${v.dtype}${shapeStr(v.shape)} (cast f16 to f32 first)`);
  }
}

function requireSameDType(op: string, ins: readonly ValueType[]): void {
  for (const v of ins) {
    if (v.dtype !== ins[0].dtype) throw new ShapeError(`${op}: operand dtypes differ: ${describe(ins)}`);
  }
}

function requireIndex(op: string, v: ValueType): void {
  if (v.dtype !== "i64" && v.dtype !== "i32") {
    throw new ShapeError(`${op}: indices must be i64 or i32, got ${v.dtype}${shapeStr(v.shape)}`);
  }
}

function requireStaticDim(op: string, d: Dim, what: string): number {
  if (typeof d !== "number") throw new ShapeError(`${op}: ${what} must have a fixed size, got symbolic "${d}"`);
  return d;
}

function reducedShape(op: string, s: Shape, axes: number[], keepdims: boolean): Dim[] {
  const norm = new Set(axes.map((a) => normAxis(a, s.length, op)));
  const out: Dim[] = [];
  s.forEach((d, i) => {
    if (!norm.has(i)) out.push(d);
    else if (keepdims) out.push(1);
  });
  return out;
}

/** Shape inference: the types of a node's outputs, or a ShapeError naming the op and the shapes. */
export function inferTypes<O extends OpName>(op: O, ins: readonly ValueType[], attrs: AttrsOf<O>): ValueType[] {
  const a = attrs as Record<string, unknown>;
  const arity = (n: number) => {
    if (ins.length !== n) throw new ShapeError(`${op}: expects ${n} inputs, got ${ins.length}`);
  };
  if (has(UNARY_FLOAT_OPS, op)) {
    arity(1);
    requireFloat(op, ins[0]);
    return [{ ...ins[0] }];
  }
  if (has(UNARY_NUMERIC_OPS, op)) {
    arity(1);
    if (ins[0].dtype === "bool" || ins[0].dtype === "f16") throw new ShapeError(`${op}: unsupported dtype ${ins[0].dtype}`);
    return [{ ...ins[0] }];
  }
  if (has(BINARY_ARITH_OPS, op)) {
    arity(2);
    requireSameDType(op, ins);
    if (ins[0].dtype === "bool" || ins[0].dtype === "f16") throw new ShapeError(`${op}: unsupported dtype ${ins[0].dtype}`);
    if (op === "pow") requireFloat(op, ins[0]);
    return [{ dtype: ins[0].dtype, shape: broadcastShapes(ins[0].shape, ins[1].shape, op) }];
  }
  if (has(COMPARE_OPS, op)) {
    arity(2);
    requireSameDType(op, ins);
    return [{ dtype: "bool", shape: broadcastShapes(ins[0].shape, ins[1].shape, op) }];
  }
  if (has(LOGICAL_OPS, op)) {
    arity(2);
    if (ins[0].dtype !== "bool" || ins[1].dtype !== "bool") throw new ShapeError(`${op}: needs bool operands, got ${describe(ins)}`);
    return [{ dtype: "bool", shape: broadcastShapes(ins[0].shape, ins[1].shape, op) }];
  }
  switch (op) {
    case "constant": {
      arity(0);
      const v = a.value as HostTensor;
      return [{ dtype: v.dtype, shape: [...v.shape] }];
    }
    case "not":
      arity(1);
      if (ins[0].dtype !== "bool") throw new ShapeError(`not: needs a bool operand, got ${describe(ins)}`);
      return [{ ...ins[0] }];
    case "where": {
      arity(3);
      if (ins[0].dtype !== "bool") throw new ShapeError(`where: condition must be bool, got ${describe(ins)}`);
      if (ins[1].dtype !== ins[2].dtype) throw new ShapeError(`where: branch dtypes differ: ${describe(ins)}`);
      const s = broadcastShapes(broadcastShapes(ins[0].shape, ins[1].shape, op), ins[2].shape, op);
      return [{ dtype: ins[1].dtype, shape: s }];
    }
    case "matmul": {
      arity(2);
      requireSameDType(op, ins);
      requireFloat(op, ins[0]);
      const [x, y] = ins;
      if (x.shape.length < 2 || y.shape.length < 2) {
        throw new ShapeError(`matmul: both operands need rank >= 2, got ${describe(ins)}`);
      }
      const k1 = x.shape[x.shape.length - 1];
      const k2 = y.shape[y.shape.length - 2];
      if (k1 !== k2) {
        throw new ShapeError(`matmul: inner dimensions differ (${k1} vs ${k2}) for shapes ${shapeStr(x.shape)} and ${shapeStr(y.shape)}`);
      }
      let batch: Dim[];
      try {
        batch = broadcastShapes(x.shape.slice(0, -2), y.shape.slice(0, -2), op);
      } catch {
        throw new ShapeError(`matmul: batch dimensions of ${shapeStr(x.shape)} and ${shapeStr(y.shape)} do not broadcast`);
      }
      return [{ dtype: x.dtype, shape: [...batch, x.shape[x.shape.length - 2], y.shape[y.shape.length - 1]] }];
    }
    case "reduce_sum":
    case "reduce_max": {
      arity(1);
      if (ins[0].dtype === "bool" || ins[0].dtype === "f16") throw new ShapeError(`${op}: unsupported dtype ${ins[0].dtype}`);
      return [{ dtype: ins[0].dtype, shape: reducedShape(op, ins[0].shape, a.axes as number[], a.keepdims as boolean) }];
    }
    case "argmax": {
      arity(1);
      return [{ dtype: "i64", shape: reducedShape(op, ins[0].shape, [a.axis as number], a.keepdims as boolean) }];
    }
    case "reshape": {
      arity(1);
      const shape = a.shape as Dim[];
      for (const d of shape) {
        if (typeof d === "number" && (!Number.isInteger(d) || d < 0)) {
          throw new ShapeError(`reshape: bad target dim ${d} in ${shapeStr(shape)}`);
        }
      }
      if (!sameSize(ins[0].shape, shape)) {
        throw new ShapeError(`reshape: cannot reshape ${shapeStr(ins[0].shape)} to ${shapeStr(shape)} (element counts differ)`);
      }
      return [{ dtype: ins[0].dtype, shape: [...shape] }];
    }
    case "transpose": {
      arity(1);
      const perm = a.perm as number[];
      const r = ins[0].shape.length;
      const sorted = [...perm].sort((p, q) => p - q);
      if (perm.length !== r || sorted.some((p, i) => p !== i)) {
        throw new ShapeError(`transpose: perm [${perm}] is not a permutation of the ${r} axes of ${shapeStr(ins[0].shape)}`);
      }
      return [{ dtype: ins[0].dtype, shape: perm.map((p) => ins[0].shape[p]) }];
    }
    case "concat": {
      if (ins.length < 1) throw new ShapeError("concat: needs at least one input");
      requireSameDType(op, ins);
      const r = ins[0].shape.length;
      const axis = normAxis(a.axis as number, r, op);
      for (const v of ins) {
        if (v.shape.length !== r || v.shape.some((d, i) => i !== axis && d !== ins[0].shape[i])) {
          throw new ShapeError(`concat: shapes ${ins.map((x) => shapeStr(x.shape)).join(", ")} differ outside axis ${axis}`);
        }
      }
      const shape = [...ins[0].shape];
      shape[axis] = sumDims(ins.map((v) => v.shape[axis]));
      return [{ dtype: ins[0].dtype, shape }];
    }
    case "slice": {
      arity(1);
      const s = ins[0].shape;
      const axis = normAxis(a.axis as number, s.length, op);
      const size = requireStaticDim(op, s[axis], "the sliced axis");
      const { start, end } = a as { start: number; end: number };
      if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > size || start > end) {
        throw new ShapeError(`slice: range [${start}, ${end}) is out of bounds for axis ${axis} of ${shapeStr(s)}`);
      }
      const shape = [...s];
      shape[axis] = end - start;
      return [{ dtype: ins[0].dtype, shape }];
    }
    case "gather": {
      arity(2);
      requireIndex(op, ins[1]);
      const s = ins[0].shape;
      const axis = normAxis(a.axis as number, s.length, op);
      return [{ dtype: ins[0].dtype, shape: [...s.slice(0, axis), ...ins[1].shape, ...s.slice(axis + 1)] }];
    }
    case "scatter_add": {
      arity(3);
      requireIndex(op, ins[1]);
      const s = ins[0].shape;
      const axis = normAxis(a.axis as number, s.length, op);
      const expect = [...s.slice(0, axis), ...ins[1].shape, ...s.slice(axis + 1)];
      if (ins[2].dtype !== ins[0].dtype || !sameSizeAndShape(ins[2].shape, expect)) {
        throw new ShapeError(
          `scatter_add: updates ${describe([ins[2]])} should be ${ins[0].dtype}${shapeStr(expect)} for base ${shapeStr(s)} and indices ${shapeStr(ins[1].shape)}`,
        );
      }
      return [{ ...ins[0] }];
    }
    case "take_along_axis": {
      arity(2);
      requireIndex(op, ins[1]);
      const s = ins[0].shape;
      const axis = normAxis(a.axis as number, s.length, op);
      const is = ins[1].shape;
      if (is.length !== s.length || is.some((d, i) => i !== axis && d !== s[i])) {
        throw new ShapeError(`take_along_axis: indices ${shapeStr(is)} must match ${shapeStr(s)} except on axis ${axis}`);
      }
      return [{ dtype: ins[0].dtype, shape: [...is] }];
    }
    case "put_along_axis_add": {
      arity(3);
      requireIndex(op, ins[1]);
      const s = ins[0].shape;
      const axis = normAxis(a.axis as number, s.length, op);
      const is = ins[1].shape;
      if (is.length !== s.length || is.some((d, i) => i !== axis && d !== s[i]) || !sameSizeAndShape(ins[2].shape, is)) {
        throw new ShapeError(
          `put_along_axis_add: indices ${shapeStr(is)} and updates ${shapeStr(ins[2].shape)} do not fit base ${shapeStr(s)} on axis ${axis}`,
        );
      }
      return [{ ...ins[0] }];
    }
    case "expand": {
      arity(1);
      const shape = a.shape as Dim[];
      const b = broadcastShapes(ins[0].shape, shape, op);
      if (b.length !== shape.length || b.some((d, i) => d !== shape[i])) {
        throw new ShapeError(`expand: cannot broadcast ${shapeStr(ins[0].shape)} to ${shapeStr(shape)}`);
      }
      return [{ dtype: ins[0].dtype, shape: [...shape] }];
    }
    case "pad": {
      arity(1);
      const pads = a.pads as number[];
      const s = ins[0].shape;
      if (pads.length !== 2 * s.length || pads.some((p) => !Number.isInteger(p) || p < 0)) {
        throw new ShapeError(`pad: pads [${pads}] must be ${2 * s.length} non-negative integers for ${shapeStr(s)}`);
      }
      const shape = s.map((d, i) => {
        if (pads[i] === 0 && pads[i + s.length] === 0) return d;
        return requireStaticDim(op, d, `padded axis ${i}`) + pads[i] + pads[i + s.length];
      });
      return [{ dtype: ins[0].dtype, shape }];
    }
    case "cast":
      arity(1);
      return [{ dtype: a.to as DType, shape: [...ins[0].shape] }];
    case "topk": {
      arity(1);
      const s = ins[0].shape;
      const axis = normAxis(a.axis as number, s.length, op);
      const k = a.k as number;
      const size = requireStaticDim(op, s[axis], "the top-k axis");
      if (!Number.isInteger(k) || k < 1 || k > size)
        throw new ShapeError(`topk: k=${k} is out of range for axis ${axis} of ${shapeStr(s)}`);
      const shape = [...s];
      shape[axis] = k;
      return [
        { dtype: ins[0].dtype, shape },
        { dtype: "i64", shape: [...shape] },
      ];
    }
    case "cumsum": {
      arity(1);
      normAxis(a.axis as number, ins[0].shape.length, op);
      return [{ ...ins[0] }];
    }
    case "trilu":
      arity(1);
      if (ins[0].shape.length < 2) throw new ShapeError(`trilu: needs rank >= 2, got ${shapeStr(ins[0].shape)}`);
      return [{ ...ins[0] }];
    case "iota": {
      arity(0);
      const shape = a.shape as Dim[];
      normAxis(a.axis as number, shape.length, op);
      return [{ dtype: a.dtype as DType, shape: [...shape] }];
    }
    case "random_uniform":
    case "random_normal": {
      arity(1);
      if (ins[0].dtype !== "i64") {
        throw new ShapeError(`${op}: the seed must be i64, got ${describe(ins)}`);
      }
      const dt = a.dtype as DType;
      if (dt !== "f32" && dt !== "f64") throw new ShapeError(`${op}: dtype must be f32 or f64, got ${dt}`);
      return [{ dtype: dt, shape: [...ins[0].shape, ...(a.shape as Dim[])] }];
    }
    case "stop_gradient":
      arity(1);
      return [{ ...ins[0] }];
    case "custom_vjp": {
      const n = a.nPrimals as number;
      if (ins.length <= n) throw new ShapeError("custom_vjp: the forward function returned no outputs");
      return ins.slice(n).map((v) => ({ ...v }));
    }
  }
  throw new ShapeError(`unknown op "${op}"`);
}

function sameSizeAndShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
