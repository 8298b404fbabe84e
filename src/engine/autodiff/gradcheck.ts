/**
 * Gradient checking against central finite differences on the reference interpreter in f64.
 * Used by the engine's own tests and by tuner tests (adapter gradients).
 */
import { EngineUsageError } from "../errors.js";
import { interpret } from "../exec/reference/interpreter.js";
import { isFloat } from "../ir/dtype.js";
import { type HostTensor, hostTensor } from "../ir/host.js";
import type { Tensor } from "../trace/tensor.js";
import { trace } from "../trace/trace.js";
import { backward } from "./grad.js";

export interface GradCheckResult {
  /** Per checked input: ‖analytic − numeric‖ / max(‖analytic‖, ‖numeric‖, 1e-12). */
  relErrors: number[];
  maxRelError: number;
  analytic: Float64Array[];
  numeric: Float64Array[];
}

export interface GradCheckOptions {
  /** Indices of the inputs to check (default: every float input). */
  wrt?: number[];
  /** Finite-difference step (default 1e-6). */
  h?: number;
  /** Checks at most this many elements per input, chosen evenly (default all). */
  maxElements?: number;
  /**
   * Trace f64 inputs as f32 (the f64 interpreter still computes and differentiates in f64): for
   * code written for f32, such as whole models.
   */
  traceAsF32?: boolean;
  /** Gradient norms below this (analytic and numeric) count as zero (default 1e-8). */
  absFloor?: number;
  /**
   * The function whose finite differences give the expected gradient (default f), for f whose
   * backward deliberately differs from its own derivative (e.g. a detached norm). It must equal f
   * in value at the inputs (checked, relative 1e-9).
   */
  reference?: (...xs: Tensor[]) => Tensor;
  /**
   * The cotangent r of L = Σ f(x)·r (default: uniform in [-1, 1), drawn anew per call). Give one when
   * a test asserts that two gradients DIFFER: a random r can happen to be nearly orthogonal to their
   * difference, which makes such a test flaky.
   */
  cotangent?: HostTensor;
}

function randomCotangent(shape: readonly number[]): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) data[i] = Math.random() * 2 - 1;
  return hostTensor("f64", shape, data);
}

/**
 * Checks the reverse-mode gradient of L = Σ f(x)·r, for a random cotangent r, against central
 * differences of L. Inputs should be f64 (ints and bools pass through untouched).
 */
export function gradCheck(f: (...xs: Tensor[]) => Tensor, inputs: readonly HostTensor[], opts: GradCheckOptions = {}): GradCheckResult {
  const wrt = opts.wrt ?? inputs.map((t, i) => (isFloat(t.dtype) ? i : -1)).filter((i) => i >= 0);
  for (const i of wrt) {
    if (inputs[i].dtype !== "f64") throw new EngineUsageError(`gradCheck: input ${i} must be f64, got ${inputs[i].dtype}`);
  }
  const asF32 = opts.traceAsF32 ?? false;
  const specs = inputs.map((t) => ({ dtype: asF32 && t.dtype === "f64" ? ("f32" as const) : t.dtype, shape: t.shape }));
  const probe = trace((...xs) => f(...xs), specs);
  const outShape = probe.values[probe.outputs[0].id].shape as number[];
  const r = opts.cotangent ?? randomCotangent(outShape);
  if (opts.cotangent && opts.cotangent.shape.join(",") !== outShape.join(",")) {
    throw new EngineUsageError(`gradCheck: cotangent shape [${opts.cotangent.shape}] differs from the output's [${outShape}]`);
  }
  const allSpecs = [...specs, { dtype: asF32 ? ("f32" as const) : ("f64" as const), shape: outShape }];

  const lossOf = (xs: Tensor[], rt: Tensor) =>
    f(...xs)
      .mul(rt)
      .sum();
  const gradGraph = trace((...xs) => {
    const rt = xs[xs.length - 1];
    const args = xs.slice(0, -1);
    const start = rt.graph.nodes.length;
    const y = f(...args);
    const loss = y.mul(rt).sum();
    const seed = loss.mul(0).add(1);
    return backward(
      [loss],
      [seed],
      wrt.map((i) => args[i]),
      start,
    );
  }, allSpecs);
  const lossGraph = trace((...xs) => lossOf(xs.slice(0, -1), xs[xs.length - 1]), allSpecs);
  const reference = opts.reference;
  const refGraph = reference
    ? trace(
        (...xs) =>
          reference(...xs.slice(0, -1))
            .mul(xs[xs.length - 1])
            .sum(),
        allSpecs,
      )
    : lossGraph;

  const analytic = interpret(gradGraph, [...inputs, r], { precision: "f64" }).map((t) => Float64Array.from(t.data as Float64Array));
  const h = opts.h ?? 1e-6;
  const lossAt = (g: typeof lossGraph, xs: readonly HostTensor[]) =>
    (interpret(g, [...xs, r], { precision: "f64" })[0].data as Float64Array)[0];
  const evalLoss = (xs: HostTensor[]) => lossAt(refGraph, xs);
  if (reference) {
    const [own, ref] = [lossAt(lossGraph, inputs), lossAt(refGraph, inputs)];
    if (!(Math.abs(own - ref) <= 1e-9 * Math.max(1, Math.abs(own))))
      throw new EngineUsageError(`gradCheck: the reference differs from f in value (${own} vs ${ref})`);
  }
  const numeric: Float64Array[] = [];
  const relErrors: number[] = [];
  wrt.forEach((inputIndex, k) => {
    const base = inputs[inputIndex];
    const n = base.data.length;
    const num = new Float64Array(n);
    const ana = analytic[k];
    const limit = opts.maxElements ?? n;
    const stride = Math.max(1, Math.floor(n / limit));
    let diff = 0;
    let na = 0;
    let nn = 0;
    for (let e = 0; e < n; e += stride) {
      const plus = Float64Array.from(base.data as Float64Array);
      const minus = Float64Array.from(base.data as Float64Array);
      plus[e] += h;
      minus[e] -= h;
      const xsP = inputs.map((t, j) => (j === inputIndex ? hostTensor("f64", t.shape, plus) : t));
      const xsM = inputs.map((t, j) => (j === inputIndex ? hostTensor("f64", t.shape, minus) : t));
      num[e] = (evalLoss(xsP) - evalLoss(xsM)) / (2 * h);
      diff += (num[e] - ana[e]) ** 2;
      na += ana[e] ** 2;
      nn += num[e] ** 2;
    }
    numeric.push(num);
    // A gradient that is exactly zero (e.g. a bias softmax cannot see) shows up numerically as
    // rounding noise of order eps·|L|/h; below an absolute floor both count as zero.
    const scale = Math.max(Math.sqrt(na), Math.sqrt(nn));
    relErrors.push(scale < (opts.absFloor ?? 1e-8) ? 0 : Math.sqrt(diff) / scale);
  });
  return { relErrors, maxRelError: Math.max(0, ...relErrors), analytic, numeric };
}
