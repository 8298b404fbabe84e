/**
 * Composite ops built from primitives. Their derivatives come from the primitives' rules, so
 * they need no rules of their own; a fused version with a hand-written backward can replace
 * one later through customVjp if a benchmark shows it pays.
 */
import { ShapeError } from "../errors.js";
import { isInt } from "../ir/dtype.js";
import { normAxis, shapeStr } from "../ir/shape.js";
import { concat, randomUniform, scalar, type Tensor, where } from "./tensor.js";
import { customVjp } from "./trace.js";

/**
 * Softmax with a hand-written backward, dx = y·(g − Σ g·y), which keeps one temporary of the
 * input's size instead of the several that differentiating exp/sum/div would record.
 */
export function softmax(x: Tensor, axis = -1): Tensor {
  const fused = customVjp(
    "softmax",
    (t) => {
      // Subtracting the max changes nothing mathematically; it only keeps exp finite.
      const e = t.sub(t.max(axis, true)).exp();
      return [e.div(e.sum(axis, true))];
    },
    (_p, [y], [g]) => [g ? y.mul(g.sub(g.mul(y).sum(axis, true))) : null],
  );
  return fused(x)[0];
}

export function logSumExp(x: Tensor, axis = -1, keepdim = false): Tensor {
  const m = x.max(axis, true).stopGradient();
  const out = x.sub(m).exp().sum(axis, true).log().add(m);
  return keepdim ? out : out.squeeze(axis);
}

export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return x.sub(logSumExp(x, axis, true));
}

/** LayerNorm over the last axis with biased variance, as torch.nn.LayerNorm. */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps = 1e-5): Tensor {
  const mu = x.mean(-1, true);
  const xc = x.sub(mu);
  const variance = xc.mul(xc).mean(-1, true);
  let y = xc.mul(variance.add(eps).rsqrt());
  if (weight) y = y.mul(weight);
  if (bias) y = y.add(bias);
  return y;
}

/** RMSNorm as in LLaMA: x · rsqrt(mean(x²) + eps) · w. */
export function rmsNorm(x: Tensor, weight: Tensor | null, eps = 1e-6): Tensor {
  const y = x.mul(x.mul(x).mean(-1, true).add(eps).rsqrt());
  return weight ? y.mul(weight) : y;
}

/** GELU, exact (erf) or with the tanh approximation GPT-2 uses ("gelu_new"). */
export function gelu(x: Tensor, approximate: "none" | "tanh" = "none"): Tensor {
  if (approximate === "tanh") {
    const inner = x.add(x.mul(x).mul(x).mul(0.044715)).mul(Math.sqrt(2 / Math.PI));
    return x.mul(0.5).mul(inner.tanh().add(1));
  }
  return x.mul(0.5).mul(x.mul(Math.SQRT1_2).erf().add(1));
}

/**
 * x·σ(x), with a hand-written backward g·(σ + y·(1 − σ)) from the saved σ and output y: four
 * elementwise passes instead of the seven that the product and sigmoid rules give.
 */
const siluVjp = customVjp(
  "silu",
  (x) => {
    const s = x.sigmoid();
    return [x.mul(s), s];
  },
  (_primals, [y, s], [g]) => [g ? g.mul(s.add(y.mul(scalar(1, s.dtype).sub(s)))) : null],
);

export function silu(x: Tensor): Tensor {
  return siluVjp(x)[0];
}

export interface CrossEntropyOptions {
  /** Label value whose positions count neither in the loss nor in the mean (default -100, as PyTorch). */
  ignoreIndex?: number;
  reduction?: "mean" | "sum" | "none";
}

/**
 * Cross-entropy of logits [..., C] against integer labels [...]. With reduction "mean", the mean is
 * over non-ignored positions (0 when all are ignored).
 */
export function crossEntropy(logits: Tensor, labels: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  if (!isInt(labels.dtype)) throw new ShapeError(`crossEntropy: labels must be integers, got ${labels.dtype}${shapeStr(labels.shape)}`);
  if (labels.rank !== logits.rank - 1 || labels.shape.some((d, i) => d !== logits.shape[i])) {
    throw new ShapeError(
      `crossEntropy: labels ${shapeStr(labels.shape)} do not match logits ${shapeStr(logits.shape)} without the class axis`,
    );
  }
  const ignore = opts.ignoreIndex ?? -100;
  const valid = labels.ne(ignore);
  const safe = where(valid, labels, 0).unsqueeze(-1);
  const validF = valid.cast(logits.dtype);
  // Per-position NLL with a fused backward: softmax(z) − onehot(label), scaled by the incoming
  // gradient. Differentiating log-softmax step by step would keep several vocab-sized temporaries.
  const nllOf = customVjp(
    "cross_entropy",
    (z) => {
      const lse = logSumExp(z, -1, true);
      return [lse.sub(z.takeAlongAxis(safe, -1)).squeeze(-1).mul(validF), lse];
    },
    ([z], [, lse], [g]) => {
      if (!g) return [null];
      const w = g.mul(validF).unsqueeze(-1);
      return [z.sub(lse).exp().mul(w).putAlongAxisAdd(safe, w.neg(), -1)];
    },
  );
  const nll = nllOf(logits)[0];
  const reduction = opts.reduction ?? "mean";
  if (reduction === "none") return nll;
  const total = nll.sum();
  if (reduction === "sum") return total;
  return total.div(validF.sum().maximum(1));
}

/**
 * Cross entropy over a vocabulary split into consecutive blocks, without the whole logits: each
 * block's logits are reduced at once to [..., 2] statistics (its log-sum-exp, and the label's logit
 * where the label falls in the block, else 0), which crossEntropyFromBlocks combines into
 * crossEntropy's value (same ignore index, sum or mean over the non-ignored positions). The
 * forward-only MeZO step applies a large LM head block by block this way (src/train/zo/trainer.ts).
 */
export function crossEntropyBlockStats(logits: Tensor, labels: Tensor, start: number, opts: CrossEntropyOptions = {}): Tensor {
  const n = logits.shape[logits.rank - 1] as number;
  const ignore = opts.ignoreIndex ?? -100;
  const local = labels.sub(start);
  const inside = local.ge(0).and(local.lt(n)).and(labels.ne(ignore));
  const picked = logits.takeAlongAxis(where(inside, local, 0).unsqueeze(-1), -1);
  return concat([logSumExp(logits, -1, true), where(inside.unsqueeze(-1), picked, 0)], -1);
}

/** crossEntropy's value from the blocks' crossEntropyBlockStats, in vocabulary order. */
export function crossEntropyFromBlocks(stats: readonly Tensor[], labels: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  if (opts.reduction === "none") throw new ShapeError("crossEntropyFromBlocks: reduction none is not offered");
  // [..., k blocks, (lse, target)]
  const all = concat(stats, -1).reshape([...labels.shape, stats.length, 2]);
  const lse = logSumExp(all.slice(-1, 0, 1).squeeze(-1), -1);
  const target = all.slice(-1, 1, 2).squeeze(-1).sum(-1);
  const validF = labels.ne(opts.ignoreIndex ?? -100).cast(lse.dtype);
  const total = lse.sub(target).mul(validF).sum();
  if (opts.reduction === "sum") return total;
  return total.div(validF.sum().maximum(1));
}

/** Inverted dropout with a mask drawn from the seed tensor, so a step is replayable. */
export function dropout(x: Tensor, p: number, seed: Tensor): Tensor {
  if (p <= 0) return x;
  if (p >= 1) throw new ShapeError(`dropout: p must be < 1, got ${p}`);
  const keep = randomUniform(seed, [...x.shape], x.dtype).ge(p);
  return where(keep, x.mul(1 / (1 - p)), 0);
}

/** Index of the class axis, for callers that take negative axes. */
export function classAxis(x: Tensor, axis: number): number {
  return normAxis(axis, x.rank, "class axis");
}
