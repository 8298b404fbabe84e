/**
 * A whole training step as one graph: (params, optimizer state, frozen tensors, batch, step, lr,
 * seed) → (loss, new params, new state, metrics). Traced and differentiated once, compiled once,
 * then run every step. Frozen tensors are fed zero-copy each run; only params, state and the batch
 * change hands between steps.
 */
import { backward } from "../autodiff/grad.js";
import { onesLike } from "../autodiff/rules.js";
import { EngineUsageError, ShapeError } from "../errors.js";
import { type CompileOptions, compileGraph, type Executor } from "../exec/backend.js";
import { type DType, isFloat } from "../ir/dtype.js";
import { Graph } from "../ir/graph.js";
import { type HostTensor, hostTensor, readNumber } from "../ir/host.js";
import { type Dim, sameShape, shapeStr } from "../ir/shape.js";
import { withGraph } from "../trace/context.js";
import { concat, Tensor } from "../trace/tensor.js";
import { applyUpdate, clipByGlobalNorm, globalNorm, type OptimizerConfig, sharedScalars, stateSlots } from "./optimizers.js";

export interface TensorDecl {
  dtype: DType;
  shape: readonly Dim[];
}

export interface LossContext {
  params: Record<string, Tensor>;
  frozen: Record<string, Tensor>;
  batch: Record<string, Tensor>;
  /** i64 scalar that changes every step: feed it to dropout and other random ops. */
  seed: Tensor;
  /**
   * Asks for a statistic of an intermediate value and of the loss's gradient with respect to it:
   * `reduce(value, ∂loss/∂value)` (a small f32 tensor, e.g. IncreLoRA's Σ|ΔW ⊙ ∂L/∂ΔW|) becomes
   * a step output under `name` (TrainStep.getStatistics). The gradient is the one the backward
   * pass computes anyway on the way to the params, so this adds only the reduction.
   */
  probe(name: string, value: Tensor, reduce: (value: Tensor, grad: Tensor) => Tensor, opts?: ProbeOptions): void;
}

export interface ProbeOptions {
  /**
   * How micro-batches of one update combine: "mean" (default) or "first", the first
   * micro-batch's value (SpIEL picks its regrowth candidates from the first micro-batch; a
   * statistic holding positions must not be averaged).
   */
  combine?: "mean" | "first";
}

export type LossResult = Tensor | { loss: Tensor; metrics?: Record<string, Tensor>; surgery?: GradientSurgery };

/** Gradients of the loss and of each surgery term, by term name, then by param name. */
export interface GradientSet {
  loss: Record<string, Tensor>;
  terms: Record<string, Record<string, Tensor>>;
}

/**
 * Gradient surgery (R-AMT's gradient dropout; the family of PCGrad/GradDrop-style methods that
 * combine several losses' gradients element by element): further scalar loss terms, each
 * differentiated with respect to the params by its own backward pass through the same forward,
 * and `combine`, which returns the gradient the optimizer applies for some params (the others
 * keep the loss's). The loss is still what the step reports; the terms add no gradient of their
 * own. With gradient accumulation the surgery acts on each micro-batch's gradients.
 */
export interface GradientSurgery {
  terms: Record<string, Tensor>;
  combine(grads: GradientSet): Record<string, Tensor>;
}

export interface TrainStepDefinition {
  params: Readonly<Record<string, TensorDecl>>;
  frozen?: Readonly<Record<string, TensorDecl>>;
  batch: Readonly<Record<string, TensorDecl>>;
  loss: (ctx: LossContext) => LossResult;
  optimizer: OptimizerConfig;
  /** Clip the global gradient norm to this value (no clipping when absent). */
  clipNorm?: number;
  /** Gradient checkpointing: recompute checkpoint() regions in the backward pass. */
  recompute?: boolean;
  /**
   * Params whose gradient (as the optimizer used it: the mean over accumulated micro-batches,
   * after clipping) the step also returns, for controllers that act between steps
   * (TrainStep.getGradients). Default: none, which keeps them inside the graph.
   */
  gradientOutputs?: readonly string[];
  /**
   * Per-element update gates, for controllers that change what trains without a recompile (LoCA's
   * phases, IncreLoRA's newly added ranks). Where the gate (TrainStep.setUpdateGate) is 0 an
   * element is frozen as if it had no gradient in PyTorch: its gradient leaves the clipping
   * norm, and its value and optimizer state stay bit-identical. A gate above 0 multiplies the
   * element's learning rate (1: the step's lr), like a torch parameter group's own lr. AdamW
   * counts steps per element, so an element that starts training late gets the bias correction
   * of its own first step, as a parameter added to a torch optimizer does.
   */
  gatedUpdates?: boolean;
}

const P = "p.";
const F = "f.";
const B = "b.";
const M = "m.";
/** Optimizer state is one flat vector per slot covering every parameter (see emitUpdate). */
const S = (slot: string) => `s.${slot}`;
/** gatedUpdates: the gate (an input kept with the state) and the per-element step counts. */
const GATE = S("update_gate");
const COUNT = S("update_count");

const A = "acc.";
const G = "g.";
const ST = "st.";
/** Marks a probe statistic combined as its first micro-batch's value (ProbeOptions.combine). */
const FIRST = "first:";

interface StepInputs {
  params: Record<string, Tensor>;
  /** One flat [total] vector per optimizer slot. */
  state: Tensor[];
  /** gatedUpdates: the flat [total] gate and per-element step counts. */
  gate: { gate: Tensor; count: Tensor } | null;
  step: Tensor;
  lr: Tensor;
}

/** Total element count of the params, which must share one float dtype. */
function flatLayout(def: TrainStepDefinition): { total: number; dtype: DType } {
  let total = 0;
  let dtype: DType | null = null;
  for (const [k, d] of Object.entries(def.params)) {
    if (!d.shape.every((x) => typeof x === "number"))
      throw new ShapeError(`train step: parameter "${k}" needs a fixed shape, got ${shapeStr(d.shape)}`);
    if (dtype && d.dtype !== dtype)
      throw new ShapeError(`train step: parameters must share one dtype (${dtype} and ${d.dtype} for "${k}")`);
    dtype = d.dtype;
    total += (d.shape as number[]).reduce((a, b) => a * b, 1);
  }
  return { total, dtype: dtype ?? "f32" };
}

function declare(g: Graph, prefix: string, decls: Readonly<Record<string, TensorDecl>> | undefined): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [k, d] of Object.entries(decls ?? {})) out[k] = new Tensor(g, g.addInput(prefix + k, d));
  return out;
}

/** Traces the loss and its gradients with respect to the params; returns them with the metrics. */
function lossAndGrads(
  g: Graph,
  def: TrainStepDefinition,
  params: Record<string, Tensor>,
): { loss: Tensor; grads: Tensor[]; metrics: Record<string, Tensor>; stats: Record<string, Tensor> } {
  const frozen = declare(g, F, def.frozen);
  const batch = declare(g, B, def.batch);
  const seed = new Tensor(g, g.addInput("seed", { dtype: "i64", shape: [] }));
  const start = g.nodes.length;
  const probes = new Map<string, { value: Tensor; reduce: (value: Tensor, grad: Tensor) => Tensor; first: boolean }>();
  const probe = (name: string, value: Tensor, reduce: (value: Tensor, grad: Tensor) => Tensor, opts: ProbeOptions = {}) => {
    if (probes.has(name)) throw new EngineUsageError(`train step: probe "${name}" is defined twice`);
    if (!isFloat(value.dtype)) throw new EngineUsageError(`train step: probe "${name}" must be a float tensor, got ${value.dtype}`);
    probes.set(name, { value, reduce, first: opts.combine === "first" });
  };
  const res = def.loss({ params, frozen, batch, seed, probe });
  const loss = res instanceof Tensor ? res : res.loss;
  const metrics = res instanceof Tensor ? {} : (res.metrics ?? {});
  if (loss.rank !== 0) throw new ShapeError(`train step: the loss must be a scalar, got ${shapeStr(loss.shape)}`);
  const names = Object.keys(params);
  const probed = [...probes.values()];
  const all = backward([loss], [onesLike(loss)], [...names.map((n) => params[n]), ...probed.map((p) => p.value)], start, {
    recompute: def.recompute,
  });
  let grads = all.slice(0, names.length);
  const surgery = res instanceof Tensor ? undefined : res.surgery;
  if (surgery) grads = combineGradients(def, surgery, params, names, grads, start);
  const stats: Record<string, Tensor> = {};
  [...probes.keys()].forEach((k, i) => {
    // The output name carries how micro-batches combine (collectStat reads it back).
    stats[(probed[i].first ? FIRST : "") + k] = probed[i].reduce(probed[i].value, all[names.length + i]).cast("f32");
  });
  return { loss, grads, metrics, stats };
}

/** One more backward pass per surgery term (from the same forward), then the method's combination. */
function combineGradients(
  def: TrainStepDefinition,
  surgery: GradientSurgery,
  params: Record<string, Tensor>,
  names: readonly string[],
  grads: Tensor[],
  start: number,
): Tensor[] {
  const wrt = names.map((n) => params[n]);
  const terms: Record<string, Record<string, Tensor>> = {};
  for (const [t, term] of Object.entries(surgery.terms)) {
    if (term.rank !== 0) throw new ShapeError(`train step: surgery term "${t}" must be a scalar, got ${shapeStr(term.shape)}`);
    const g = backward([term], [onesLike(term)], wrt, start, { recompute: def.recompute });
    terms[t] = Object.fromEntries(names.map((n, i) => [n, g[i]]));
  }
  const combined = surgery.combine({ loss: Object.fromEntries(names.map((n, i) => [n, grads[i]])), terms });
  for (const n of Object.keys(combined))
    if (!params[n]) throw new EngineUsageError(`train step: surgery combined "${n}", which is not a parameter`);
  return names.map((n, i) => {
    const c = combined[n];
    if (!c) return grads[i];
    if (!sameShape(c.shape, params[n].shape))
      throw new ShapeError(
        `train step: surgery gave "${n}" a gradient of shape ${shapeStr(c.shape)}, expected ${shapeStr(params[n].shape)}`,
      );
    return c.cast(grads[i].dtype);
  });
}

/**
 * Clipping and the optimizer update, as graph outputs. All parameters are updated as one flat
 * vector (gradients concatenated, state stored flat, new values sliced back): a LoRA model has
 * hundreds of small tensors, and per-tensor update chains made the graph several thousand nodes
 * larger, which ONNX Runtime's session setup pays for more than linearly.
 */
function emitUpdate(g: Graph, def: TrainStepDefinition, inp: StepInputs, grads: Tensor[]): void {
  const slots = stateSlots(def.optimizer);
  const names = Object.keys(inp.params);
  const flatG = concat(
    grads.map((t) => t.reshape([-1])),
    0,
  );
  const flatP = concat(
    names.map((n) => inp.params[n].reshape([-1])),
    0,
  );
  // A gated-off element has no gradient, as a frozen torch parameter has none.
  const on = inp.gate ? inp.gate.gate.gt(0) : null;
  let grad = on ? flatG.mul(on.cast(flatG.dtype)) : flatG;
  const ungated = grad;
  let norm: Tensor;
  if (def.clipNorm !== undefined) {
    const c = clipByGlobalNorm([ungated], def.clipNorm);
    grad = c.grads[0];
    norm = c.norm;
  } else norm = globalNorm([ungated]);
  g.addOutput("grad_norm", norm.id);
  let upd: { param: Tensor; state: Tensor[] };
  if (inp.gate && on) {
    const count = inp.gate.count.add(on.cast("f32"));
    // A gate above 0 is the element's learning-rate multiplier (LoCA's location lr, a parameter
    // group's own schedule); each element's own step count drives AdamW's bias correction (≥ 1
    // where it is gated off, whose result is discarded anyway).
    const lr = inp.lr.mul(inp.gate.gate);
    const raw = applyUpdate(
      def.optimizer,
      { param: flatP, grad, state: inp.state, step: count, lr },
      sharedScalars(def.optimizer, count.maximum(1), lr),
    );
    upd = { param: on.where(raw.param, flatP), state: raw.state.map((t, j) => on.where(t, inp.state[j])) };
    g.addOutput(COUNT, count.id);
  } else {
    upd = applyUpdate(
      def.optimizer,
      { param: flatP, grad, state: inp.state, step: inp.step, lr: inp.lr },
      sharedScalars(def.optimizer, inp.step, inp.lr),
    );
  }
  const wanted = new Set(def.gradientOutputs ?? []);
  let at = 0;
  for (const n of names) {
    const shape = inp.params[n].shape;
    const size = (shape as number[]).reduce((a, b) => a * b, 1);
    g.addOutput(P + n, upd.param.slice(0, at, at + size).reshape([...shape]).id);
    if (wanted.has(n)) g.addOutput(G + n, grad.slice(0, at, at + size).reshape([...shape]).id);
    at += size;
  }
  upd.state.forEach((t, j) => {
    g.addOutput(S(slots[j]), t.id);
  });
}

function updateInputs(g: Graph, def: TrainStepDefinition): StepInputs {
  const params = declare(g, P, def.params);
  const { total, dtype } = flatLayout(def);
  const state = stateSlots(def.optimizer).map((s) => new Tensor(g, g.addInput(S(s), { dtype, shape: [total] })));
  const step = new Tensor(g, g.addInput("step", { dtype: "f32", shape: [] }));
  const lr = new Tensor(g, g.addInput("lr", { dtype: "f32", shape: [] }));
  const gate = def.gatedUpdates
    ? {
        gate: new Tensor(g, g.addInput(GATE, { dtype: "f32", shape: [total] })),
        count: new Tensor(g, g.addInput(COUNT, { dtype: "f32", shape: [total] })),
      }
    : null;
  return { params, state, step, lr, gate };
}

/** Builds the fused step graph. Exposed so tests can inspect it (e.g. count weight-gradient matmuls). */
export function traceTrainStep(def: TrainStepDefinition): Graph {
  const g = new Graph();
  return withGraph(g, () => {
    const inp = updateInputs(g, def);
    const { loss, grads, metrics, stats } = lossAndGrads(g, def, inp.params);
    g.addOutput("loss", loss.cast("f32").id);
    emitUpdate(g, def, inp, grads);
    for (const [k, t] of Object.entries(metrics)) g.addOutput(M + k, t.cast("f32").id);
    for (const [k, t] of Object.entries(stats)) g.addOutput(ST + k, t.id);
    return g;
  });
}

/** Gradient accumulation, first graph: (params, frozen, batch, seed, acc) → (loss, acc + grads). */
export function traceAccumulateStep(def: TrainStepDefinition): Graph {
  const g = new Graph();
  return withGraph(g, () => {
    const params = declare(g, P, def.params);
    const acc = declare(g, A, def.params);
    const { loss, grads, metrics, stats } = lossAndGrads(g, def, params);
    g.addOutput("loss", loss.cast("f32").id);
    Object.keys(params).forEach((n, i) => {
      g.addOutput(A + n, acc[n].add(grads[i]).id);
    });
    for (const [k, t] of Object.entries(metrics)) g.addOutput(M + k, t.cast("f32").id);
    for (const [k, t] of Object.entries(stats)) g.addOutput(ST + k, t.id);
    return g;
  });
}

/** Gradient accumulation, second graph: (params, state, acc, count, step, lr) → update with the mean gradient. */
export function traceApplyStep(def: TrainStepDefinition): Graph {
  const g = new Graph();
  return withGraph(g, () => {
    const inp = updateInputs(g, def);
    const acc = declare(g, A, def.params);
    const count = new Tensor(g, g.addInput("count", { dtype: "f32", shape: [] }));
    emitUpdate(
      g,
      def,
      inp,
      Object.keys(inp.params).map((n) => acc[n].div(count.cast(acc[n].dtype))),
    );
    return g;
  });
}

export interface StepResult {
  loss: number;
  gradNorm: number;
  metrics: Record<string, number>;
}

/** A compiled training step that owns the trainable parameters and optimizer state between steps. */
export class TrainStep {
  private params: Record<string, HostTensor>;
  private state: Record<string, HostTensor>;
  private grads: Record<string, HostTensor> = {};
  /** Probe statistics of the last update; while accumulating, their running sum. */
  private stats: Record<string, HostTensor> = {};
  private statsSum: Record<string, Float64Array> = {};
  private steps = 0;

  private constructor(
    readonly graph: Graph,
    private readonly exec: Executor,
    private readonly def: TrainStepDefinition,
    params: Record<string, HostTensor>,
    private readonly frozen: Record<string, HostTensor>,
    private readonly opts: CompileOptions,
  ) {
    this.params = params;
    this.state = {};
    const { total, dtype } = flatLayout(def);
    for (const slot of stateSlots(def.optimizer)) this.state[S(slot)] = hostTensor(dtype, [total]);
    if (def.gatedUpdates) {
      this.state[GATE] = hostTensor("f32", [total], new Float32Array(total).fill(1));
      this.state[COUNT] = hostTensor("f32", [total]);
    }
  }

  static async create(
    def: TrainStepDefinition,
    init: { params: Record<string, HostTensor>; frozen?: Record<string, HostTensor> },
    opts: CompileOptions = {},
  ): Promise<TrainStep> {
    checkTensors("parameter", def.params, init.params);
    checkTensors("frozen tensor", def.frozen ?? {}, init.frozen ?? {});
    for (const n of def.gradientOutputs ?? [])
      if (!def.params[n]) throw new EngineUsageError(`train step: gradient output "${n}" is not a parameter`);
    const graph = traceTrainStep(def);
    const exec = await compileGraph(graph, opts);
    return new TrainStep(graph, exec, def, { ...init.params }, { ...(init.frozen ?? {}) }, opts);
  }

  get stepCount(): number {
    return this.steps;
  }

  async step(batch: Record<string, HostTensor>, opts: { lr: number; seed?: number }): Promise<StepResult> {
    if (this.pending) throw new EngineUsageError("train step: gradients are being accumulated; call apply() first");
    checkTensors("batch tensor", this.def.batch, batch);
    this.steps += 1;
    const feeds: Record<string, HostTensor> = { ...this.state };
    for (const [k, v] of Object.entries(this.params)) feeds[P + k] = v;
    for (const [k, v] of Object.entries(this.frozen)) feeds[F + k] = v;
    for (const [k, v] of Object.entries(batch)) feeds[B + k] = v;
    feeds.step = hostTensor("f32", [], [this.steps]);
    feeds.lr = hostTensor("f32", [], [opts.lr]);
    feeds.seed = hostTensor("i64", [], [opts.seed ?? this.steps]);
    return this.collect(this.exec, await this.exec.run(feeds));
  }

  private collect(exec: Executor, outs: HostTensor[]): StepResult {
    const res: StepResult = { loss: Number.NaN, gradNorm: Number.NaN, metrics: {} };
    exec.graph.outputs.forEach((o, i) => {
      const t = outs[i];
      if (o.name === "loss") res.loss = readNumber(t, 0);
      else if (o.name === "grad_norm") res.gradNorm = readNumber(t, 0);
      else if (o.name.startsWith(P)) this.params[o.name.slice(P.length)] = t;
      else if (o.name.startsWith(M)) res.metrics[o.name.slice(M.length)] = readNumber(t, 0);
      else if (o.name.startsWith(A)) this.acc[o.name] = t;
      else if (o.name.startsWith(G)) this.grads[o.name.slice(G.length)] = t;
      else if (o.name.startsWith(ST)) this.collectStat(o.name.slice(ST.length), t);
      else this.state[o.name] = t;
    });
    return res;
  }

  /** A step's statistic is the last update's; micro-batches' statistics are averaged at apply(). */
  private collectStat(output: string, t: HostTensor): void {
    const first = output.startsWith(FIRST);
    const name = first ? output.slice(FIRST.length) : output;
    if (this.pending === 0 || (first && this.pending === 1)) {
      this.stats[name] = t;
      return;
    }
    if (first) return;
    const sum = this.statsSum[name] ?? new Float64Array(t.data.length);
    for (let i = 0; i < sum.length; i++) sum[i] += Number(t.data[i]);
    this.statsSum[name] = sum;
    this.stats[name] = hostTensor(
      "f32",
      [...t.shape],
      Float32Array.from(sum, (v) => v / this.pending),
    );
  }

  // ---- gradient accumulation: accumulate() per micro-batch, then apply() ----

  private accExec: Promise<Executor> | null = null;
  private applyExec: Promise<Executor> | null = null;
  private acc: Record<string, HostTensor> = {};
  private pending = 0;

  /** Adds one micro-batch's gradients to the accumulator; returns its loss. */
  async accumulate(batch: Record<string, HostTensor>, opts: { seed?: number } = {}): Promise<StepResult> {
    checkTensors("batch tensor", this.def.batch, batch);
    this.accExec ??= compileGraph(traceAccumulateStep(this.def), this.opts);
    const exec = await this.accExec;
    if (this.pending === 0) {
      this.statsSum = {};
      this.acc = {};
      for (const [k, p] of Object.entries(this.params)) this.acc[A + k] = hostTensor(p.dtype, p.shape);
    }
    const feeds: Record<string, HostTensor> = { ...this.acc };
    for (const [k, v] of Object.entries(this.params)) feeds[P + k] = v;
    for (const [k, v] of Object.entries(this.frozen)) feeds[F + k] = v;
    for (const [k, v] of Object.entries(batch)) feeds[B + k] = v;
    feeds.seed = hostTensor("i64", [], [opts.seed ?? this.steps * 1000 + this.pending + 1]);
    this.pending += 1;
    return this.collect(exec, await exec.run(feeds));
  }

  /** One optimizer update with the mean of the accumulated gradients. */
  async apply(opts: { lr: number }): Promise<StepResult> {
    if (this.pending === 0) throw new EngineUsageError("train step: apply() without accumulated gradients");
    this.applyExec ??= compileGraph(traceApplyStep(this.def), this.opts);
    const exec = await this.applyExec;
    this.steps += 1;
    const feeds: Record<string, HostTensor> = { ...this.state, ...this.acc };
    for (const [k, v] of Object.entries(this.params)) feeds[P + k] = v;
    feeds.step = hostTensor("f32", [], [this.steps]);
    feeds.lr = hostTensor("f32", [], [opts.lr]);
    feeds.count = hostTensor("f32", [], [this.pending]);
    this.pending = 0;
    this.acc = {};
    return this.collect(exec, await exec.run(feeds));
  }

  /** The current trainable parameters (the step's latest outputs). */
  getParams(): Record<string, HostTensor> {
    return { ...this.params };
  }

  /** The probe statistics (LossContext.probe) of the last update: the micro-batches' mean when accumulating. */
  getStatistics(): Record<string, HostTensor> {
    return { ...this.stats };
  }

  /** The gradients of the last update for the params in `gradientOutputs`. */
  getGradients(): Record<string, HostTensor> {
    return { ...this.grads };
  }

  /**
   * Replaces some parameters' values between steps (a controller pruning ranks); their optimizer
   * state is kept. Each must be declared, with its dtype and shape.
   */
  setParams(values: Record<string, HostTensor>): void {
    for (const [k, t] of Object.entries(values)) {
      const d = this.def.params[k];
      if (!d) throw new EngineUsageError(`unexpected parameter "${k}"`);
      checkTensors("parameter", { [k]: d }, { [k]: t });
    }
    this.params = { ...this.params, ...values };
  }

  /**
   * gatedUpdates: which elements of a parameter the next updates train, and at what multiple of
   * the learning rate: a boolean (1 or 0) or a multiplier for the whole tensor, or per-element
   * values of its shape (0 freezes). The gates are part of getState().
   */
  setUpdateGate(name: string, on: boolean | number | HostTensor): void {
    if (!this.def.gatedUpdates) throw new EngineUsageError("train step: setUpdateGate needs gatedUpdates");
    const d = this.def.params[name];
    if (!d) throw new EngineUsageError(`unexpected parameter "${name}"`);
    let at = 0;
    for (const [k, decl] of Object.entries(this.def.params)) {
      if (k === name) break;
      at += (decl.shape as number[]).reduce((a, b) => a * b, 1);
    }
    const size = (d.shape as number[]).reduce((a, b) => a * b, 1);
    const value = (i: number) => (typeof on === "boolean" ? Number(on) : typeof on === "number" ? on : Number(on.data[i]));
    if (typeof on === "object" && on.data.length !== size)
      throw new ShapeError(`update gate of "${name}": expected ${size} elements, got ${on.data.length}`);
    const gate = Float32Array.from(this.state[GATE].data as Float32Array);
    for (let i = 0; i < size; i++) {
      const v = value(i);
      if (!(v >= 0 && Number.isFinite(v))) throw new EngineUsageError(`update gate of "${name}": ${v} is not a finite value >= 0`);
      gate[at + i] = v;
    }
    this.state[GATE] = hostTensor("f32", [gate.length], gate);
  }

  /** Where a parameter's elements sit in the flat optimizer-state vectors. */
  private span(name: string): { at: number; size: number } {
    if (!this.def.params[name]) throw new EngineUsageError(`unexpected parameter "${name}"`);
    let at = 0;
    for (const [k, decl] of Object.entries(this.def.params)) {
      const size = (decl.shape as number[]).reduce((a, b) => a * b, 1);
      if (k === name) return { at, size };
      at += size;
    }
    throw new EngineUsageError(`unexpected parameter "${name}"`);
  }

  /**
   * One parameter's optimizer state, copied, by slot: AdamW's "exp_avg" and "exp_avg_sq" (SGD's
   * "momentum_buffer"), and with gatedUpdates "update_count" (per-element steps, which AdamW's
   * bias correction uses) and "update_gate". Each has the parameter's shape.
   */
  parameterState(name: string): Record<string, HostTensor> {
    const { at, size } = this.span(name);
    const shape = this.def.params[name].shape as number[];
    const out: Record<string, HostTensor> = {};
    for (const [k, t] of Object.entries(this.state)) {
      const data = t.data as Float32Array | Float64Array;
      out[k.slice(S("").length)] = hostTensor(t.dtype, shape, data.slice(at, at + size));
    }
    return out;
  }

  /**
   * Replaces slots of one parameter's optimizer state (names as parameterState gives them), e.g.
   * fresh moments and a zero step count for entries a controller moved (SpIEL's regrowth).
   */
  setParameterState(name: string, slots: Readonly<Record<string, HostTensor>>): void {
    const { at, size } = this.span(name);
    for (const [slot, v] of Object.entries(slots)) {
      const key = S(slot);
      const cur = this.state[key];
      if (!cur)
        throw new EngineUsageError(
          `train step: no optimizer state "${slot}" (have ${Object.keys(this.state)
            .map((k) => k.slice(2))
            .join(", ")})`,
        );
      if (v.data.length !== size)
        throw new ShapeError(`optimizer state "${slot}" of "${name}": expected ${size} elements, got ${v.data.length}`);
      const data = (cur.data as Float32Array | Float64Array).slice();
      for (let i = 0; i < size; i++) data[at + i] = Number(v.data[i]);
      this.state[key] = hostTensor(cur.dtype, cur.shape, data);
    }
  }

  /**
   * gatedUpdates: how many parameter elements some update has trained so far (per-element step
   * count above 0), or null without gates. Methods that grow or move what trains (IncreLoRA's
   * slots) report this rather than their compiled capacity.
   */
  updatedElements(): number | null {
    if (!this.def.gatedUpdates) return null;
    let n = 0;
    for (const c of this.state[COUNT].data as Float32Array) if (c > 0) n++;
    return n;
  }

  /** Optimizer state and step count, for checkpoints. */
  getState(): { step: number; tensors: Record<string, HostTensor> } {
    return { step: this.steps, tensors: { ...this.state } };
  }

  setState(s: { step: number; tensors: Record<string, HostTensor>; params?: Record<string, HostTensor> }): void {
    for (const k of Object.keys(this.state)) {
      if (!s.tensors[k]) throw new EngineUsageError(`optimizer state is missing "${k}"`);
    }
    this.state = { ...s.tensors };
    if (s.params) {
      checkTensors("parameter", this.def.params, s.params);
      this.params = { ...s.params };
    }
    this.steps = s.step;
  }

  /** Replaces some frozen inputs (each must be declared, with its dtype and shape). */
  setFrozen(values: Record<string, HostTensor>): void {
    const decls = this.def.frozen ?? {};
    for (const [k, t] of Object.entries(values)) {
      const d = decls[k];
      if (!d) throw new EngineUsageError(`unexpected frozen tensor "${k}"`);
      checkTensors("frozen tensor", { [k]: d }, { [k]: t });
      this.frozen[k] = t;
    }
  }

  async release(): Promise<void> {
    await this.exec.release();
    if (this.accExec) await (await this.accExec).release();
    if (this.applyExec) await (await this.applyExec).release();
  }
}

function checkTensors(what: string, decls: Readonly<Record<string, TensorDecl>>, given: Record<string, HostTensor>): void {
  for (const k of Object.keys(decls)) {
    if (!given[k]) throw new EngineUsageError(`missing ${what} "${k}"`);
  }
  for (const [k, t] of Object.entries(given)) {
    const d = decls[k];
    if (!d) throw new EngineUsageError(`unexpected ${what} "${k}" (declared: ${Object.keys(decls).join(", ") || "none"})`);
    const staticShape = d.shape.every((x) => typeof x === "number");
    if (t.dtype !== d.dtype || (staticShape && !sameShape(t.shape, d.shape)) || t.shape.length !== d.shape.length) {
      throw new ShapeError(`${what} "${k}": expected ${d.dtype}${shapeStr(d.shape)}, got ${t.dtype}${shapeStr(t.shape)}`);
    }
  }
}
