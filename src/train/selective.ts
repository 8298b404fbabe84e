/**
 * Training whole base tensors chosen per step range (LISA's sampled layers, HFT's half of the
 * matrices). Each selection compiles its own step: the chosen tensors are the step's params, the
 * rest of the model frozen zero-copy inputs, so gradients and optimizer state exist only for what
 * trains and no weight gradient is computed for a frozen tensor. Sessions are cached by graph hash
 * (a selection seen again loads from the compile cache); only the current one is kept in memory.
 *
 * At a switch, tensors trained before and after keep their AdamW state (moments and per-element
 * step counts); tensors switched off lose theirs, and tensors switched on start from zero moments
 * and step count 0 (full bias correction), as LMFlow's LISATrainer does.
 */
import type { CompileOptions } from "../engine/exec/backend.js";
import type { HostTensor } from "../engine/ir/host.js";
import type { OptimizerConfig } from "../engine/optim/optimizers.js";
import { type StepResult, type TensorDecl, TrainStep } from "../engine/optim/train-step.js";
import { crossEntropy } from "../engine/trace/composites.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import { ModelError, WeightContext } from "../nn/context.js";
import { prepareBatch, stepBatchDecls, stepModelInputs, type TrainBatch } from "../tuners/train.js";
import {
  checkLisa,
  HFT_DEFAULTS,
  type HftOptions,
  hftStage,
  hftTensors,
  LayerSelectionError,
  LISA_DEFAULTS,
  type LisaOptions,
  lisaLayers,
  lisaTensors,
  type TensorLayout,
  tensorLayout,
} from "./layer-selection.js";

/** What trains from a given 0-based step on: a key that changes exactly when the set does. */
export interface Selection {
  key: string;
  tensors: string[];
  /** For logs: LISA's sampled layers. */
  layers?: number[];
}

export interface SelectionPolicy {
  readonly method: "lisa" | "hft";
  select(step: number): Selection;
}

export function lisaPolicy(layout: TensorLayout, seed: number, o: Partial<LisaOptions> = {}): SelectionPolicy {
  const opts = { ...LISA_DEFAULTS, ...o };
  checkLisa(opts, layout.blocks.length);
  return {
    method: "lisa",
    select(step) {
      const layers = lisaLayers(seed, step, opts, layout.blocks.length);
      return { key: `lisa:${layers.join(",")}`, tensors: lisaTensors(layout, layers), layers };
    },
  };
}

export function hftPolicy(layout: TensorLayout, seed: number, o: Partial<HftOptions> = {}): SelectionPolicy {
  const opts = { ...HFT_DEFAULTS, ...o };
  if (!Number.isInteger(opts.stageSteps) || opts.stageSteps < 0)
    throw new LayerSelectionError(`--hft-stage-steps: ${opts.stageSteps} is not a step count >= 0`);
  if (layout.blocks.length === 0) throw new LayerSelectionError("hft: the model has no transformer layers");
  return {
    method: "hft",
    select(step) {
      const stage = hftStage(step, opts);
      return { key: `hft:${stage}`, tensors: hftTensors(layout, seed, stage) };
    },
  };
}

export interface SelectiveTrainerOptions {
  optimizer?: OptimizerConfig;
  clipNorm?: number;
  compile?: CompileOptions;
  gradientCheckpointing?: boolean;
}

/** Seconds spent building steps for new selections, and how many were built. */
export interface SwitchStats {
  switches: number;
  seconds: number;
  lastSeconds: number;
}

export class SelectiveTrainer {
  private step: TrainStep | null = null;
  private selection: Selection | null = null;
  private steps = 0;
  /** Every tensor some step has changed: what the saved form holds. */
  readonly changed = new Set<string>();
  readonly switchStats: SwitchStats = { switches: 0, seconds: 0, lastSeconds: 0 };

  private constructor(
    readonly model: PreTrainedModel,
    readonly policy: SelectionPolicy,
    /** Tied names → the first name (a tied weight trains once). */
    private readonly aliases: Map<string, string>,
    private readonly distinct: string[],
    private readonly opts: SelectiveTrainerOptions,
  ) {}

  /** The model's distinct tensors (tied ones once) and the tie map. */
  static distinctWeights(model: PreTrainedModel): { names: string[]; aliases: Map<string, string> } {
    const first = new Map<HostTensor, string>();
    const aliases = new Map<string, string>();
    const names: string[] = [];
    for (const [k, t] of model.weights) {
      const f = first.get(t);
      if (f) aliases.set(k, f);
      else {
        first.set(t, k);
        names.push(k);
      }
    }
    return { names, aliases };
  }

  static layout(model: PreTrainedModel): TensorLayout {
    const n = model.config.num_hidden_layers ?? model.config.n_layer;
    if (typeof n !== "number") throw new LayerSelectionError("config.json: num_hidden_layers is missing; LISA/HFT sample layers");
    return tensorLayout(SelectiveTrainer.distinctWeights(model).names, n);
  }

  static create(model: PreTrainedModel, policy: SelectionPolicy, opts: SelectiveTrainerOptions = {}): SelectiveTrainer {
    const { names, aliases } = SelectiveTrainer.distinctWeights(model);
    return new SelectiveTrainer(model, policy, aliases, names, opts);
  }

  get stepCount(): number {
    return this.steps;
  }

  get current(): Selection | null {
    return this.selection;
  }

  /** Builds the step for the selection of the next step if it differs from the current one. */
  async prepare(): Promise<Selection> {
    const sel = this.policy.select(this.steps);
    if (this.selection?.key !== sel.key || !this.step) await this.switchTo(sel);
    return sel;
  }

  private async switchTo(sel: Selection): Promise<void> {
    const t0 = performance.now();
    const trained = new Set(sel.tensors);
    const params: Record<string, TensorDecl> = {};
    const frozenDecl: Record<string, TensorDecl> = {};
    const init: Record<string, HostTensor> = {};
    const frozen: Record<string, HostTensor> = {};
    for (const k of this.distinct) {
      const t = this.model.weights.get(k) as HostTensor;
      if (trained.has(k)) {
        params[k] = { dtype: t.dtype, shape: t.shape };
        init[k] = t;
      } else {
        frozenDecl[k] = { dtype: t.dtype, shape: t.shape };
        frozen[k] = t;
      }
    }
    const old = this.step;
    const before = new Set(this.selection?.tensors ?? []);
    const kept = new Map<string, Record<string, HostTensor>>();
    if (old) for (const k of sel.tensors) if (before.has(k)) kept.set(k, old.parameterState(k));
    // The old session's buffers go before the new one is built: peak memory is one selection's.
    if (old) await old.release();
    this.step = null;
    const aliases = this.aliases;
    const model = this.model;
    const step = await TrainStep.create(
      {
        params,
        frozen: frozenDecl,
        batch: stepBatchDecls(model.head, model.usesTokenTypeIds),
        optimizer: this.opts.optimizer ?? { kind: "adamw" },
        clipNorm: this.opts.clipNorm,
        recompute: this.opts.gradientCheckpointing,
        // per-element AdamW step counts: a tensor switched on starts at step 0
        gatedUpdates: true,
        loss: ({ params: p, frozen: f, batch }) => {
          const names = new Set(model.weights.keys());
          const ctx = new WeightContext((n) => {
            const k = aliases.get(n) ?? n;
            return p[k] ?? f[k];
          }, names);
          const out = model.traceForward(ctx, stepModelInputs(batch));
          if (!out.logits) throw new ModelError(`a ${model.head} model has no logits to train on`);
          return crossEntropy(out.logits, batch.labels, { ignoreIndex: -100 });
        },
      },
      { params: init, frozen },
      { ...model.compileOptions, ...this.opts.compile },
    );
    for (const [k, s] of kept) step.setParameterState(k, s);
    step.setState({ step: this.steps, tensors: step.getState().tensors });
    this.step = step;
    this.selection = sel;
    const s = (performance.now() - t0) / 1000;
    this.switchStats.switches++;
    this.switchStats.seconds += s;
    this.switchStats.lastSeconds = s;
  }

  /** One optimizer step on the selection of this step; the model's weights are updated in place. */
  async train(batch: TrainBatch, opts: { lr: number; seed?: number }): Promise<StepResult> {
    await this.prepare();
    const step = this.step as TrainStep;
    const res = await step.step(prepareBatch(this.model.head, batch, this.model.usesTokenTypeIds), opts);
    this.steps++;
    this.writeBack();
    return res;
  }

  private writeBack(): void {
    const p = (this.step as TrainStep).getParams();
    for (const [k, t] of Object.entries(p)) {
      this.model.weights.set(k, t);
      this.changed.add(k);
    }
    for (const [alias, first] of this.aliases) if (p[first]) this.model.weights.set(alias, p[first]);
  }

  /** Trainable elements of the current selection. */
  trainedParameters(): number {
    return (this.selection?.tensors ?? []).reduce((a, k) => a + (this.model.weights.get(k) as HostTensor).data.length, 0);
  }

  /**
   * What a checkpoint needs: the step count, the current selection's key and the optimizer state
   * (flat AdamW slots over its tensors, with per-element step counts). With the changed tensors
   * (changedTensors) this resumes exactly: the selection itself is redrawn from (seed, step).
   */
  checkpointState(): { step: number; selection: string | null; optimizer: Record<string, HostTensor> } {
    return { step: this.steps, selection: this.selection?.key ?? null, optimizer: this.step?.getState().tensors ?? {} };
  }

  /** The tensors some step changed, by name (tied names once, under the first). */
  changedTensors(): Map<string, HostTensor> {
    return new Map([...this.changed].map((k) => [k, this.model.weights.get(k) as HostTensor]));
  }

  /**
   * Puts a checkpoint back: the changed tensors into the model, then the selection of the last
   * step before `step` (which must be the saved one) with its optimizer state.
   */
  async restore(
    step: number,
    selectionKey: string | null,
    optimizer: Record<string, HostTensor>,
    tensors: ReadonlyMap<string, HostTensor>,
  ): Promise<void> {
    for (const [k, t] of tensors) {
      if (!this.model.weights.has(k)) throw new LayerSelectionError(`checkpoint: the model has no weight "${k}"`);
      this.model.weights.set(k, t);
      this.changed.add(k);
      for (const [alias, first] of this.aliases) if (first === k) this.model.weights.set(alias, t);
    }
    this.steps = step;
    if (selectionKey === null) return;
    const sel = this.policy.select(step - 1);
    if (sel.key !== selectionKey)
      throw new LayerSelectionError(
        `checkpoint: selection "${selectionKey}" is not the one this run draws at step ${step} ("${sel.key}"); was the seed or an interval changed?`,
      );
    await this.switchTo(sel);
    const st = this.step as TrainStep;
    st.setState({
      step,
      tensors: optimizer,
      params: Object.fromEntries(sel.tensors.map((k) => [k, this.model.weights.get(k) as HostTensor])),
    });
  }

  async release(): Promise<void> {
    await this.step?.release();
    this.step = null;
  }
}
