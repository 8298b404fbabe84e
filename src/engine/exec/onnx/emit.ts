/**
 * IR Graph → serialized ONNX ModelProto.
 *
 * Large constants (> HOIST_BYTES, 1 MiB) are not written into the protobuf. They become extra graph
 * inputs that the executor feeds on every run straight from JS memory (ORT does not copy inputs).
 * That keeps the model far from protobuf's 2 GB ceiling whatever the weights weigh, keeps model
 * hashing and session creation cheap, and lets two graphs that differ only in constant values share
 * one ORT session.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BackendError, PeftkitError } from "../../errors.js";
import type { Graph } from "../../ir/graph.js";
import type { HostTensor } from "../../ir/host.js";
import { type Dim, dimFactors } from "../../ir/shape.js";
import { attrInt, LOWERINGS, type LowerArgs, OnnxBuilder, type SymbolSource } from "./lower.js";
import { encodeModel, type GraphSpec, type ValueInfoSpec } from "./onnx-proto.js";

export interface EmitOptions {
  /** Name of the ONNX graph (default "peftkit"). */
  name?: string;
  /**
   * Sizes of symbolic dims (or of product dims such as "batch*seq") to write into the model's
   * inputs and outputs as numbers, so ORT infers every shape statically. The nodes are unchanged.
   */
  dims?: ReadonlyMap<string, number>;
}

export interface HoistedConstant {
  /** ONNX input name to feed it under. */
  name: string;
  tensor: HostTensor;
}

export interface EmitResult {
  model: Uint8Array;
  /** Constants emitted as extra inputs, to be fed after the graph's own inputs. */
  hoisted: HoistedConstant[];
  /** ONNX input name of each graph input, in graph.inputs order; null for inputs the graph never reads (not declared, not fed). */
  inputNames: (string | null)[];
  /** ONNX output name of each graph output, in graph.outputs order. */
  outputNames: string[];
  /** ONNX node-name prefix → IR node description, for error messages. */
  nodeContext: Map<string, string>;
  /** Number of IR nodes lowered (dead nodes excluded). */
  liveNodes: number;
}

/** Keeps user names readable but unique and clear of the generated-name prefix. */
function sanitize(name: string, used: Set<string>, prefix: string): string {
  let n = name.length > 0 ? name : "value";
  if (n.startsWith(prefix)) n = `u${n}`;
  let out = n;
  for (let k = 1; used.has(out); k++) out = `${n}__${k}`;
  used.add(out);
  return out;
}

/** Value ids needed to compute the graph outputs. */
function liveValues(g: Graph): Set<number> {
  const live = new Set<number>(g.outputs.map((o) => o.id));
  for (let i = g.nodes.length - 1; i >= 0; i--) {
    const n = g.nodes[i];
    const usedOuts = n.outputs.map((o) => live.has(o));
    if (!usedOuts.some((u) => u)) continue;
    if (n.op === "custom_vjp") {
      // Outputs are identities of the forward outputs; primals are only for the backward rule.
      const np = n.attrs.nPrimals as number;
      usedOuts.forEach((u, j) => {
        if (u) live.add(n.inputs[np + j]);
      });
    } else for (const x of n.inputs) live.add(x);
  }
  return live;
}

export function emitOnnx(graph: Graph, opts: EmitOptions = {}): EmitResult {
  const prefix = "_pk_";
  const used = new Set<string>();
  const names = new Map<number, string>();

  const inputNames = graph.inputs.map((i) => sanitize(i.name, used, prefix));
  graph.inputs.forEach((inp, k) => {
    names.set(inp.id, inputNames[k]);
  });
  const outputNames = graph.outputs.map((o) => sanitize(o.name, used, prefix));

  const live = liveValues(graph);
  // Symbolic dims are read off the first graph input that carries them, preferring inputs the
  // graph reads anyway (unread inputs are dropped unless a shape is read off them).
  const symbols = new Map<string, SymbolSource>();
  const byUse = graph.inputs.map((inp, k) => ({ inp, k })).sort((x, y) => Number(live.has(y.inp.id)) - Number(live.has(x.inp.id)));
  for (const { inp, k } of byUse) {
    graph.type(inp.id).shape.forEach((d, axis) => {
      if (typeof d === "string" && !symbols.has(d)) symbols.set(d, { input: inputNames[k], axis });
    });
  }

  const b = new OnnxBuilder(prefix, symbols);
  const hoisted: HoistedConstant[] = [];
  const hoist = (t: HostTensor) => {
    const name = `${prefix}hoisted_${hoisted.length}`;
    hoisted.push({ name, tensor: t });
    return name;
  };

  // The first graph output holding a value gets that value written under its name directly.
  const outNameOf = new Map<number, string>();
  graph.outputs.forEach((o, k) => {
    if (!outNameOf.has(o.id) && !names.has(o.id)) outNameOf.set(o.id, outputNames[k]);
  });

  const splits = splitSets(graph, live);
  const emittedBySplit = new Set<number>();
  const sums = graph.smallTensors
    ? sumChains(graph, live, new Set(graph.outputs.map((o) => o.id)))
    : { at: new Map<number, number[]>(), folded: new Set<number>() };
  const nodeContext = new Map<string, string>();
  let liveNodes = 0;
  graph.nodes.forEach((node, idx) => {
    if (!node.outputs.some((o) => live.has(o))) return;
    if (emittedBySplit.has(idx)) return;
    liveNodes++;
    const ctx = `${node.op}#${idx}`;
    b.context = ctx;
    nodeContext.set(ctx, describeNode(graph, idx));
    if (sums.folded.has(idx)) return;
    const terms = sums.at.get(idx);
    if (terms) {
      // a + (b + c) with the inner sum used only here: one Sum node instead of two Adds.
      const ins = terms.map((v) => {
        const n = names.get(v);
        if (n === undefined) throw new BackendError(`ONNX export: ${ctx} reads value %${v} before it is defined`);
        return n;
      });
      const o = node.outputs[0];
      const out = outNameOf.get(o) ?? b.fresh(`v${o}`);
      b.op("Sum", ins, [], out);
      names.set(o, out);
      return;
    }
    const split = splits.get(idx);
    if (split) {
      // Slices that tile one axis become one Split node: each ONNX node has a fixed cost at run
      // time, which dominates small per-token graphs.
      const input = names.get(node.inputs[0]);
      if (input === undefined) throw new BackendError(`ONNX export: ${ctx} reads value %${node.inputs[0]} before it is defined`);
      const outs = split.nodes.map((k) => {
        const o = graph.nodes[k].outputs[0];
        const name = outNameOf.get(o) ?? b.fresh(`v${o}`);
        names.set(o, name);
        emittedBySplit.add(k);
        return name;
      });
      b.node("Split", [input, b.i64s(split.sizes)], [attrInt("axis", split.axis)], outs);
      return;
    }
    if (node.op === "custom_vjp") {
      // Its outputs alias the forward outputs. Only the live ones are bound: a forward output the
      // graph drops (the loss, when only its gradient is returned) was never emitted, while the
      // backward pass may still read a sibling (cross-entropy's log-sum-exp).
      const np = node.attrs.nPrimals as number;
      node.outputs.forEach((o, j) => {
        if (!live.has(o)) return;
        const src = names.get(node.inputs[np + j]);
        if (src === undefined) throw new BackendError(`ONNX export: ${ctx} reads value %${node.inputs[np + j]} before it is defined`);
        names.set(o, src);
        const want = outNameOf.get(o);
        if (want !== undefined) b.op("Identity", [src], [], want);
      });
      return;
    }
    const outs = node.outputs.map((o) => outNameOf.get(o) ?? b.fresh(`v${o}`));
    const args: LowerArgs = {
      node,
      ins: node.inputs.map((i) => {
        const n = names.get(i);
        if (n === undefined) throw new BackendError(`ONNX export: ${ctx} reads value %${i} before it is defined`);
        return n;
      }),
      outs,
      inTypes: node.inputs.map((i) => graph.type(i)),
      outTypes: node.outputs.map((o) => graph.type(o)),
      attrs: node.attrs,
      hoist,
    };
    const lowering = LOWERINGS[node.op];
    if (!lowering) throw new BackendError(`ONNX export: no lowering for op "${node.op}" (${ctx})`);
    let aliases: string[] | undefined;
    try {
      aliases = lowering(b, args);
    } catch (e) {
      if (e instanceof PeftkitError) throw e;
      throw new BackendError(`ONNX export of ${describeNode(graph, idx)} failed: ${(e as Error).message}`);
    }
    node.outputs.forEach((o, j) => {
      if (aliases) {
        names.set(o, aliases[j]);
        const want = outNameOf.get(o);
        if (want !== undefined) b.op("Identity", [aliases[j]], [], want);
      } else names.set(o, outs[j]);
    });
  });
  b.context = "output";
  // Outputs that alias an input, or repeat another output's value, become Identity copies.
  graph.outputs.forEach((o, k) => {
    if (outNameOf.get(o.id) === outputNames[k]) {
      names.set(o.id, names.get(o.id) ?? outputNames[k]);
      return;
    }
    const src = names.get(o.id);
    if (src === undefined) throw new BackendError(`ONNX export: output ${o.name} (value %${o.id}) is never computed`);
    b.op("Identity", [src], [], outputNames[k]);
  });

  const vi = (name: string, id: number): ValueInfoSpec => ({
    name,
    dtype: graph.type(id).dtype,
    shape: concreteDims(graph.type(id).shape, opts.dims),
  });
  // Inputs nothing reads (e.g. a tensor a context looked at but did not use) would still have to
  // be fed on every run; they are left out of the model.
  const kept = graph.inputs.map((inp, k) => live.has(inp.id) || b.shapeSources.has(inputNames[k]));
  const spec: GraphSpec = {
    name: opts.name ?? "peftkit",
    nodes: b.nodes,
    initializers: b.initializers,
    inputs: [
      ...graph.inputs.filter((_, k) => kept[k]).map((inp) => vi(names.get(inp.id) as string, inp.id)),
      ...hoisted.map((h) => ({ name: h.name, dtype: h.tensor.dtype, shape: h.tensor.shape })),
    ],
    outputs: graph.outputs.map((o, k) => vi(outputNames[k], o.id)),
  };
  const model = encodeModel(spec);
  maybeDump(model, opts.name);
  return { model, hoisted, inputNames: inputNames.map((n, k) => (kept[k] ? n : null)), outputNames, nodeContext, liveNodes };
}

/** `shape` with every dim whose size `dims` determines written as a number. */
function concreteDims(shape: readonly Dim[], dims: ReadonlyMap<string, number> | undefined): Dim[] {
  if (!dims) return shape as Dim[];
  return shape.map((d) => {
    if (typeof d === "number") return d;
    const whole = dims.get(d);
    if (whole !== undefined) return whole;
    const f = dimFactors(d);
    let v = f.fixed;
    for (const s of f.symbols) {
      const n = dims.get(s);
      if (n === undefined) return d;
      v *= n;
    }
    return v;
  });
}

/**
 * Adds of three same-shaped terms, a + (b + c), whose inner add feeds nothing else: the outer add
 * becomes one Sum (`at`: outer node → its terms) and the inner add is not emitted (`folded`).
 * A LoRA update joining a residual stream is the common case.
 */
function sumChains(g: Graph, live: ReadonlySet<number>, outputs: ReadonlySet<number>): { at: Map<number, number[]>; folded: Set<number> } {
  const uses = new Map<number, number>();
  const producer = new Map<number, number>();
  g.nodes.forEach((n, idx) => {
    if (!n.outputs.some((o) => live.has(o))) return;
    for (const i of n.inputs) uses.set(i, (uses.get(i) ?? 0) + 1);
    for (const o of n.outputs) producer.set(o, idx);
  });
  const sameShape = (x: number, y: number) => {
    const a = g.type(x).shape;
    const b = g.type(y).shape;
    return a.length === b.length && a.every((d, i) => d === b[i]);
  };
  const at = new Map<number, number[]>();
  const folded = new Set<number>();
  g.nodes.forEach((n, idx) => {
    // ONNX Sum is defined for floating types only.
    if (n.op !== "add" || !live.has(n.outputs[0]) || !["f32", "f64", "f16"].includes(g.type(n.outputs[0]).dtype)) return;
    for (const side of [0, 1]) {
      const inner = producer.get(n.inputs[side]);
      if (inner === undefined || folded.has(inner) || at.has(inner)) continue;
      const m = g.nodes[inner];
      if (m.op !== "add" || uses.get(m.outputs[0]) !== 1 || outputs.has(m.outputs[0])) continue;
      const terms = [n.inputs[1 - side], ...m.inputs];
      if (!terms.every((t) => sameShape(t, n.outputs[0]))) continue;
      at.set(idx, terms);
      folded.add(inner);
      return;
    }
  });
  return { at, folded };
}

interface SplitSet {
  axis: number;
  /** Slice node indices in order of their start. */
  nodes: number[];
  sizes: number[];
}

/**
 * Live slice nodes that, together, cut one value along one axis into adjacent pieces covering it
 * exactly; keyed by the index of the first of them in graph order (where the Split is emitted).
 */
function splitSets(g: Graph, live: ReadonlySet<number>): Map<number, SplitSet> {
  const byInput = new Map<string, { axis: number; idxs: number[] }>();
  g.nodes.forEach((n, idx) => {
    if (n.op !== "slice" || !live.has(n.outputs[0])) return;
    const rank = g.type(n.inputs[0]).shape.length;
    const axis = ((n.attrs.axis as number) + rank) % rank;
    const key = `${n.inputs[0]}:${axis}`;
    const set = byInput.get(key) ?? { axis, idxs: [] };
    set.idxs.push(idx);
    byInput.set(key, set);
  });
  const out = new Map<number, SplitSet>();
  for (const { axis, idxs } of byInput.values()) {
    if (idxs.length < 2) continue;
    const size = g.type(g.nodes[idxs[0]].inputs[0]).shape[axis] as number;
    const sorted = [...idxs].sort((x, y) => (g.nodes[x].attrs.start as number) - (g.nodes[y].attrs.start as number));
    let at = 0;
    const sizes: number[] = [];
    for (const k of sorted) {
      const { start, end } = g.nodes[k].attrs as { start: number; end: number };
      if (start !== at || end <= start) break;
      sizes.push(end - start);
      at = end;
    }
    if (sizes.length !== sorted.length || at !== size) continue;
    out.set(Math.min(...idxs), { axis, nodes: sorted, sizes });
  }
  return out;
}

function describeNode(g: Graph, idx: number): string {
  const n = g.nodes[idx];
  const ty = (id: number) => {
    const t = g.values[id];
    return `%${id}:${t.dtype}[${t.shape.join(", ")}]`;
  };
  const attrs = Object.entries(n.attrs)
    .filter(([k]) => k !== "value" && k !== "bwd")
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(" ");
  return `node #${idx} ${n.outputs.map(ty).join(", ")} = ${n.op}(${n.inputs.map(ty).join(", ")})${attrs ? ` ${attrs}` : ""}`;
}

let dumpCount = 0;

/** Debug aid: with PEFTKIT_DUMP_ONNX=dir every emitted model is written to dir/<name>-<n>.onnx. */
function maybeDump(model: Uint8Array, name = "peftkit"): void {
  const dir = process.env.PEFTKIT_DUMP_ONNX;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}-${process.pid}-${dumpCount++}.onnx`), model);
}

/** Writes an emitted model to a file (for inspection with Netron or onnx.checker). */
export function dumpOnnx(graph: Graph, path: string): void {
  writeFileSync(path, emitOnnx(graph).model);
}
