/** One interface over the two backends, so callers pick ORT for speed or the interpreter as oracle. */
import type { Graph } from "../ir/graph.js";
import type { HostTensor } from "../ir/host.js";
import { OrtExecutor, type OrtOptions } from "./onnx/session.js";
import { interpret } from "./reference/interpreter.js";

export type Inputs = readonly HostTensor[] | Readonly<Record<string, HostTensor>>;

export interface Executor {
  readonly graph: Graph;
  run(inputs: Inputs): Promise<HostTensor[]>;
  release(): Promise<void>;
}

export interface CompileOptions extends OrtOptions {
  /** "ort" (default) runs on ONNX Runtime; "interpreter" runs the pure-TS reference. */
  backend?: "ort" | "interpreter";
  /** Interpreter only: compute in f64 (f32 values are promoted and returned as f64). */
  precision?: "f32" | "f64";
}

class InterpreterExecutor implements Executor {
  constructor(
    readonly graph: Graph,
    private readonly precision: "f32" | "f64",
  ) {}
  async run(inputs: Inputs): Promise<HostTensor[]> {
    return interpret(this.graph, inputs, { precision: this.precision });
  }
  async release(): Promise<void> {}
}

class OrtBackedExecutor implements Executor {
  constructor(
    readonly graph: Graph,
    private readonly ort: OrtExecutor,
  ) {}
  run(inputs: Inputs): Promise<HostTensor[]> {
    return this.ort.run(inputs);
  }
  release(): Promise<void> {
    return this.ort.release();
  }
}

export async function compileGraph(graph: Graph, opts: CompileOptions = {}): Promise<Executor> {
  if (opts.backend === "interpreter") return new InterpreterExecutor(graph, opts.precision ?? "f32");
  return new OrtBackedExecutor(graph, await OrtExecutor.create(graph, opts));
}
