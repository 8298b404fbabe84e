import { EngineUsageError, ShapeError } from "../errors.js";
import { type DType, isFloat } from "../ir/dtype.js";
import type { Graph } from "../ir/graph.js";
import { type HostTensor, hostTensor } from "../ir/host.js";
import type { AttrsOf, OpName } from "../ir/ops.js";
import { type Dim, normAxis, productDim, type Shape, shapeStr, symbolicSize } from "../ir/shape.js";
import * as C from "./composites.js";
import { currentGraph } from "./context.js";

export type TensorLike = Tensor | number;

/**
 * A value in the graph being traced. Methods record IR nodes; nothing is computed until the
 * graph runs on a backend. Method names follow PyTorch where one exists.
 */
export class Tensor {
  constructor(
    readonly graph: Graph,
    readonly id: number,
  ) {}

  get dtype(): DType {
    return this.graph.type(this.id).dtype;
  }
  get shape(): Shape {
    return this.graph.type(this.id).shape;
  }
  get rank(): number {
    return this.shape.length;
  }
  /** Size of one dimension, which must be fixed. */
  dim(axis: number): number {
    const d = this.shape[normAxis(axis, this.rank, "dim")];
    if (typeof d !== "number") throw new ShapeError(`dim(${axis}) of ${shapeStr(this.shape)} is symbolic ("${d}")`);
    return d;
  }

  toString(): string {
    return `Tensor(%${this.id}: ${this.dtype}${shapeStr(this.shape)})`;
  }

  // ---- elementwise ----
  add(o: TensorLike): Tensor {
    return binary("add", this, o);
  }
  sub(o: TensorLike): Tensor {
    return binary("sub", this, o);
  }
  mul(o: TensorLike): Tensor {
    return binary("mul", this, o);
  }
  div(o: TensorLike): Tensor {
    return binary("div", this, o);
  }
  pow(o: TensorLike): Tensor {
    return binary("pow", this, o);
  }
  maximum(o: TensorLike): Tensor {
    return binary("maximum", this, o);
  }
  minimum(o: TensorLike): Tensor {
    return binary("minimum", this, o);
  }
  lt(o: TensorLike): Tensor {
    return binary("lt", this, o);
  }
  le(o: TensorLike): Tensor {
    return binary("le", this, o);
  }
  gt(o: TensorLike): Tensor {
    return binary("gt", this, o);
  }
  ge(o: TensorLike): Tensor {
    return binary("ge", this, o);
  }
  eq(o: TensorLike): Tensor {
    return binary("eq", this, o);
  }
  ne(o: TensorLike): Tensor {
    return binary("ne", this, o);
  }
  and(o: Tensor): Tensor {
    return binary("and", this, o);
  }
  or(o: Tensor): Tensor {
    return binary("or", this, o);
  }
  not(): Tensor {
    return op1("not", [this], {});
  }
  neg(): Tensor {
    return op1("neg", [this], {});
  }
  exp(): Tensor {
    return op1("exp", [this], {});
  }
  log(): Tensor {
    return op1("log", [this], {});
  }
  sqrt(): Tensor {
    return op1("sqrt", [this], {});
  }
  rsqrt(): Tensor {
    return op1("rsqrt", [this], {});
  }
  tanh(): Tensor {
    return op1("tanh", [this], {});
  }
  erf(): Tensor {
    return op1("erf", [this], {});
  }
  sigmoid(): Tensor {
    return op1("sigmoid", [this], {});
  }
  sin(): Tensor {
    return op1("sin", [this], {});
  }
  cos(): Tensor {
    return op1("cos", [this], {});
  }
  abs(): Tensor {
    return op1("abs", [this], {});
  }
  sign(): Tensor {
    return op1("sign", [this], {});
  }
  reciprocal(): Tensor {
    return op1("reciprocal", [this], {});
  }
  floor(): Tensor {
    return op1("floor", [this], {});
  }
  round(): Tensor {
    return op1("round", [this], {});
  }
  square(): Tensor {
    return this.mul(this);
  }
  clamp(min?: number, max?: number): Tensor {
    let y: Tensor = this;
    if (min !== undefined) y = y.maximum(min);
    if (max !== undefined) y = y.minimum(max);
    return y;
  }
  relu(): Tensor {
    return this.maximum(0);
  }
  /** where(this, a, b): `this` is the bool condition. */
  where(a: TensorLike, b: TensorLike): Tensor {
    const like = a instanceof Tensor ? a : b instanceof Tensor ? b : undefined;
    const dt = like?.dtype ?? "f32";
    return op1("where", [this, lift(a, dt), lift(b, dt)], {});
  }
  cast(to: DType): Tensor {
    if (to === this.dtype) return this;
    return op1("cast", [this], { to });
  }

  // ---- linear algebra ----
  matmul(o: Tensor): Tensor {
    return op1("matmul", [this, o], {});
  }

  // ---- reductions ----
  sum(axes?: number | number[], keepdim = false): Tensor {
    return op1("reduce_sum", [this], { axes: axesOf(this, axes), keepdims: keepdim });
  }
  mean(axes?: number | number[], keepdim = false): Tensor {
    const ax = axesOf(this, axes);
    const sizes = ax.map((a) => this.shape[a]);
    if (sizes.every((d) => typeof d === "number")) {
      return this.sum(ax, keepdim).div((sizes as number[]).reduce((p, q) => p * q, 1));
    }
    // A symbolic count is only known at run time: count by summing ones of the same shape.
    const count = scalar(1, this.dtype)
      .expand([...this.shape])
      .sum(ax, keepdim);
    return this.sum(ax, keepdim).div(count);
  }
  max(axes?: number | number[], keepdim = false): Tensor {
    return op1("reduce_max", [this], { axes: axesOf(this, axes), keepdims: keepdim });
  }
  argmax(axis: number, keepdim = false): Tensor {
    return op1("argmax", [this], { axis: normAxis(axis, this.rank, "argmax"), keepdims: keepdim });
  }

  // ---- shape ----
  reshape(shape: readonly Dim[]): Tensor {
    return op1("reshape", [this], { shape: resolveReshape(this.shape, shape) });
  }
  transpose(d0 = -2, d1 = -1): Tensor {
    const perm = [...Array(this.rank).keys()];
    const a = normAxis(d0, this.rank, "transpose");
    const b = normAxis(d1, this.rank, "transpose");
    [perm[a], perm[b]] = [perm[b], perm[a]];
    return this.permute(perm);
  }
  permute(perm: readonly number[]): Tensor {
    if (perm.every((p, i) => p === i) && perm.length === this.rank) return this;
    // Undoing a transpose gives back its input: weight gradients come out of the matmul rule
    // already transposed for weights that enter the graph transposed (x·Wᵀ).
    const prev = this.transposedFrom();
    if (prev && prev.perm.length === perm.length && perm.every((p, i) => prev.perm[p] === i)) return prev.input;
    return op1("transpose", [this], { perm: [...perm] });
  }
  /** The input and permutation of the transpose node that produced this tensor, if one did. */
  transposedFrom(): { input: Tensor; perm: readonly number[] } | null {
    const idx = this.graph.producer.get(this.id);
    const node = idx === undefined ? undefined : this.graph.nodes[idx];
    if (node?.op !== "transpose") return null;
    return { input: new Tensor(this.graph, node.inputs[0]), perm: node.attrs.perm as number[] };
  }
  unsqueeze(axis: number): Tensor {
    const a = normAxis(axis, this.rank + 1, "unsqueeze");
    const s = [...this.shape];
    s.splice(a, 0, 1);
    return op1("reshape", [this], { shape: s });
  }
  squeeze(axis: number): Tensor {
    const a = normAxis(axis, this.rank, "squeeze");
    if (this.shape[a] !== 1) throw new ShapeError(`squeeze: axis ${axis} of ${shapeStr(this.shape)} is not 1`);
    const s = [...this.shape];
    s.splice(a, 1);
    return op1("reshape", [this], { shape: s });
  }
  flatten(): Tensor {
    return this.reshape([-1]);
  }
  expand(shape: readonly Dim[]): Tensor {
    if (shape.length === this.rank && shape.every((d, i) => d === this.shape[i])) return this;
    return op1("expand", [this], { shape: [...shape] });
  }
  /** x[..., start:end, ...] along one axis. Negative bounds count from the end. */
  slice(axis: number, start: number, end?: number): Tensor {
    const a = normAxis(axis, this.rank, "slice");
    const n = this.dim(a);
    let s = start < 0 ? start + n : start;
    let e = end === undefined ? n : end < 0 ? end + n : end;
    s = Math.max(0, Math.min(n, s));
    e = Math.max(s, Math.min(n, e));
    if (s === 0 && e === n) return this;
    return op1("slice", [this], { axis: a, start: s, end: e });
  }
  /** Splits along an axis into pieces of the given sizes. */
  split(sizes: readonly number[], axis: number): Tensor[] {
    let at = 0;
    return sizes.map((s) => {
      const t = this.slice(axis, at, at + s);
      at += s;
      return t;
    });
  }
  pad(pads: readonly number[], value = 0): Tensor {
    if (pads.every((p) => p === 0)) return this;
    return op1("pad", [this], { pads: [...pads], value });
  }
  gather(idx: Tensor, axis = 0): Tensor {
    return op1("gather", [this, idx], { axis: normAxis(axis, this.rank, "gather") });
  }
  /** x[..., i, ...]: one index along an axis, which is removed (works on symbolic axes). */
  select(axis: number, i: number): Tensor {
    return this.gather(constant(hostTensor("i64", [], [i])), axis);
  }
  indexSelect(axis: number, idx: Tensor): Tensor {
    return this.gather(idx, axis);
  }
  scatterAdd(idx: Tensor, updates: Tensor, axis = 0): Tensor {
    return op1("scatter_add", [this, idx, updates], { axis: normAxis(axis, this.rank, "scatter_add") });
  }
  takeAlongAxis(idx: Tensor, axis: number): Tensor {
    return op1("take_along_axis", [this, idx], { axis: normAxis(axis, this.rank, "take_along_axis") });
  }
  putAlongAxisAdd(idx: Tensor, updates: Tensor, axis: number): Tensor {
    return op1("put_along_axis_add", [this, idx, updates], { axis: normAxis(axis, this.rank, "put_along_axis_add") });
  }
  topk(k: number, axis = -1, largest = true): [Tensor, Tensor] {
    const g = this.graph;
    const outs = g.addNode("topk", [this.id], { k, axis: normAxis(axis, this.rank, "topk"), largest });
    return [new Tensor(g, outs[0]), new Tensor(g, outs[1])];
  }
  cumsum(axis: number, opts: { reverse?: boolean; exclusive?: boolean } = {}): Tensor {
    return op1("cumsum", [this], {
      axis: normAxis(axis, this.rank, "cumsum"),
      reverse: opts.reverse ?? false,
      exclusive: opts.exclusive ?? false,
    });
  }
  triu(k = 0): Tensor {
    return op1("trilu", [this], { upper: true, k });
  }
  tril(k = 0): Tensor {
    return op1("trilu", [this], { upper: false, k });
  }
  // ---- composites (trace/composites.ts) ----
  softmax(axis = -1): Tensor {
    return C.softmax(this, axis);
  }
  logSoftmax(axis = -1): Tensor {
    return C.logSoftmax(this, axis);
  }
  logSumExp(axis = -1, keepdim = false): Tensor {
    return C.logSumExp(this, axis, keepdim);
  }
  gelu(approximate: "none" | "tanh" = "none"): Tensor {
    return C.gelu(this, approximate);
  }
  silu(): Tensor {
    return C.silu(this);
  }
  stopGradient(): Tensor {
    return op1("stop_gradient", [this], {});
  }
  detach(): Tensor {
    return this.stopGradient();
  }
}

// ---- construction helpers ----

export function checkSameGraph(ts: readonly Tensor[]): Graph {
  const g = currentGraph();
  for (const t of ts) {
    if (t.graph !== g) throw new EngineUsageError(`${t} belongs to another trace; tensors cannot cross traces`);
  }
  return g;
}

/** Records one node with one output. */
export function op1<O extends OpName>(op: O, ins: readonly Tensor[], attrs: AttrsOf<O>): Tensor {
  const g = checkSameGraph(ins);
  const [out] = g.addNode(
    op,
    ins.map((t) => t.id),
    attrs,
  );
  return new Tensor(g, out);
}

export function constant(value: HostTensor): Tensor {
  return op1("constant", [], { value });
}

export function scalar(v: number, dtype: DType = "f32"): Tensor {
  return constant(hostTensor(dtype, [], [v]));
}

export function lift(x: TensorLike, dtype: DType): Tensor {
  return x instanceof Tensor ? x : scalar(x, dtype);
}

function binary(op: OpName, a: Tensor, b: TensorLike): Tensor {
  return op1(op, [a, lift(b, a.dtype)], {});
}

export function zeros(shape: readonly Dim[], dtype: DType = "f32"): Tensor {
  return scalar(0, dtype).expand(shape);
}

export function full(shape: readonly Dim[], v: number, dtype: DType = "f32"): Tensor {
  return scalar(v, dtype).expand(shape);
}

export function iota(shape: readonly Dim[], axis: number, dtype: DType = "i64"): Tensor {
  return op1("iota", [], { shape: [...shape], axis: normAxis(axis, shape.length, "iota"), dtype });
}

export function arange(n: Dim, dtype: DType = "i64"): Tensor {
  return iota([n], 0, dtype);
}

export function where(cond: Tensor, a: TensorLike, b: TensorLike): Tensor {
  return cond.where(a, b);
}

export function concat(ts: readonly Tensor[], axis: number): Tensor {
  if (ts.length === 0) throw new ShapeError("concat: needs at least one tensor");
  if (ts.length === 1) return ts[0];
  return op1("concat", ts, { axis: normAxis(axis, ts[0].rank, "concat") });
}

export function stack(ts: readonly Tensor[], axis = 0): Tensor {
  return concat(
    ts.map((t) => t.unsqueeze(axis)),
    axis < 0 ? axis : axis,
  );
}

/**
 * Counter-based random numbers driven by an i64 seed tensor: same seed, same numbers. A seed of
 * rank > 0 gives one stream per seed, output seed.shape ++ shape (MeZO's perturbation of only the
 * embedding rows a batch looks up, src/train/zo/step.ts).
 */
export function randomUniform(seed: Tensor, shape: readonly Dim[], dtype: DType = "f32"): Tensor {
  return op1("random_uniform", [seed], { shape: [...shape], dtype });
}

export function randomNormal(seed: Tensor, shape: readonly Dim[], dtype: DType = "f32"): Tensor {
  return op1("random_normal", [seed], { shape: [...shape], dtype });
}

function axesOf(t: Tensor, axes?: number | number[]): number[] {
  if (axes === undefined) return [...Array(t.rank).keys()];
  const list = typeof axes === "number" ? [axes] : axes;
  return list.map((a) => normAxis(a, t.rank, "reduce"));
}

/** Fills one -1 in a reshape target; symbolic dims pass through, and a -1 may become a product like "batch*seq". */
function resolveReshape(from: Shape, to: readonly Dim[]): Dim[] {
  const minus = to.filter((d) => d === -1).length;
  if (minus === 0) return [...to];
  if (minus > 1) throw new ShapeError(`reshape: more than one -1 in ${shapeStr(to)}`);
  const src = symbolicSize(from);
  const dst = symbolicSize(to.filter((d) => d !== -1));
  const leftover = [...src.symbols];
  for (const s of dst.symbols) {
    const i = leftover.indexOf(s);
    if (i < 0) throw new ShapeError(`reshape: cannot reshape ${shapeStr(from)} to ${shapeStr(to)}`);
    leftover.splice(i, 1);
  }
  if (dst.fixed === 0 || src.fixed % dst.fixed !== 0) {
    throw new ShapeError(`reshape: cannot reshape ${shapeStr(from)} to ${shapeStr(to)}`);
  }
  const fill = productDim(src.fixed / dst.fixed, leftover);
  return to.map((d) => (d === -1 ? fill : d));
}

export function isFloatTensor(t: Tensor): boolean {
  return isFloat(t.dtype);
}
