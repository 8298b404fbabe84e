/**
 * Gradient-check cases: together they exercise every primitive and every composite. Shared by
 * the gradient tests and the mutation test that breaks each derivative rule in turn.
 */
import { type HostTensor, hostTensor } from "../ir/host.js";
import * as C from "../trace/composites.js";
import { concat, iota, randomNormal, randomUniform, scalar, type Tensor, where } from "../trace/tensor.js";

export interface GradCase {
  name: string;
  f: (...xs: Tensor[]) => Tensor;
  inputs: () => HostTensor[];
}

/** Uniform in [lo, hi). */
export function rand(shape: number[], lo = -1, hi = 1): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float64Array(n);
  for (let i = 0; i < n; i++) d[i] = lo + (hi - lo) * Math.random();
  return hostTensor("f64", shape, d);
}

/** Magnitudes in [lo, hi) with random signs: keeps inputs away from kinks at 0. */
export function randAway(shape: number[], lo = 0.2, hi = 1): HostTensor {
  const t = rand(shape, lo, hi);
  const d = t.data as Float64Array;
  for (let i = 0; i < d.length; i++) if (Math.random() < 0.5) d[i] = -d[i];
  return t;
}

/** Distinct values (a shuffled grid plus small noise) so max/topk have no ties or near-ties. */
export function randDistinct(shape: number[]): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const vals = Array.from({ length: n }, (_, i) => (i - n / 2) * 0.1 + Math.random() * 0.02);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [vals[i], vals[j]] = [vals[j], vals[i]];
  }
  return hostTensor("f64", shape, Float64Array.from(vals));
}

export function ints(shape: number[], values: number[]): HostTensor {
  return hostTensor("i64", shape, values);
}

export function randInts(shape: number[], hi: number): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return ints(
    shape,
    Array.from({ length: n }, () => Math.floor(Math.random() * hi)),
  );
}

const seed = (v: number) => hostTensor("i64", [], [v]);

export const GRAD_CASES: GradCase[] = [
  // ---- unary ----
  { name: "neg", f: (x) => x.neg(), inputs: () => [rand([3, 4])] },
  { name: "exp", f: (x) => x.exp(), inputs: () => [rand([3, 4])] },
  { name: "log", f: (x) => x.log(), inputs: () => [rand([3, 4], 0.5, 2)] },
  { name: "sqrt", f: (x) => x.sqrt(), inputs: () => [rand([3, 4], 0.5, 2)] },
  { name: "rsqrt", f: (x) => x.rsqrt(), inputs: () => [rand([3, 4], 0.5, 2)] },
  { name: "tanh", f: (x) => x.tanh(), inputs: () => [rand([3, 4], -2, 2)] },
  { name: "erf", f: (x) => x.erf(), inputs: () => [rand([3, 4], -2, 2)] },
  { name: "sigmoid", f: (x) => x.sigmoid(), inputs: () => [rand([3, 4], -3, 3)] },
  { name: "sin", f: (x) => x.sin(), inputs: () => [rand([3, 4], -3, 3)] },
  { name: "cos", f: (x) => x.cos(), inputs: () => [rand([3, 4], -3, 3)] },
  { name: "abs", f: (x) => x.abs(), inputs: () => [randAway([3, 4])] },
  { name: "sign", f: (x) => x.sign().mul(x), inputs: () => [randAway([3, 4])] },
  { name: "reciprocal", f: (x) => x.reciprocal(), inputs: () => [randAway([3, 4], 0.5, 2)] },
  { name: "floor/round", f: (x) => x.floor().add(x.mul(3).round()).add(x.mul(x)), inputs: () => [rand([3, 4], 0.05, 0.15)] },

  // ---- binary, with broadcasting on both sides ----
  { name: "add", f: (a, b) => a.add(b), inputs: () => [rand([3, 4]), rand([4])] },
  { name: "sub", f: (a, b) => a.sub(b), inputs: () => [rand([3, 1]), rand([3, 4])] },
  { name: "mul", f: (a, b) => a.mul(b), inputs: () => [rand([2, 3, 4]), rand([3, 1])] },
  { name: "div", f: (a, b) => a.div(b), inputs: () => [rand([3, 4]), randAway([4], 0.5, 2)] },
  { name: "pow", f: (a, b) => a.pow(b), inputs: () => [rand([3, 4], 0.5, 2), rand([4], -2, 2)] },
  { name: "maximum", f: (a, b) => a.maximum(b), inputs: () => [randDistinct([3, 4]), randDistinct([3, 4])] },
  { name: "minimum", f: (a, b) => a.minimum(b), inputs: () => [randDistinct([3, 4]), randDistinct([4])] },
  { name: "clamp/relu", f: (x) => x.clamp(-0.3, 0.6).add(x.relu()), inputs: () => [randDistinct([4, 5])] },
  {
    name: "compare/logical/where",
    f: (a, b) => {
      const c1 = a.lt(b).or(a.ge(0.5)).and(a.ne(b)).and(b.le(0.9).not().not());
      const c2 = a.gt(b).or(a.eq(b));
      return where(c1, a.mul(2), b.mul(3)).add(where(c2, a.mul(b), b));
    },
    inputs: () => [randDistinct([3, 4]), randDistinct([3, 4])],
  },
  { name: "where broadcast", f: (a, b) => where(a.gt(0), a, b), inputs: () => [randAway([3, 4]), rand([4])] },
  { name: "cast", f: (x) => x.cast("f32").mul(2).cast("f64").mul(x), inputs: () => [rand([3, 4])] },

  // ---- matmul ----
  { name: "matmul 2d", f: (a, b) => a.matmul(b), inputs: () => [rand([3, 4]), rand([4, 5])] },
  { name: "matmul batch x weight", f: (a, b) => a.matmul(b), inputs: () => [rand([2, 3, 4]), rand([4, 5])] },
  { name: "matmul broadcast batch", f: (a, b) => a.matmul(b), inputs: () => [rand([2, 1, 3, 4]), rand([3, 4, 2])] },
  { name: "matmul weight x batch", f: (a, b) => a.matmul(b), inputs: () => [rand([3, 4]), rand([2, 4, 5])] },

  // ---- reductions ----
  { name: "sum", f: (x) => x.sum([0, 2]).add(x.sum(1, true).sum()), inputs: () => [rand([2, 3, 4])] },
  { name: "mean", f: (x) => x.mean(-1, true).mul(x), inputs: () => [rand([3, 4])] },
  { name: "max", f: (x) => x.max(1).add(x.max(0, true).sum()), inputs: () => [randDistinct([3, 4])] },
  { name: "max with ties", f: (x) => x.maximum(0.5).max(1), inputs: () => [rand([3, 4], 0.6, 1)] },
  { name: "argmax + take_along_axis", f: (x) => x.takeAlongAxis(x.argmax(1, true), 1), inputs: () => [randDistinct([3, 5])] },

  // ---- movement ----
  { name: "reshape", f: (x) => x.reshape([4, 6]).mul(iota([4, 6], 1, "f64")), inputs: () => [rand([2, 3, 4])] },
  { name: "transpose", f: (x) => x.permute([2, 0, 1]).mul(iota([4, 2, 3], 0, "f64")), inputs: () => [rand([2, 3, 4])] },
  { name: "concat", f: (a, b) => concat([a, b, a], 1), inputs: () => [rand([2, 3]), rand([2, 2])] },
  { name: "slice", f: (x) => x.slice(1, 1, 3).add(x.slice(0, 0, 1).sum()), inputs: () => [rand([3, 4])] },
  { name: "pad", f: (x) => x.pad([1, 0, 2, 3], 0.5).mul(iota([6, 7], 1, "f64")), inputs: () => [rand([3, 4])] },
  { name: "expand", f: (x) => x.expand([2, 3, 4]).mul(iota([2, 3, 4], 0, "f64").add(1)), inputs: () => [rand([3, 1])] },
  { name: "gather (dup + negative indices)", f: (x, i) => x.gather(i, 0), inputs: () => [rand([5, 3]), ints([2, 3], [0, 4, 0, 2, -1, 2])] },
  { name: "gather axis 1", f: (x, i) => x.gather(i, 1), inputs: () => [rand([2, 5, 3]), randInts([4], 5)] },
  { name: "scatter_add", f: (b, u, i) => b.scatterAdd(i, u, 1).mul(b), inputs: () => [rand([2, 4]), rand([2, 3]), ints([3], [1, 3, 1])] },
  { name: "take_along_axis", f: (x, i) => x.takeAlongAxis(i, 1), inputs: () => [rand([3, 4]), randInts([3, 6], 4)] },
  {
    name: "put_along_axis_add",
    f: (b, u, i) => b.putAlongAxisAdd(i, u, 0).mul(b),
    inputs: () => [rand([3, 2]), rand([4, 2]), randInts([4, 2], 3)],
  },
  { name: "topk", f: (x) => x.topk(2, 1)[0].add(x.topk(2, 0, false)[0].sum()), inputs: () => [randDistinct([3, 5])] },
  {
    name: "cumsum",
    f: (x) =>
      x
        .cumsum(1)
        .add(x.cumsum(1, { reverse: true }))
        .add(x.cumsum(0, { exclusive: true }))
        .add(x.cumsum(1, { reverse: true, exclusive: true })),
    inputs: () => [rand([3, 4])],
  },
  { name: "trilu", f: (x) => x.triu(1).add(x.tril(-1).mul(2)).add(x.triu().mul(x)), inputs: () => [rand([2, 4, 4])] },
  { name: "iota", f: (x) => x.mul(iota([3, 4], 0, "f64")).add(x.mul(iota([3, 4], 1, "i64").cast("f64"))), inputs: () => [rand([3, 4])] },
  {
    name: "random_uniform/random_normal",
    f: (x, s) => x.mul(randomUniform(s, [3, 4], "f64")).add(x.mul(x).mul(randomNormal(s, [4], "f64"))),
    inputs: () => [rand([3, 4]), seed(Math.floor(Math.random() * 1e9))],
  },

  // ---- composites ----
  { name: "softmax", f: (x) => x.softmax(-1), inputs: () => [rand([3, 5], -2, 2)] },
  { name: "logSoftmax", f: (x) => x.logSoftmax(0), inputs: () => [rand([3, 5], -2, 2)] },
  { name: "logSumExp", f: (x) => x.logSumExp(1), inputs: () => [rand([3, 5], -2, 2)] },
  { name: "layerNorm", f: (x, w, b) => C.layerNorm(x, w, b, 1e-5), inputs: () => [rand([2, 3, 6]), rand([6]), rand([6])] },
  { name: "rmsNorm", f: (x, w) => C.rmsNorm(x, w, 1e-6), inputs: () => [rand([2, 3, 6]), rand([6])] },
  { name: "gelu", f: (x) => x.gelu(), inputs: () => [rand([3, 4], -3, 3)] },
  { name: "gelu tanh", f: (x) => x.gelu("tanh"), inputs: () => [rand([3, 4], -3, 3)] },
  { name: "silu", f: (x) => x.silu(), inputs: () => [rand([3, 4], -3, 3)] },
  {
    name: "crossEntropy (ignore index)",
    f: (x, y) => C.crossEntropy(x, y, { ignoreIndex: -100 }),
    inputs: () => [rand([2, 3, 5], -2, 2), ints([2, 3], [1, 4, -100, 0, 2, 3])],
  },
  {
    name: "crossEntropy sum",
    f: (x, y) => C.crossEntropy(x, y, { reduction: "sum" }),
    inputs: () => [rand([4, 3], -2, 2), randInts([4], 3)],
  },
  { name: "dropout", f: (x, s) => C.dropout(x, 0.3, s), inputs: () => [rand([4, 5]), seed(7)] },
  {
    name: "attention block",
    f: (q, k, v) => {
      const s = q.matmul(k.transpose(-1, -2)).mul(1 / Math.sqrt(4));
      const mask = iota([3, 3], 0).lt(iota([3, 3], 1));
      return where(mask, scalar(-1e9, "f64"), s).softmax(-1).matmul(v);
    },
    inputs: () => [rand([2, 3, 4]), rand([2, 3, 4]), rand([2, 3, 4])],
  },
];
