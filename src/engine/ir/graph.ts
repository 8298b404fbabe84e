import { EngineUsageError } from "../errors.js";
import { type AttrsOf, inferTypes, type OpName, type ValueType } from "./ops.js";
import { shapeStr } from "./shape.js";

export interface Node {
  readonly op: OpName;
  readonly inputs: readonly number[];
  readonly outputs: readonly number[];
  readonly attrs: Readonly<Record<string, unknown>>;
}

export interface NamedValue {
  readonly name: string;
  readonly id: number;
}

/**
 * A traced program: SSA values (each made by one node or a graph input), nodes in
 * topological order, named inputs and outputs. Immutable once traced; passes build new graphs.
 */
export class Graph {
  readonly values: ValueType[] = [];
  readonly nodes: Node[] = [];
  readonly inputs: NamedValue[] = [];
  readonly outputs: NamedValue[] = [];
  /** value id -> index of the node that produces it (absent for graph inputs). */
  readonly producer = new Map<number, number>();
  /**
   * node index -> recompute region (gradient checkpointing): nodes recorded inside
   * `recomputeRegion()` may be recomputed in the backward pass instead of kept alive.
   */
  readonly nodeRegion = new Map<number, number>();
  /**
   * The graph mostly runs on tiny tensors (one token per row, e.g. decoding), where every ONNX
   * node's fixed cost outweighs memory traffic: the emitter then prefers fewer, wider nodes even
   * where they move more bytes (one Sum of three terms is ~2× slower than two Adds on large tensors).
   */
  smallTensors = false;
  private regionStack: number[] = [];
  private regionCount = 0;

  /** Records the nodes `fn` adds as one recompute region. Regions do not nest: the outer one wins. */
  inRegion<T>(fn: () => T): T {
    if (this.regionStack.length) return fn();
    this.regionStack.push(this.regionCount++);
    try {
      return fn();
    } finally {
      this.regionStack.pop();
    }
  }

  newValue(t: ValueType): number {
    this.values.push({ dtype: t.dtype, shape: [...t.shape] });
    return this.values.length - 1;
  }

  addInput(name: string, t: ValueType): number {
    if (this.inputs.some((i) => i.name === name)) throw new EngineUsageError(`graph input name "${name}" is used twice`);
    const id = this.newValue(t);
    this.inputs.push({ name, id });
    return id;
  }

  /** Appends a node after shape inference; returns its output value ids. */
  addNode<O extends OpName>(op: O, inputs: readonly number[], attrs: AttrsOf<O>): number[] {
    const types = inferTypes(
      op,
      inputs.map((i) => this.type(i)),
      attrs,
    );
    const outputs = types.map((t) => this.newValue(t));
    const idx = this.nodes.length;
    this.nodes.push({ op, inputs: [...inputs], outputs, attrs: attrs as Record<string, unknown> });
    for (const o of outputs) this.producer.set(o, idx);
    const region = this.regionStack[this.regionStack.length - 1];
    if (region !== undefined) this.nodeRegion.set(idx, region);
    return outputs;
  }

  addOutput(name: string, id: number): void {
    if (this.outputs.some((o) => o.name === name)) throw new EngineUsageError(`graph output name "${name}" is used twice`);
    this.outputs.push({ name, id });
  }

  type(id: number): ValueType {
    const t = this.values[id];
    if (!t) throw new EngineUsageError(`value %${id} does not exist in this graph`);
    return t;
  }

  /** Human-readable listing, for debugging and error messages. */
  toString(): string {
    const lines: string[] = [];
    const ty = (id: number) => `%${id}:${this.values[id].dtype}${shapeStr(this.values[id].shape)}`;
    for (const i of this.inputs) lines.push(`input ${i.name} = ${ty(i.id)}`);
    for (const n of this.nodes) {
      const attrs = Object.entries(n.attrs)
        .filter(([k]) => k !== "value" && k !== "bwd")
        .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
        .join(" ");
      lines.push(`${n.outputs.map(ty).join(", ")} = ${n.op}(${n.inputs.map((i) => `%${i}`).join(", ")}) ${attrs}`);
    }
    for (const o of this.outputs) lines.push(`output ${o.name} = %${o.id}`);
    return lines.join("\n");
  }
}
