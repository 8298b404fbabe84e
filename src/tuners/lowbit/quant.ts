/**
 * The quantisation-aware forward of one adapter matrix, in the step graph, as
 * binary_adapter/utils.py QLinear.forward computes it:
 *
 *   μ = mean(w), σ = std_unbiased(w)     (whole matrix; gradients flow through both)
 *   w_n = (w − μ)/(σ + 1e-5)
 *   q = v_0 + Σ_k 1[w_n > t_k]·(v_{k+1} − v_k)     (the nearest level; t = midpoints)
 *   w_b = w_n + stop_gradient(q − w_n)   (value q, gradient of w_n: straight-through)
 *   W = w_b·σ + μ
 */
import { hostTensor } from "../../engine/ir/host.js";
import { constant, type Tensor } from "../../engine/trace/tensor.js";
import { thresholdsOf } from "./codebook.js";
import { SIGMA_EPS } from "./pack.js";

/** μ, σ and w_n of a matrix (what the straight-through gradient differentiates). */
export function normalise(w: Tensor): { mu: Tensor; sigma: Tensor; wn: Tensor } {
  const n = (w.shape as number[]).reduce((a, b) => a * b, 1);
  const mu = w.mean();
  const d = w.sub(mu);
  const sigma = d
    .square()
    .sum()
    .div(Math.max(n - 1, 1))
    .sqrt();
  return { mu, sigma, wn: d.div(sigma.add(SIGMA_EPS)) };
}

/** The level of each element's cell, with no gradient (a step function). */
export function levelOf(wn: Tensor, levels: readonly number[]): Tensor {
  const t = thresholdsOf(levels);
  const steps = levels.slice(1).map((v, i) => v - levels[i]);
  // float64 constants cast to the graph's dtype: exact in the float64 interpreter.
  const c = (v: readonly number[], shape: number[]) => constant(hostTensor("f64", shape, Float64Array.from(v))).cast(wn.dtype);
  return wn
    .unsqueeze(-1)
    .gt(c(t, [t.length]))
    .cast(wn.dtype)
    .mul(c(steps, [steps.length]))
    .sum(-1)
    .add(c([levels[0]], []))
    .stopGradient();
}

/** W = (w_n + stop_gradient(q(w_n) − w_n))·σ + μ. */
export function fakeQuantize(w: Tensor, levels: readonly number[]): Tensor {
  const { mu, sigma, wn } = normalise(w);
  const q = levelOf(wn, levels);
  return wn.add(q.sub(wn).stopGradient()).mul(sigma).add(mu);
}
