/**
 * Every derivative rule of the engine, one entry per primitive (the tinygrad gradient.py idea).
 * A rule maps the cotangents of a node's outputs to cotangents of its inputs, written with the
 * same Tensor API as models, so backward passes are ordinary IR and every backend runs them.
 * `needs[i]` is false for inputs no requested gradient depends on: a rule must not spend work
 * on those (that is how a frozen weight gets no weight-gradient matmul).
 */
import { EngineUsageError } from "../errors.js";
import { isFloat } from "../ir/dtype.js";
import type { OpAttrs, OpName } from "../ir/ops.js";
import type { Dim, Shape } from "../ir/shape.js";
import { scalar, type Tensor, where, zeros } from "../trace/tensor.js";

export interface VjpContext {
  inputs: Tensor[];
  outputs: Tensor[];
  attrs: Readonly<Record<string, unknown>>;
  needs: boolean[];
}

type Ct = Tensor | null;
export type VjpRule = (ctx: VjpContext, cts: Ct[]) => Ct[];

/** Sums a broadcast gradient back to the shape of the operand it was broadcast from. */
export function unbroadcast(g: Tensor, shape: Shape): Tensor {
  if (g.shape.length === shape.length && g.shape.every((d, i) => d === shape[i])) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) {
    if (i < lead) axes.push(i);
    else if (shape[i - lead] === 1 && g.shape[i] !== 1) axes.push(i);
  }
  const summed = axes.length ? g.sum(axes, true) : g;
  return summed.reshape([...shape]);
}

/** The rule of ops whose outputs carry no gradient (bool/int results, piecewise constants, sources). */
export const noGrad: VjpRule = (ctx) => ctx.inputs.map(() => null);

/** For unary ops: cotangent of the single input, computed only when needed. */
function unary(f: (x: Tensor, y: Tensor, g: Tensor) => Tensor): VjpRule {
  return ({ inputs, outputs, needs }, [g]) => [needs[0] && g ? f(inputs[0], outputs[0], g) : null];
}

/** For broadcasting binary ops: the local gradient w.r.t. each side, then unbroadcast. */
function binary(
  da: ((a: Tensor, b: Tensor, y: Tensor, g: Tensor) => Tensor) | null,
  db: ((a: Tensor, b: Tensor, y: Tensor, g: Tensor) => Tensor) | null,
): VjpRule {
  return ({ inputs: [a, b], outputs: [y], needs }, [g]) => {
    if (!g) return [null, null];
    return [needs[0] && da ? unbroadcast(da(a, b, y, g), a.shape) : null, needs[1] && db ? unbroadcast(db(a, b, y, g), b.shape) : null];
  };
}

/** Swaps the last two axes. */
function mT(t: Tensor): Tensor {
  return t.transpose(-1, -2);
}

/**
 * d(a@b). When one operand is a 2-D weight and the other has batch dims, the weight gradient is
 * one big matmul over the flattened batch instead of a batched matmul followed by a sum.
 */
const matmulRule: VjpRule = ({ inputs: [a, b], needs }, [g]) => {
  if (!g) return [null, null];
  let ga: Ct = null;
  let gb: Ct = null;
  if (needs[0]) ga = unbroadcast(g.matmul(mT(b)), a.shape);
  if (needs[1]) {
    if (b.rank === 2 && a.rank > 2) {
      const k = a.shape[a.rank - 1];
      const n = g.shape[g.rank - 1];
      const a2 = a.reshape([-1, k]);
      const g2 = g.reshape([-1, n]);
      // For b = Wᵀ (x·Wᵀ, PyTorch's Linear) with g narrower than a (LoRA's A: g has r columns),
      // (g2ᵀ·a2)ᵀ transposes g instead of the activations, and the transpose rule then hands
      // back W's gradient without transposing the result.
      const narrowG = typeof n === "number" && typeof k === "number" && n < k;
      gb = narrowG && b.transposedFrom() ? mT(mT(g2).matmul(a2)) : mT(a2).matmul(g2);
    } else gb = unbroadcast(mT(a).matmul(g), b.shape);
  }
  return [ga, gb];
};

function keepdimsShape(shape: Shape, axes: number[]): Dim[] {
  return shape.map((d, i) => (axes.includes(i) ? 1 : d));
}

function invertPerm(p: number[]): number[] {
  const inv = new Array<number>(p.length);
  p.forEach((v, i) => {
    inv[v] = i;
  });
  return inv;
}

type RuleTable = { [K in OpName]: VjpRule };

export const VJP_RULES: RuleTable = {
  // ---- no derivative: integer/bool results, piecewise-constant functions, sources ----
  constant: noGrad,
  iota: noGrad,
  random_uniform: noGrad,
  random_normal: noGrad,
  lt: noGrad,
  le: noGrad,
  gt: noGrad,
  ge: noGrad,
  eq: noGrad,
  ne: noGrad,
  and: noGrad,
  or: noGrad,
  not: noGrad,
  argmax: noGrad,
  floor: noGrad,
  round: noGrad,
  sign: noGrad,
  stop_gradient: noGrad,

  // ---- elementwise ----
  neg: unary((_x, _y, g) => g.neg()),
  exp: unary((_x, y, g) => g.mul(y)),
  log: unary((x, _y, g) => g.div(x)),
  sqrt: unary((_x, y, g) => g.mul(0.5).div(y)),
  rsqrt: unary((x, y, g) => g.mul(y).div(x).mul(-0.5)),
  tanh: unary((_x, y, g) => g.mul(y.mul(y).neg().add(1))),
  erf: unary((x, _y, g) =>
    g.mul(
      x
        .mul(x)
        .neg()
        .exp()
        .mul(2 / Math.sqrt(Math.PI)),
    ),
  ),
  sigmoid: unary((_x, y, g) => g.mul(y.mul(y.neg().add(1)))),
  sin: unary((x, _y, g) => g.mul(x.cos())),
  cos: unary((x, _y, g) => g.mul(x.sin()).neg()),
  abs: unary((x, _y, g) => g.mul(x.sign())),
  reciprocal: unary((_x, y, g) => g.mul(y.mul(y)).neg()),
  add: binary(
    (_a, _b, _y, g) => g,
    (_a, _b, _y, g) => g,
  ),
  sub: binary(
    (_a, _b, _y, g) => g,
    (_a, _b, _y, g) => g.neg(),
  ),
  mul: binary(
    (_a, b, _y, g) => g.mul(b),
    (a, _b, _y, g) => g.mul(a),
  ),
  div: binary(
    (_a, b, _y, g) => g.div(b),
    (_a, b, y, g) => g.mul(y).div(b).neg(),
  ),
  pow: binary(
    (a, b, _y, g) => g.mul(b).mul(a.pow(b.sub(1))),
    // d/db a^b = a^b ln a, taken as 0 where a <= 0 (where the real power is not differentiable in b).
    (a, _b, y, g) => g.mul(y).mul(where(a.gt(0), a.maximum(Number.MIN_VALUE).log(), 0)),
  ),
  // Ties send the whole gradient to the first operand, so the two sides always sum to g.
  maximum: binary(
    (a, b, _y, g) => where(a.ge(b), g, 0),
    (a, b, _y, g) => where(a.ge(b), 0, g),
  ),
  minimum: binary(
    (a, b, _y, g) => where(a.le(b), g, 0),
    (a, b, _y, g) => where(a.le(b), 0, g),
  ),
  where: ({ inputs: [c, a, b], needs }, [g]) => {
    if (!g) return [null, null, null];
    return [null, needs[1] ? unbroadcast(where(c, g, 0), a.shape) : null, needs[2] ? unbroadcast(where(c, 0, g), b.shape) : null];
  },
  cast: ({ inputs: [x], outputs: [y], needs }, [g]) => {
    if (!g || !needs[0] || !isFloat(x.dtype) || !isFloat(y.dtype)) return [null];
    return [g.cast(x.dtype)];
  },

  // ---- linear algebra and reductions ----
  matmul: matmulRule,
  reduce_sum: ({ inputs: [x], attrs, needs }, [g]) => {
    if (!g || !needs[0]) return [null];
    const { axes } = attrs as OpAttrs["reduce_sum"];
    return [g.reshape(keepdimsShape(x.shape, axes)).expand([...x.shape])];
  },
  // Ties share the gradient equally, which keeps the rule a true subgradient.
  reduce_max: ({ inputs: [x], outputs: [y], attrs, needs }, [g]) => {
    if (!g || !needs[0]) return [null];
    const { axes } = attrs as OpAttrs["reduce_max"];
    const ks = keepdimsShape(x.shape, axes);
    const mask = x.eq(y.reshape(ks)).cast(x.dtype);
    const count = mask.sum(axes, true);
    return [mask.div(count).mul(g.reshape(ks))];
  },

  // ---- movement ----
  reshape: ({ inputs: [x], needs }, [g]) => [g && needs[0] ? g.reshape([...x.shape]) : null],
  transpose: ({ attrs, needs }, [g]) => [g && needs[0] ? g.permute(invertPerm((attrs as OpAttrs["transpose"]).perm)) : null],
  concat: ({ inputs, attrs, needs }, [g]) => {
    if (!g) return inputs.map(() => null);
    const { axis } = attrs as OpAttrs["concat"];
    let at = 0;
    return inputs.map((x, i) => {
      const n = x.dim(axis);
      const piece = needs[i] ? g.slice(axis, at, at + n) : null;
      at += n;
      return piece;
    });
  },
  slice: ({ inputs: [x], attrs, needs }, [g]) => {
    if (!g || !needs[0]) return [null];
    const { axis, start, end } = attrs as OpAttrs["slice"];
    const pads = new Array<number>(2 * x.rank).fill(0);
    pads[axis] = start;
    pads[axis + x.rank] = x.dim(axis) - end;
    return [g.pad(pads, 0)];
  },
  pad: ({ inputs: [x], attrs, needs }, [g]) => {
    if (!g || !needs[0]) return [null];
    const { pads } = attrs as OpAttrs["pad"];
    let out = g;
    for (let i = 0; i < x.rank; i++) {
      if (pads[i] || pads[i + x.rank]) out = out.slice(i, pads[i], pads[i] + x.dim(i));
    }
    return [out];
  },
  expand: ({ inputs: [x], needs }, [g]) => [g && needs[0] ? unbroadcast(g, x.shape) : null],
  gather: ({ inputs: [x, idx], attrs, needs }, [g]) => {
    if (!g || !needs[0]) return [null, null];
    const { axis } = attrs as OpAttrs["gather"];
    return [zeros([...x.shape], x.dtype).scatterAdd(idx, g, axis), null];
  },
  scatter_add: ({ inputs: [, idx], attrs, needs }, [g]) => {
    if (!g) return [null, null, null];
    const { axis } = attrs as OpAttrs["scatter_add"];
    return [needs[0] ? g : null, null, needs[2] ? g.gather(idx, axis) : null];
  },
  take_along_axis: ({ inputs: [x, idx], attrs, needs }, [g]) => {
    if (!g || !needs[0]) return [null, null];
    const { axis } = attrs as OpAttrs["take_along_axis"];
    return [zeros([...x.shape], x.dtype).putAlongAxisAdd(idx, g, axis), null];
  },
  put_along_axis_add: ({ inputs: [, idx], attrs, needs }, [g]) => {
    if (!g) return [null, null, null];
    const { axis } = attrs as OpAttrs["put_along_axis_add"];
    return [needs[0] ? g : null, null, needs[2] ? g.takeAlongAxis(idx, axis) : null];
  },
  topk: ({ inputs: [x], outputs: [, idx], attrs, needs }, [g]) => {
    if (!g || !needs[0]) return [null];
    const { axis } = attrs as OpAttrs["topk"];
    return [zeros([...x.shape], x.dtype).putAlongAxisAdd(idx, g, axis)];
  },
  cumsum: ({ attrs, needs }, [g]) => {
    if (!g || !needs[0]) return [null];
    const { axis, reverse, exclusive } = attrs as OpAttrs["cumsum"];
    return [g.cumsum(axis, { reverse: !reverse, exclusive })];
  },
  trilu: ({ attrs, needs }, [g]) => {
    if (!g || !needs[0]) return [null];
    const { upper, k } = attrs as OpAttrs["trilu"];
    return [upper ? g.triu(k) : g.tril(k)];
  },

  // ---- hand-written derivatives ----
  custom_vjp: ({ inputs, outputs, attrs, needs }, cts) => {
    const { nPrimals, bwd, name } = attrs as OpAttrs["custom_vjp"];
    const primals = inputs.slice(0, nPrimals);
    const res = bwd(primals, outputs, cts);
    if (res.length !== nPrimals) {
      throw new EngineUsageError(`customVjp "${name}": backward returned ${res.length} cotangents for ${nPrimals} primals`);
    }
    const out: Ct[] = inputs.map(() => null);
    res.forEach((c, i) => {
      if (!needs[i] || !c) return;
      if (c.shape.length !== primals[i].shape.length || c.shape.some((d, j) => d !== primals[i].shape[j])) {
        throw new EngineUsageError(`customVjp "${name}": cotangent ${i} has shape [${c.shape}] but the primal has [${primals[i].shape}]`);
      }
      out[i] = c;
    });
    return out;
  },
};

/** A scalar one of a tensor's dtype, the seed cotangent of a loss. */
export function onesLike(t: Tensor): Tensor {
  return scalar(1, t.dtype).expand([...t.shape]);
}
