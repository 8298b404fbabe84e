/**
 * Reverse-mode autodiff over the graph being traced (grad composes with tracing the way jax.grad
 * composes with jit: the backward pass is recorded into the same graph as the forward).
 */
import { EngineUsageError, ShapeError } from "../errors.js";
import { isFloat } from "../ir/dtype.js";
import type { Graph } from "../ir/graph.js";
import { shapeStr } from "../ir/shape.js";
import { currentGraph } from "../trace/context.js";
import { Tensor, zeros } from "../trace/tensor.js";
import { onesLike, VJP_RULES } from "./rules.js";

/**
 * Cotangents of `wrt` given cotangents `cts` of `outputs`, all in the current trace. Only nodes
 * recorded at index >= `fromNode` are differentiated (earlier ones are constants here), and only
 * along paths from a `wrt` value to an output: work for other inputs is never recorded.
 */
export interface BackwardOptions {
  /**
   * Gradient checkpointing: nodes recorded inside recomputeRegion() are recomputed in the
   * backward pass from the region's inputs, so their activations need not stay alive.
   */
  recompute?: boolean;
}

export function backward(
  outputs: readonly Tensor[],
  cts: readonly Tensor[],
  wrt: readonly Tensor[],
  fromNode = 0,
  opts: BackwardOptions = {},
): Tensor[] {
  const g = currentGraph();
  for (const w of wrt) {
    if (!isFloat(w.dtype)) throw new EngineUsageError(`cannot differentiate with respect to ${w}: it is not a float tensor`);
  }
  const active = activeValues(g, wrt, fromNode);
  const ct = new Map<number, Tensor>();
  const accumulate = (id: number, c: Tensor) => {
    const prev = ct.get(id);
    ct.set(id, prev ? prev.add(c) : c);
  };
  outputs.forEach((o, i) => {
    if (active.has(o.id)) accumulate(o.id, cts[i]);
  });
  const end = g.nodes.length;
  /** region -> (forward value -> its recomputed copy), built when the sweep first enters the region. */
  const recomputed = new Map<number, Map<number, number>>();
  for (let n = end - 1; n >= fromNode; n--) {
    const node = g.nodes[n];
    if (!node.outputs.some((o) => ct.has(o))) continue;
    const needs = node.inputs.map((i) => active.has(i) && isFloat(g.type(i).dtype));
    if (!needs.some(Boolean)) continue;
    const region = opts.recompute ? g.nodeRegion.get(n) : undefined;
    let remap: Map<number, number> | undefined;
    if (region !== undefined) {
      remap = recomputed.get(region);
      if (!remap) {
        remap = recomputeRegion(g, region, fromNode, end, node.outputs.map((o) => ct.get(o)).find((c) => c !== undefined) as Tensor);
        recomputed.set(region, remap);
      }
    }
    const at = (id: number) => new Tensor(g, remap?.get(id) ?? id);
    const rule = VJP_RULES[node.op];
    const inputs = node.inputs.map(at);
    const outs = node.outputs.map(at);
    const outCts = node.outputs.map((o) => ct.get(o) ?? null);
    const inCts = rule({ inputs, outputs: outs, attrs: node.attrs, needs }, outCts);
    inCts.forEach((c, i) => {
      if (!c || !needs[i]) return;
      const want = g.type(node.inputs[i]);
      if (c.shape.length !== want.shape.length || c.shape.some((d, j) => d !== want.shape[j])) {
        throw new ShapeError(
          `autodiff: the ${node.op} rule gave a cotangent of shape ${shapeStr(c.shape)} for an input of shape ${shapeStr(want.shape)}`,
        );
      }
      accumulate(node.inputs[i], c.dtype === want.dtype ? c : c.cast(want.dtype));
    });
  }
  return wrt.map((w) => ct.get(w.id) ?? zeros([...w.shape], w.dtype));
}

/**
 * Re-emits a region's forward nodes after the current point of the backward pass. Activations
 * entering the region (values made by nodes outside it) get a data dependency on `trigger`, a
 * cotangent that exists only now, so the copies are computed late and the runtime cannot merge
 * them with the forward originals (common-subexpression elimination would undo the saving).
 */
function recomputeRegion(g: Graph, region: number, fromNode: number, end: number, trigger: Tensor): Map<number, number> {
  const map = new Map<number, number>();
  const zero = trigger.sum().mul(0);
  const inRegion = (n: number) => g.nodeRegion.get(n) === region;
  for (let n = fromNode; n < end; n++) {
    if (!inRegion(n)) continue;
    const node = g.nodes[n];
    const inputs = node.inputs.map((i) => {
      const mapped = map.get(i);
      if (mapped !== undefined) return mapped;
      const p = g.producer.get(i);
      const t = g.type(i);
      if (p !== undefined && !inRegion(p) && isFloat(t.dtype) && t.dtype !== "f16") {
        const gated = new Tensor(g, i).add(zero.cast(t.dtype)).id;
        map.set(i, gated);
        return gated;
      }
      return i;
    });
    const outs = g.addNode(node.op, inputs, node.attrs as never);
    node.outputs.forEach((o, k) => {
      map.set(o, outs[k]);
    });
  }
  return map;
}

/** Values that depend on any of `wrt` through nodes at index >= fromNode. */
function activeValues(g: Graph, wrt: readonly Tensor[], fromNode: number): Set<number> {
  const active = new Set<number>(wrt.map((w) => w.id));
  for (let n = fromNode; n < g.nodes.length; n++) {
    const node = g.nodes[n];
    if (node.op === "stop_gradient") continue;
    if (node.op === "custom_vjp") {
      const np = node.attrs.nPrimals as number;
      if (node.inputs.slice(0, np).some((i) => active.has(i))) for (const o of node.outputs) active.add(o);
      continue;
    }
    if (node.inputs.some((i) => active.has(i))) {
      for (const o of node.outputs) if (isFloat(g.type(o).dtype)) active.add(o);
    }
  }
  return active;
}

export type GradFn = (...args: Tensor[]) => Tensor;

/**
 * valueAndGrad(f, argnums)(...args) → [f(args), [df/dargs[i] for i in argnums]].
 * f must return a float scalar (a loss). Call it inside a trace.
 */
export function valueAndGrad(f: GradFn, argnums: readonly number[] = [0]): (...args: Tensor[]) => [Tensor, Tensor[]] {
  return (...args: Tensor[]) => {
    const g = currentGraph();
    const start = g.nodes.length;
    const y = f(...args);
    if (y.rank !== 0 || !isFloat(y.dtype)) {
      throw new ShapeError(`valueAndGrad: the function must return a float scalar, got ${y.dtype}${shapeStr(y.shape)}`);
    }
    for (const i of argnums) {
      if (i < 0 || i >= args.length) throw new EngineUsageError(`valueAndGrad: argnum ${i} is out of range for ${args.length} arguments`);
    }
    const grads = backward(
      [y],
      [onesLike(y)],
      argnums.map((i) => args[i]),
      start,
    );
    return [y, grads];
  };
}

/** grad(f, argnums)(...args) → the gradients only. */
export function grad(f: GradFn, argnums: readonly number[] = [0]): (...args: Tensor[]) => Tensor[] {
  const vg = valueAndGrad(f, argnums);
  return (...args: Tensor[]) => vg(...args)[1];
}

/**
 * vjp(f, args) → [outputs, pullback]; pullback(cotangents) gives cotangents for every arg.
 * Useful for non-scalar functions and for gradient checks with random cotangents.
 */
export function vjp(f: (...args: Tensor[]) => Tensor[], args: readonly Tensor[]): [Tensor[], (cts: readonly Tensor[]) => Tensor[]] {
  const g = currentGraph();
  const start = g.nodes.length;
  const outs = f(...args);
  const pullback = (cts: readonly Tensor[]) => {
    if (cts.length !== outs.length) throw new EngineUsageError(`vjp: ${cts.length} cotangents for ${outs.length} outputs`);
    return backward(outs, cts, args, start);
  };
  return [outs, pullback];
}
