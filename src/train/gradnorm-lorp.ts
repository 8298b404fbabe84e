/**
 * GradNormLoRP (Huang et al., "Gradient Weight-normalized Low-rank Projection"): full-parameter
 * training of the targeted 2-D base weights, each reparameterised as W = g·V/‖V‖ (per row), with
 * the direction's gradient projected to rank r by a GaLore projector and Adam run on the projected
 * gradient (and on g). Not an adapter: the base tensors themselves change.
 *
 * One compiled step graph holds the forward, the backward and the optimizer; the projectors are
 * inputs, refreshed on the host every T steps from a dense gradient that only a separate gradient
 * graph returns (run on refresh steps only, on the same batch and seed). State per target: the
 * projector (r×n or m×r), Adam moments of the projected gradient (m×r or r×n), g and its moments
 * (m), and ‖V‖ row norms (m) — not V itself: V = W·‖V‖/g row-wise, exact in exact arithmetic
 * (the authors' optimizer keeps a full-size clone of v instead).
 */
import { backward } from "../engine/autodiff/grad.js";
import { onesLike } from "../engine/autodiff/rules.js";
import { type CompileOptions, compileGraph, type Executor } from "../engine/exec/backend.js";
import { Graph } from "../engine/ir/graph.js";
import { type HostTensor, hostTensor, readNumber } from "../engine/ir/host.js";
import { crossEntropy } from "../engine/trace/composites.js";
import { withGraph } from "../engine/trace/context.js";
import { scalar, Tensor } from "../engine/trace/tensor.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import { ModelError, WeightContext } from "../nn/context.js";
import { prepareBatch, stepBatchDecls, stepModelInputs, type TrainBatch } from "../tuners/train.js";
import {
  checkGradNorm,
  checkTarget,
  directionGradient,
  GRADNORM_DEFAULTS,
  GradNormError,
  type GradNormOptions,
  lowRankShapes,
  projectorOf,
  projectorSide,
  rowNorms,
} from "./gradnorm-projector.js";
import { SelectiveTrainer } from "./selective.js";

/** Per-target optimizer state slots (each an f32 tensor), as saved in checkpoints under `<slot>.<name>`. */
export const GRADNORM_SLOTS = [
  "projector",
  "exp_avg",
  "exp_avg_sq",
  "magnitude",
  "vnorm",
  "magnitude_exp_avg",
  "magnitude_exp_avg_sq",
] as const;
type Slot = (typeof GRADNORM_SLOTS)[number];

export interface GradNormTrainerOptions extends Partial<GradNormOptions> {
  clipNorm?: number;
  compile?: CompileOptions;
  gradientCheckpointing?: boolean;
}

export interface GradNormStepResult {
  loss: number;
  gradNorm: number;
  /** On a refresh step: seconds for the gradient graph (compile + run) and for the SVDs. */
  refresh?: { gradientSeconds: number; svdSeconds: number };
}

interface Built {
  step: Executor;
  grad: Executor | null;
}

export class GradNormTrainer {
  private steps = 0;
  private state = new Map<string, Record<Slot, HostTensor>>();
  private exec: Built | null = null;
  readonly opts: GradNormOptions;
  /** Seconds spent on refreshes (gradient graph + SVD), and how many. */
  readonly refreshStats = { refreshes: 0, gradientSeconds: 0, svdSeconds: 0 };

  private constructor(
    readonly model: PreTrainedModel,
    /** Targeted weight names (distinct; tied names resolved to the first). */
    readonly targets: readonly string[],
    private readonly aliases: Map<string, string>,
    private readonly distinct: readonly string[],
    opts: GradNormOptions,
    private readonly extra: { clipNorm?: number; compile?: CompileOptions; gradientCheckpointing?: boolean },
  ) {
    this.opts = opts;
  }

  /** Checks the options and targets and sets up the initial state (v = W, g = ‖W‖ per row). */
  static create(model: PreTrainedModel, targets: readonly string[], o: GradNormTrainerOptions = {}): GradNormTrainer {
    const opts: GradNormOptions = {
      ...GRADNORM_DEFAULTS,
      ...Object.fromEntries(Object.entries(o).filter(([k, v]) => k in GRADNORM_DEFAULTS && v !== undefined)),
    } as GradNormOptions;
    checkGradNorm(opts);
    const { names, aliases } = SelectiveTrainer.distinctWeights(model);
    if (targets.length === 0) throw new GradNormError("gradnorm_lorp: no target tensors");
    const resolved = [...new Set(targets.map((t) => aliases.get(t) ?? t))];
    for (const k of resolved) {
      const t = model.weights.get(k);
      if (!t) throw new GradNormError(`gradnorm_lorp: the model has no tensor "${k}"`);
      if (t.dtype !== "f32") throw new GradNormError(`gradnorm_lorp: tensor "${k}" is ${t.dtype}; only f32 weights train`);
      checkTarget(k, t, opts.rank);
    }
    const trainer = new GradNormTrainer(model, resolved, aliases, names, opts, {
      clipNorm: o.clipNorm,
      compile: o.compile,
      gradientCheckpointing: o.gradientCheckpointing,
    });
    for (const k of resolved) trainer.state.set(k, trainer.initialState(k));
    return trainer;
  }

  private initialState(k: string): Record<Slot, HostTensor> {
    const w = this.model.weights.get(k) as HostTensor;
    const [m, n] = w.shape as [number, number];
    const shapes = lowRankShapes(m, n, this.opts.rank);
    const norms = rowNorms(w, k);
    const col = (d?: Float32Array) => hostTensor("f32", [m, 1], d ?? new Float32Array(m));
    return {
      projector: hostTensor("f32", shapes.projector),
      exp_avg: hostTensor("f32", shapes.moment),
      exp_avg_sq: hostTensor("f32", shapes.moment),
      magnitude: col(norms.slice()),
      vnorm: col(norms.slice()),
      magnitude_exp_avg: col(),
      magnitude_exp_avg_sq: col(),
    };
  }

  get stepCount(): number {
    return this.steps;
  }

  /** Elements of the targeted tensors (all of them train). */
  trainedParameters(): number {
    return this.targets.reduce((a, k) => a + (this.model.weights.get(k) as HostTensor).data.length, 0);
  }

  /** Elements of optimizer state (projectors, moments, g, ‖V‖): compare with 2× trainedParameters() for AdamW. */
  optimizerElements(): number {
    let n = 0;
    for (const s of this.state.values()) for (const t of Object.values(s)) n += t.data.length;
    return n;
  }

  private lossOf(p: Record<string, Tensor>, f: Record<string, Tensor>, batch: Record<string, Tensor>): Tensor {
    const model = this.model;
    const aliases = this.aliases;
    const ctx = new WeightContext((n) => {
      const k = aliases.get(n) ?? n;
      return p[k] ?? f[k];
    }, new Set(model.weights.keys()));
    const out = model.traceForward(ctx, stepModelInputs(batch));
    if (!out.logits) throw new ModelError(`a ${model.head} model has no logits to train on`);
    return crossEntropy(out.logits, batch.labels, { ignoreIndex: -100 });
  }

  /** Declares params, frozen tensors, batch and seed; traces loss and ∂L/∂W of the targets. */
  private traceLoss(g: Graph): { loss: Tensor; w: Record<string, Tensor>; grads: Tensor[] } {
    const targets = new Set(this.targets);
    const w: Record<string, Tensor> = {};
    const f: Record<string, Tensor> = {};
    for (const k of this.distinct) {
      const t = this.model.weights.get(k) as HostTensor;
      const decl = { dtype: t.dtype, shape: t.shape };
      if (targets.has(k)) w[k] = new Tensor(g, g.addInput(`p.${k}`, decl));
      else f[k] = new Tensor(g, g.addInput(`f.${k}`, decl));
    }
    const batch: Record<string, Tensor> = {};
    for (const [k, d] of Object.entries(stepBatchDecls(this.model.head, this.model.usesTokenTypeIds)))
      batch[k] = new Tensor(g, g.addInput(`b.${k}`, d));
    // seed: declared so the graphs take the same feeds as TrainStep's (dropout reads it)
    g.addInput("seed", { dtype: "i64", shape: [] });
    const start = g.nodes.length;
    const loss = this.lossOf(w, f, batch);
    const grads = backward(
      [loss],
      [onesLike(loss)],
      this.targets.map((k) => w[k]),
      start,
      {
        recompute: this.extra.gradientCheckpointing,
      },
    );
    return { loss, w, grads };
  }

  /** The dense ∂L/∂W of every target (refresh steps only). */
  private traceGradient(): Graph {
    const g = new Graph();
    return withGraph(g, () => {
      const { loss, grads } = this.traceLoss(g);
      g.addOutput("loss", loss.cast("f32").id);
      this.targets.forEach((k, i) => {
        g.addOutput(`grad.${k}`, grads[i].id);
      });
      return g;
    });
  }

  /** Forward, backward and the GradNormLoRP update of every target (Adam of LowRankWeightNormAdamW). */
  private traceStep(): Graph {
    const g = new Graph();
    const o = this.opts;
    return withGraph(g, () => {
      const { loss, w, grads: raw } = this.traceLoss(g);
      const stepT = new Tensor(g, g.addInput("step", { dtype: "f32", shape: [] }));
      const lr = new Tensor(g, g.addInput("lr", { dtype: "f32", shape: [] }));
      const slot = (s: Slot, k: string, t: HostTensor) => new Tensor(g, g.addInput(`${s}.${k}`, { dtype: "f32", shape: t.shape }));
      let sq: Tensor | null = null;
      for (const t of raw) {
        const s = t.mul(t).sum();
        sq = sq ? sq.add(s) : s;
      }
      const norm = (sq as Tensor).sqrt();
      g.addOutput("loss", loss.cast("f32").id);
      g.addOutput("grad_norm", norm.id);
      const grads =
        this.extra.clipNorm === undefined
          ? raw
          : raw.map((t) =>
              t.mul(
                scalar(this.extra.clipNorm as number)
                  .div(norm.add(1e-6))
                  .minimum(1),
              ),
            );
      // α_t = lr·√(1−β2^t)/(1−β1^t), as the authors' (and HF's) AdamW.
      const alpha = lr.mul(scalar(1).sub(scalar(o.beta2).pow(stepT)).sqrt()).div(scalar(1).sub(scalar(o.beta1).pow(stepT)));
      const adam = (m0: Tensor, s0: Tensor, grad: Tensor) => {
        const m = m0.mul(o.beta1).add(grad.mul(1 - o.beta1));
        const s = s0.mul(o.beta2).add(grad.mul(grad).mul(1 - o.beta2));
        return { m, s, dir: m.div(s.sqrt().add(o.eps)) };
      };
      const decay = o.weightDecay ? scalar(1).sub(lr.mul(o.weightDecay)) : null;
      this.targets.forEach((k, i) => {
        const st = this.state.get(k) as Record<Slot, HostTensor>;
        const inp = Object.fromEntries(GRADNORM_SLOTS.map((s) => [s, slot(s, k, st[s])])) as Record<Slot, Tensor>;
        const G = grads[i];
        const [m, n] = (this.model.weights.get(k) as HostTensor).shape as [number, number];
        // V = W·‖V‖/g; v̂ = V/‖V‖ = W/g (row-wise).
        const vhat = w[k].div(inp.magnitude);
        const V = vhat.mul(inp.vnorm);
        const gGrad = G.mul(vhat).sum(1, true);
        // Paper: ∇V = (g/‖V‖)(∇W − v̂·∇g). Authors: g is reset to ‖v‖, so ∇v = ∇W exactly.
        const vGrad = o.compat ? G : inp.magnitude.div(inp.vnorm).mul(G.sub(vhat.mul(gGrad)));
        const right = projectorSide(m, n) === "right";
        const P = inp.projector;
        const R = right ? vGrad.matmul(P.transpose()) : P.transpose().matmul(vGrad);
        const a = adam(inp.exp_avg, inp.exp_avg_sq, R);
        let back = right ? a.dir.matmul(P) : P.matmul(a.dir);
        if (o.scale !== 1) back = back.mul(o.scale);
        let v2 = V.sub(back.mul(alpha));
        const b = adam(inp.magnitude_exp_avg, inp.magnitude_exp_avg_sq, gGrad);
        const g0 = o.compat ? inp.vnorm : inp.magnitude;
        let g2 = g0.sub(b.dir.mul(alpha));
        if (decay) {
          v2 = v2.mul(decay);
          g2 = g2.mul(decay);
        }
        const n2 = v2.mul(v2).sum(1, true).sqrt();
        g.addOutput(`p.${k}`, v2.mul(g2.div(n2)).id);
        g.addOutput(`exp_avg.${k}`, a.m.id);
        g.addOutput(`exp_avg_sq.${k}`, a.s.id);
        g.addOutput(`magnitude.${k}`, g2.id);
        g.addOutput(`vnorm.${k}`, n2.id);
        g.addOutput(`magnitude_exp_avg.${k}`, b.m.id);
        g.addOutput(`magnitude_exp_avg_sq.${k}`, b.s.id);
      });
      return g;
    });
  }

  private async build(): Promise<Built> {
    if (this.exec) return this.exec;
    const opts = { ...this.model.compileOptions, ...this.extra.compile };
    const step = await compileGraph(this.traceStep(), opts);
    this.exec = { step, grad: null };
    return this.exec;
  }

  private feeds(batch: Record<string, HostTensor>, seed: number): Record<string, HostTensor> {
    const targets = new Set(this.targets);
    const feeds: Record<string, HostTensor> = {};
    for (const k of this.distinct) feeds[`${targets.has(k) ? "p" : "f"}.${k}`] = this.model.weights.get(k) as HostTensor;
    for (const [k, v] of Object.entries(batch)) feeds[`b.${k}`] = v;
    feeds.seed = hostTensor("i64", [], [seed]);
    return feeds;
  }

  /** True when the next step refreshes the projectors (GaLore: at steps 0, T, 2T, … before the increment). */
  get refreshDue(): boolean {
    return this.steps % this.opts.updateProjGap === 0;
  }

  /** Recomputes every projector from the dense gradient of this batch. */
  private async refresh(feeds: Record<string, HostTensor>): Promise<{ gradientSeconds: number; svdSeconds: number }> {
    const t0 = performance.now();
    // The gradient graph lives only for the refresh, and the step's session is released meanwhile
    // (rebuilt from the compile cache after): the two sessions never coexist, and the dense
    // gradients (the memory GaLore avoids) exist only here.
    await this.exec?.step.release();
    this.exec = null;
    const exec = await compileGraph(this.traceGradient(), { ...this.model.compileOptions, ...this.extra.compile });
    let outs: HostTensor[];
    try {
      outs = await exec.run(feeds);
    } finally {
      await exec.release();
    }
    const byName = new Map(exec.graph.outputs.map((o, i) => [o.name, outs[i]]));
    outs.length = 0;
    const t1 = performance.now();
    for (const k of this.targets) {
      const grad = byName.get(`grad.${k}`) as HostTensor;
      const st = this.state.get(k) as Record<Slot, HostTensor>;
      const w = this.model.weights.get(k) as HostTensor;
      const [m, n] = w.shape as [number, number];
      const d = directionGradient(
        grad.data as Float32Array,
        w.data as Float32Array,
        st.magnitude.data as Float32Array,
        st.vnorm.data as Float32Array,
        m,
        n,
        this.opts.compat,
      );
      st.projector = hostTensor("f32", st.projector.shape, projectorOf(d, this.opts.rank, this.opts.svd));
      byName.delete(`grad.${k}`);
    }
    const r = { gradientSeconds: (t1 - t0) / 1000, svdSeconds: (performance.now() - t1) / 1000 };
    this.refreshStats.refreshes++;
    this.refreshStats.gradientSeconds += r.gradientSeconds;
    this.refreshStats.svdSeconds += r.svdSeconds;
    return r;
  }

  /** One optimizer step; the model's targeted weights are replaced by the updated ones. */
  async train(batch: TrainBatch, opts: { lr: number; seed?: number }): Promise<GradNormStepResult> {
    const feeds = this.feeds(prepareBatch(this.model.head, batch, this.model.usesTokenTypeIds), opts.seed ?? this.steps + 1);
    const refresh = this.refreshDue ? await this.refresh(feeds) : undefined;
    const built = await this.build();
    for (const [k, st] of this.state) for (const s of GRADNORM_SLOTS) feeds[`${s}.${k}`] = st[s];
    feeds.step = hostTensor("f32", [], [this.steps + 1]);
    feeds.lr = hostTensor("f32", [], [opts.lr]);
    const outs = await built.step.run(feeds);
    const res: GradNormStepResult = { loss: Number.NaN, gradNorm: Number.NaN, ...(refresh ? { refresh } : {}) };
    built.step.graph.outputs.forEach((o, i) => {
      const t = outs[i];
      if (o.name === "loss") res.loss = readNumber(t, 0);
      else if (o.name === "grad_norm") res.gradNorm = readNumber(t, 0);
      else if (o.name.startsWith("p.")) this.setWeight(o.name.slice(2), t);
      else {
        const dot = o.name.indexOf(".");
        (this.state.get(o.name.slice(dot + 1)) as Record<Slot, HostTensor>)[o.name.slice(0, dot) as Slot] = t;
      }
    });
    this.steps++;
    return res;
  }

  private setWeight(k: string, t: HostTensor): void {
    this.model.weights.set(k, t);
    for (const [alias, first] of this.aliases) if (first === k) this.model.weights.set(alias, t);
  }

  /** The per-target state, flat, as `<slot>.<tensor name>` (what a checkpoint holds besides the weights and step). */
  checkpointState(): Record<string, HostTensor> {
    const out: Record<string, HostTensor> = {};
    for (const [k, st] of this.state) for (const s of GRADNORM_SLOTS) out[`${s}.${k}`] = st[s];
    return out;
  }

  /** The targeted tensors by name. */
  trainedTensors(): Map<string, HostTensor> {
    return new Map(this.targets.map((k) => [k, this.model.weights.get(k) as HostTensor]));
  }

  /** Puts a checkpoint back: the targeted weights, the optimizer state and the step count. */
  restore(step: number, state: Readonly<Record<string, HostTensor>>, tensors: ReadonlyMap<string, HostTensor>, where: string): void {
    for (const k of this.targets) {
      const t = tensors.get(k);
      if (!t) throw new GradNormError(`${where}: no tensor "${k}" (the run's targets differ?)`);
      const cur = this.model.weights.get(k) as HostTensor;
      if (t.shape.join(",") !== cur.shape.join(","))
        throw new GradNormError(`${where}: "${k}" is [${t.shape}], the model's is [${cur.shape}]`);
      this.setWeight(k, t);
      const st = this.state.get(k) as Record<Slot, HostTensor>;
      for (const s of GRADNORM_SLOTS) {
        const v = state[`${s}.${k}`];
        if (!v) throw new GradNormError(`${where}: optimizer state "${s}.${k}" is missing`);
        if (v.shape.join(",") !== st[s].shape.join(","))
          throw new GradNormError(`${where}: optimizer state "${s}.${k}" is [${v.shape}], expected [${st[s].shape}] (another --r?)`);
        st[s] = v;
      }
    }
    this.steps = step;
  }

  async release(): Promise<void> {
    await this.exec?.step.release();
    this.exec = null;
  }
}
