/**
 * The pure-TypeScript reference backend: runs a Graph node by node on the host. It is the
 * semantic oracle for the ONNX backend and, in f64 precision, for finite-difference gradient checks.
 */
import { BackendError, DTypeError, EngineUsageError, PeftkitError, ShapeError } from "../../errors.js";
import type { Graph } from "../../ir/graph.js";
import type { HostTensor } from "../../ir/host.js";
import { type Dim, dimFactors, shapeStr } from "../../ir/shape.js";
import { KERNELS, type KernelContext } from "./kernels.js";
import { size } from "./layout.js";
import { kernelInputs, planExecution } from "./plan.js";
import { checkStorage, hostToVal, type Val, valToHost } from "./values.js";

export interface InterpretOptions {
  /** "f64": every f32 value is computed and returned as f64 (the oracle for finite-difference gradient checks).
   *  "f32" (default): compute each op in f64 and round every f32 result to f32 (Math.fround), emulating ORT. */
  precision?: "f32" | "f64";
}

/**
 * Runs a graph; inputs by position (graph.inputs order) or by input name. Returns outputs in graph.outputs order.
 * Symbolic dims ("batch", "seq") are bound from the input shapes; a conflicting binding is a ShapeError naming the input and the symbol.
 * Checks every input's dtype and shape against the graph input (error names the input, expected and actual). In f64 precision an f32 input may also be given as f64.
 */
export function interpret(
  graph: Graph,
  inputs: readonly HostTensor[] | Readonly<Record<string, HostTensor>>,
  opts: InterpretOptions = {},
): HostTensor[] {
  const precision = opts.precision ?? "f32";
  if (precision !== "f32" && precision !== "f64") {
    throw new EngineUsageError(`interpret: precision must be "f32" or "f64", got ${JSON.stringify(precision)}`);
  }
  const f64 = precision === "f64";
  const hosts = orderInputs(graph, inputs);
  const bindings = bindInputs(graph, hosts, f64);

  const ctx: KernelContext = {
    roundF32: !f64,
    dims(shape: readonly Dim[], op: string): number[] {
      return shape.map((d) => {
        if (typeof d === "number") return d;
        const direct = bindings.get(d)?.size;
        if (direct !== undefined) return direct;
        // A sum dim ("past+seq") is the sum of its terms.
        if (d.includes("+")) return d.split("+").reduce((acc, t) => acc + (/^\d+$/.test(t) ? Number(t) : this.dims([t], op)[0]), 0);
        // A product dim ("batch*seq", "4*seq") is the product of its bound factors.
        const { fixed, symbols } = dimFactors(d);
        let v = fixed;
        for (const s of symbols) {
          const b = bindings.get(s)?.size;
          if (b === undefined)
            throw new ShapeError(`${op}: symbolic dimension "${s}" in ${shapeStr(shape)} is not bound by any graph input`);
          v *= b;
        }
        return v;
      });
    },
  };

  const plan = planExecution(graph);
  const vals: (Val | undefined)[] = new Array(graph.values.length);
  graph.inputs.forEach((gi, k) => {
    if (plan.needed[gi.id]) vals[gi.id] = hostToVal(hosts[k], graph.values[gi.id].dtype);
  });

  for (let i = 0; i < graph.nodes.length; i++) {
    if (!plan.run[i]) continue;
    const node = graph.nodes[i];
    const kernel = (KERNELS as Readonly<Record<string, (typeof KERNELS)[keyof typeof KERNELS]>>)[node.op];
    if (!kernel) throw new BackendError(`interpreter: no kernel for op "${node.op}" (node ${i})`);
    const ins = kernelInputs(node).map((id) => {
      const v = vals[id];
      if (!v)
        throw new BackendError(`interpreter: ${node.op} (node ${i}) reads %${id}, which has no value (graph not in topological order?)`);
      return v;
    });
    let outs: Val[];
    try {
      outs = kernel(ins, node.attrs, ctx);
    } catch (e) {
      if (e instanceof PeftkitError) throw e;
      throw new BackendError(`interpreter: ${node.op} (node ${i}) failed: ${(e as Error).message}`);
    }
    if (outs.length !== node.outputs.length) {
      throw new BackendError(`interpreter: ${node.op} (node ${i}) made ${outs.length} outputs, the graph expects ${node.outputs.length}`);
    }
    node.outputs.forEach((id, j) => {
      checkResult(graph, id, outs[j], ctx, `${node.op} (node ${i})`);
      if (plan.needed[id]) vals[id] = outs[j];
    });
    for (const id of plan.frees[i]) vals[id] = undefined;
  }

  return graph.outputs.map((o) => {
    const v = vals[o.id];
    if (!v) throw new BackendError(`interpreter: output "${o.name}" (%${o.id}) was never computed`);
    return valToHost(v, f64);
  });
}

/** Inputs in graph.inputs order, from a positional list or a name → tensor record. */
function orderInputs(graph: Graph, inputs: readonly HostTensor[] | Readonly<Record<string, HostTensor>>): HostTensor[] {
  const names = graph.inputs.map((i) => i.name);
  if (Array.isArray(inputs)) {
    const list = inputs as readonly HostTensor[];
    if (list.length !== names.length) {
      throw new EngineUsageError(`interpret: the graph takes ${names.length} inputs (${names.join(", ")}), got ${list.length}`);
    }
    return [...list];
  }
  const rec = inputs as Readonly<Record<string, HostTensor>>;
  const unknown = Object.keys(rec).filter((k) => !names.includes(k));
  if (unknown.length > 0) {
    throw new EngineUsageError(
      `interpret: unknown input name(s) ${unknown.map((k) => `"${k}"`).join(", ")}; the graph inputs are ${names.join(", ")}`,
    );
  }
  return names.map((n) => {
    const t = rec[n];
    if (t === undefined) throw new EngineUsageError(`interpret: missing input "${n}"`);
    return t;
  });
}

/** Validates dtype and shape of each input and binds symbolic dims; returns symbol → size and its source. */
function bindInputs(graph: Graph, hosts: readonly HostTensor[], f64: boolean): Map<string, { size: number; from: string }> {
  const bindings = new Map<string, { size: number; from: string }>();
  graph.inputs.forEach((gi, k) => {
    const want = graph.values[gi.id];
    const t = hosts[k];
    const where = `interpret: input "${gi.name}"`;
    if (!t || typeof t !== "object" || !ArrayBuffer.isView(t.data) || !Array.isArray(t.shape)) {
      throw new EngineUsageError(`${where} is not a HostTensor`);
    }
    const got = `${t.dtype}${shapeStr(t.shape)}`;
    const expected = `${want.dtype}${shapeStr(want.shape)}`;
    const dtypeOk = t.dtype === want.dtype || (f64 && want.dtype === "f32" && t.dtype === "f64");
    if (!dtypeOk) {
      const also = want.dtype === "f32" && t.dtype === "f64" ? " (f64 is accepted for f32 inputs only in f64 precision)" : "";
      throw new DTypeError(`${where}: expected ${expected}, got ${got}${also}`);
    }
    checkStorage(t, where);
    if (t.shape.length !== want.shape.length) {
      throw new ShapeError(`${where}: expected shape ${expected}, got ${got} (rank ${t.shape.length} instead of ${want.shape.length})`);
    }
    want.shape.forEach((d, i) => {
      const n = t.shape[i];
      if (!Number.isInteger(n) || n < 0) throw new ShapeError(`${where}: bad dimension ${n} in ${got}`);
      if (typeof d === "number") {
        if (d !== n) throw new ShapeError(`${where}: expected shape ${expected}, got ${got} (dim ${i} is ${n}, not ${d})`);
        return;
      }
      const prev = bindings.get(d);
      if (!prev) bindings.set(d, { size: n, from: gi.name });
      else if (prev.size !== n) {
        throw new ShapeError(
          `${where}: symbol "${d}" is ${n} in ${got} (expected ${expected}), but input "${prev.from}" bound "${d}" = ${prev.size}`,
        );
      }
    });
    if (t.data.length !== size(t.shape)) {
      throw new ShapeError(`${where}: ${t.data.length} values do not fill shape ${shapeStr(t.shape)}`);
    }
  });
  return bindings;
}

/** Cross-checks a kernel result against the graph's (bound) type: a mismatch is an interpreter bug. */
function checkResult(graph: Graph, id: number, v: Val, ctx: KernelContext, where: string): void {
  const t = graph.values[id];
  const shape = ctx.dims(t.shape, where);
  if (v.dtype !== t.dtype || v.shape.length !== shape.length || v.shape.some((d, i) => d !== shape[i]) || v.data.length !== size(v.shape)) {
    throw new BackendError(
      `interpreter: ${where} produced ${v.dtype}${shapeStr(v.shape)} (${v.data.length} values), the graph says ${t.dtype}${shapeStr(t.shape)} = ${shapeStr(shape)}`,
    );
  }
}
