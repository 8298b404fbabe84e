import { EngineUsageError } from "../errors.js";
import type { Graph } from "../ir/graph.js";

/** The graph being recorded. Tracing is single-threaded and nests (autodiff traces while tracing). */
const stack: Graph[] = [];

export function currentGraph(): Graph {
  const g = stack[stack.length - 1];
  if (!g) throw new EngineUsageError("no trace is active: tensor ops can only run inside trace(), grad() or compile functions");
  return g;
}

export function withGraph<T>(g: Graph, fn: () => T): T {
  stack.push(g);
  try {
    return fn();
  } finally {
    stack.pop();
  }
}
