import { EngineUsageError } from "../errors.js";
import type { DType } from "../ir/dtype.js";
import { Graph } from "../ir/graph.js";
import type { CustomVjpBwd } from "../ir/ops.js";
import type { Dim } from "../ir/shape.js";
import { currentGraph, withGraph } from "./context.js";
import { checkSameGraph, Tensor } from "./tensor.js";

/** Declares one graph input. */
export interface InputSpec {
  name?: string;
  dtype: DType;
  shape: readonly Dim[];
}

export type TraceOutput = Tensor | readonly Tensor[] | Readonly<Record<string, Tensor>>;

export function spec(dtype: DType, shape: readonly Dim[], name?: string): InputSpec {
  return { dtype, shape, name };
}

/**
 * Records `fn` applied to symbolic inputs into a new Graph. Array outputs are named out0, out1, ...;
 * record outputs keep their keys.
 */
export function trace(fn: (...args: Tensor[]) => TraceOutput, specs: readonly InputSpec[]): Graph {
  const g = new Graph();
  return withGraph(g, () => {
    const args = specs.map((s, i) => new Tensor(g, g.addInput(s.name ?? `in${i}`, { dtype: s.dtype, shape: s.shape })));
    setOutputs(g, fn(...args));
    return g;
  });
}

export function setOutputs(g: Graph, out: TraceOutput): void {
  if (out instanceof Tensor) g.addOutput("out0", out.id);
  else if (Array.isArray(out)) {
    out.forEach((t: Tensor, i: number) => {
      g.addOutput(`out${i}`, t.id);
    });
  } else for (const [k, t] of Object.entries(out as Record<string, Tensor>)) g.addOutput(k, t.id);
  for (const o of g.outputs) {
    if (o.id < 0 || o.id >= g.values.length) throw new EngineUsageError(`output ${o.name} is not a tensor of this trace`);
  }
}

/**
 * Wraps `fwd` so that autodiff uses `bwd` instead of differentiating fwd's body. fwd may return
 * extra outputs that only bwd uses (residuals such as x·Aᵀ in a fused LoRA backward).
 * bwd receives the primals, all fwd outputs, and a cotangent (or null) per output; it returns a
 * cotangent (or null for none) per primal.
 */
export function customVjp(name: string, fwd: (...primals: Tensor[]) => Tensor[], bwd: CustomVjpBwd): (...primals: Tensor[]) => Tensor[] {
  return (...primals: Tensor[]) => {
    const g = checkSameGraph(primals);
    const outs = fwd(...primals);
    checkSameGraph(outs);
    const ids = g.addNode("custom_vjp", [...primals.map((p) => p.id), ...outs.map((o) => o.id)], {
      nPrimals: primals.length,
      bwd,
      name,
    });
    return ids.map((id) => new Tensor(g, id));
  };
}

/** The graph currently being traced (for library code that needs to add inputs). */
export function activeGraph(): Graph {
  return currentGraph();
}

/**
 * Marks what `fn` records as a gradient-checkpointing region: with `recompute` on, the backward
 * pass recomputes these activations from the region's inputs instead of keeping them (models wrap
 * each transformer layer in one).
 */
export function checkpoint<T>(fn: () => T): T {
  return currentGraph().inRegion(fn);
}
