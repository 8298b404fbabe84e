import type { Graph, Node } from "../../ir/graph.js";

/** The inputs a node's kernel actually reads: custom_vjp only forwards its fwd outputs. */
export function kernelInputs(node: Node): readonly number[] {
  if (node.op === "custom_vjp") return node.inputs.slice(node.attrs.nPrimals as number);
  return node.inputs;
}

export interface ExecPlan {
  /** Nodes that contribute to some graph output; the rest are skipped. */
  readonly run: boolean[];
  /** Values that must be computed (or converted, for graph inputs). */
  readonly needed: boolean[];
  /** Per node: values to drop once the node has run (their last reader, not graph outputs). */
  readonly frees: number[][];
}

/** Dead-node elimination and last-use analysis over the topologically ordered nodes. */
export function planExecution(graph: Graph): ExecPlan {
  const nv = graph.values.length;
  const nn = graph.nodes.length;
  const needed = new Array<boolean>(nv).fill(false);
  const isOutput = new Array<boolean>(nv).fill(false);
  for (const o of graph.outputs) {
    needed[o.id] = true;
    isOutput[o.id] = true;
  }
  const run = new Array<boolean>(nn).fill(false);
  for (let i = nn - 1; i >= 0; i--) {
    const node = graph.nodes[i];
    if (!node.outputs.some((o) => needed[o])) continue;
    run[i] = true;
    for (const v of kernelInputs(node)) needed[v] = true;
  }
  const lastUse = new Array<number>(nv).fill(-1);
  for (let i = 0; i < nn; i++) {
    if (run[i]) for (const v of kernelInputs(graph.nodes[i])) lastUse[v] = i;
  }
  const frees: number[][] = graph.nodes.map(() => []);
  for (let v = 0; v < nv; v++) {
    if (lastUse[v] >= 0 && !isOutput[v]) frees[lastUse[v]].push(v);
  }
  return { run, needed, frees };
}
