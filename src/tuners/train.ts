/**
 * Training an adapter: one compiled step (forward with the adapter, loss, backward through the
 * frozen model, optimizer update) whose trainable inputs are only the adapter's tensors
 * (and modules_to_save copies). The frozen base weights are fed zero-copy and get no gradients.
 */
import type { CompileOptions } from "../engine/exec/backend.js";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";
import type { OptimizerConfig } from "../engine/optim/optimizers.js";
import { type StepResult, type TensorDecl, TrainStep } from "../engine/optim/train-step.js";
import { crossEntropy } from "../engine/trace/composites.js";
import type { Tensor } from "../engine/trace/tensor.js";
import type { TaskHead } from "../models/architecture.js";
import { type IdsLike, onesLike, toIdTensor } from "../models/inputs.js";
import { type ForwardContext, ModelError, WeightContext } from "../nn/context.js";
import { dropLeading } from "../nn/prompt.js";
import { PeftConfigError } from "./config.js";
import type { Controller, ControllerAction, ControllerPasses, ControllerState, ControllerStep } from "./controller.js";
import { ModulesToSaveContext, modulesToSaveKeys } from "./modules-to-save.js";
import { meanTaskLoss } from "./passes.js";
import type { AnyConfig, PeftModel } from "./peft-model.js";
import { TASK_IDS_INPUT, TaskIdError, taskIdTensor } from "./task-ids.js";
import type { Tuner, WrapOptions } from "./tuner.js";

export interface PeftTrainerOptions {
  /** The adapter to train (default: the only active one). */
  adapterName?: string;
  optimizer?: OptimizerConfig;
  clipNorm?: number;
  compile?: CompileOptions;
  /** Recompute each transformer layer's activations in the backward pass (less memory, ~1/3 more compute). */
  gradientCheckpointing?: boolean;
  /** Planned optimizer steps, for a method's controller (AdaLoRA's schedule); null when unknown. */
  totalSteps?: number | null;
  /**
   * Adapter tensors this run keeps fixed although the method trains them (POLY's MHR-z regime
   * trains only the routers): they enter the step as frozen inputs, as Tuner.trainable's do.
   */
  freeze?: (key: string) => boolean;
  /**
   * A learning-rate multiple per trained adapter tensor (1: the step's lr), as a torch parameter
   * group's own lr: mttl trains POLY's routing logits at module_logits_learning_rate. Uses the
   * step's update gates (TrainStep gatedUpdates), which the checkpoints keep.
   */
  lrScale?: (key: string) => number;
}

export interface TrainBatch {
  inputIds: IdsLike;
  attentionMask?: IdsLike;
  /**
   * [B, T] token type ids (text pairs on BERT). Used only by models with token types
   * (PreTrainedModel.usesTokenTypeIds), which get all 0 when absent; ignored by the others.
   */
  tokenTypeIds?: IdsLike;
  /**
   * Causal LM: [B, T] token ids, -100 where no loss is taken; the shift by one happens here.
   * Sequence classification: [B] class ids ([[c0], [c1], ...] or a [B, 1] tensor).
   * Token classification: [B, T] class ids, -100 to ignore.
   */
  labels: IdsLike;
  /**
   * [B] task ids, one per example: rows of the routing table of a method that routes by task
   * (Tuner.taskCount, POLY). Required by such methods, ignored by the others.
   */
  taskIds?: readonly number[];
}

const IGNORE = -100;

/** labels[:, 1:] padded with -100, so logits at position t are scored against token t+1. */
export function shiftLabels(labels: HostTensor): HostTensor {
  const [b, t] = labels.shape;
  const src = labels.data as BigInt64Array;
  const out = new BigInt64Array(b * t).fill(BigInt(IGNORE));
  for (let i = 0; i < b; i++) for (let j = 0; j + 1 < t; j++) out[i * t + j] = src[i * t + j + 1];
  return hostTensor("i64", [b, t], out);
}

/** The batch inputs of a training step's graph; token_type_ids only for models that use them. */
export function stepBatchDecls(head: TaskHead, tokenTypes: boolean, taskIds = false): Record<string, TensorDecl> {
  const d: Record<string, TensorDecl> = {
    input_ids: { dtype: "i64", shape: ["batch", "seq"] },
    attention_mask: { dtype: "i64", shape: ["batch", "seq"] },
  };
  if (tokenTypes) d.token_type_ids = { dtype: "i64", shape: ["batch", "seq"] };
  d.labels = { dtype: "i64", shape: head === "sequence_classification" ? ["batch"] : ["batch", "seq"] };
  if (taskIds) d[TASK_IDS_INPUT] = { dtype: "i32", shape: ["batch"] };
  return d;
}

/** The model inputs of a step's batch tensors, for traceForward. */
export function stepModelInputs(batch: Record<string, Tensor>): Record<string, Tensor> {
  const t: Record<string, Tensor> = { input_ids: batch.input_ids, attention_mask: batch.attention_mask };
  if (batch.token_type_ids) t.token_type_ids = batch.token_type_ids;
  return t;
}

/**
 * The step's batch tensors from a user batch: ids, mask (ones by default) and labels, shifted
 * for causal LMs. (Soft-prompt positions are skipped inside the loss, not in the labels.) With
 * `tokenTypes`, token_type_ids too (all 0 when the batch has none).
 */
export function prepareBatch(head: TaskHead, batch: TrainBatch, tokenTypes = false): Record<string, HostTensor> {
  const ids = toIdTensor(batch.inputIds, "inputIds");
  const mask = batch.attentionMask !== undefined ? toIdTensor(batch.attentionMask, "attentionMask") : onesLike(ids);
  let labels: HostTensor;
  if (head === "sequence_classification") {
    const l = Array.isArray(batch.labels)
      ? (batch.labels as readonly (readonly number[] | number)[]).map((r) => (Array.isArray(r) ? r[0] : (r as number)))
      : null;
    labels = l
      ? hostTensor(
          "i64",
          [l.length],
          BigInt64Array.from(l, (x) => BigInt(x)),
        )
      : toIdTensor(batch.labels, "labels");
    if (labels.shape.length === 2) labels = hostTensor("i64", [labels.shape[0]], labels.data);
  } else {
    labels = toIdTensor(batch.labels, "labels");
    if (labels.shape[0] !== ids.shape[0] || labels.shape[1] !== ids.shape[1]) {
      throw new ModelError(`labels [${labels.shape}] must have the shape of inputIds [${ids.shape}]`);
    }
    if (head === "causal_lm") labels = shiftLabels(labels);
  }
  const out: Record<string, HostTensor> = { input_ids: ids, attention_mask: mask, labels };
  if (tokenTypes) {
    const types = batch.tokenTypeIds !== undefined ? toIdTensor(batch.tokenTypeIds, "tokenTypeIds") : zerosLike(ids);
    if (types.shape[0] !== ids.shape[0] || types.shape[1] !== ids.shape[1])
      throw new ModelError(`tokenTypeIds [${types.shape}] must have the shape of inputIds [${ids.shape}]`);
    out.token_type_ids = types;
  }
  return out;
}

function zerosLike(ids: HostTensor): HostTensor {
  return hostTensor("i64", [...ids.shape], new BigInt64Array(ids.data.length));
}

/** Frozen-input names of an adapter's fixed tensors, apart from the base weights' names. */
const FROZEN_ADAPTER = "adapter:";
/** StepResult.metrics keys when the method adds a loss (Tuner.loss): the two terms apart. */
export const TASK_LOSS = "task_loss";
export const METHOD_LOSS = "method_loss";

function isTrainableKey(tuner: Tuner, config: AnyConfig, key: string, freeze?: (key: string) => boolean): boolean {
  return (tuner.trainable?.(key, config) ?? true) && !freeze?.(key);
}

/** StepResult.loss is the task loss; a method's loss stays in metrics.method_loss. */
function splitLoss(res: StepResult): StepResult {
  const task = res.metrics[TASK_LOSS];
  if (task === undefined) return res;
  const { [TASK_LOSS]: _, ...metrics } = res.metrics;
  return { ...res, loss: task, metrics };
}

export class PeftTrainer {
  /** The batches of the controller's forward passes, by index (usePassBatches). */
  private passBatch: ((index: number) => TrainBatch) | null = null;

  private constructor(
    private readonly peft: PeftModel,
    readonly adapterName: string,
    readonly step: TrainStep,
    private readonly head: TaskHead,
    private readonly tokenTypes: boolean,
    /** The method's between-step controller (AdaLoRA's rank allocator), or null. */
    readonly controller: Controller<AnyConfig> | null,
    private readonly totalSteps: number | null,
    /** The routing-table size when the method routes by task (Tuner.taskCount), else null. */
    private readonly taskCount: number | null,
    private readonly freeze: ((key: string) => boolean) | undefined,
  ) {}

  static async create(peft: PeftModel, opts: PeftTrainerOptions = {}): Promise<PeftTrainer> {
    const name = opts.adapterName ?? (peft.activeAdapters.length === 1 ? peft.activeAdapters[0] : undefined);
    if (!name) throw new PeftConfigError(`choose the adapter to train (active: ${peft.activeAdapters.join(", ") || "none"})`);
    const a = peft.adapter(name);
    if (!peft.isTrainable(name))
      throw new PeftConfigError(`adapter "${name}" was loaded for inference; load it with isTrainable: true to train it`);
    if (peft.mergedAdapters.length) throw new PeftConfigError("unmerge adapters before training");
    const model = peft.base;
    const head = model.head;
    const params: Record<string, TensorDecl> = {};
    const init: Record<string, HostTensor> = {};
    const frozen: Record<string, HostTensor> = Object.fromEntries(model.weights);
    for (const [k, t] of a.tensors) {
      // Tensors the method keeps fixed (VeRA's projections, ...) are frozen inputs of the step.
      if (isTrainableKey(a.tuner, a.config, k, opts.freeze)) {
        params[k] = { dtype: t.dtype, shape: t.shape };
        init[k] = t;
      } else frozen[FROZEN_ADAPTER + k] = t;
    }
    const frozenDecl: Record<string, TensorDecl> = Object.fromEntries(
      Object.entries(frozen).map(([k, t]) => [k, { dtype: t.dtype, shape: t.shape }]),
    );
    const tokenTypes = model.usesTokenTypeIds;
    const mts = modulesToSaveKeys(peft.info, a.config.modulesToSave ?? null);
    const prefix = a.tuner.virtualTokens?.(a.config) ?? 0;
    const totalSteps = opts.totalSteps ?? null;
    const taskCount = a.tuner.taskCount?.(a.config) ?? null;
    const optimizer = opts.optimizer ?? { kind: "adamw" as const };
    const controller = a.tuner.controller?.(peft.info, a.config, { totalSteps, optimizer }) ?? null;
    for (const k of controller?.gradientKeys ?? [])
      if (!params[k]) throw new PeftConfigError(`${a.tuner.peftType}: the controller reads the gradient of "${k}", which is not trained`);
    const step = await TrainStep.create(
      {
        params,
        frozen: frozenDecl,
        batch: stepBatchDecls(head, tokenTypes, taskCount !== null),
        optimizer,
        clipNorm: opts.clipNorm,
        recompute: opts.gradientCheckpointing,
        gradientOutputs: controller?.gradientKeys,
        gatedUpdates: controller?.gatedUpdates || Boolean(opts.lrScale),
        loss: ({ params: p, frozen: f, batch, seed, probe }) => {
          const base = new WeightContext((n) => f[n], new Set(Object.keys(f)));
          let ctx: ForwardContext = base;
          const tensor = (k: string): Tensor => {
            const t = p[k] ?? f[FROZEN_ADAPTER + k];
            if (!t) throw new PeftConfigError(`adapter "${name}" has no tensor "${k}"`);
            return t;
          };
          if (mts.size) ctx = new ModulesToSaveContext(ctx, mts, tensor);
          const wrapOpts: WrapOptions = {
            adapterName: name,
            tensor,
            rowMask: null,
            taskIds: batch[TASK_IDS_INPUT] ?? null,
            training: true,
            seed,
            probe,
            baseWeight: (n) => base.weight(n),
          };
          ctx = a.tuner.wrap(ctx, peft.info, a.config, wrapOpts);
          const out = model.traceForward(ctx, stepModelInputs(batch));
          if (!out.logits) throw new ModelError(`a ${head} model has no logits to train on`);
          // Soft tokens (prompt tuning) add logits in front, which PEFT labels −100: the loss skips
          // them instead (same value), by a gather since the sequence length is symbolic.
          const logits =
            prefix && head !== "sequence_classification" ? dropLeading(out.logits, prefix, 1, batch.input_ids.shape[1]) : out.logits;
          const task = crossEntropy(logits, batch.labels, { ignoreIndex: IGNORE });
          const reg = a.tuner.loss?.(peft.info, a.config, wrapOpts) ?? null;
          const surgery = a.tuner.gradientSurgery?.(peft.info, a.config, wrapOpts) ?? null;
          if (!reg && !surgery) return task;
          let loss = task;
          const metrics: Record<string, Tensor> = {};
          if (reg) {
            if (reg.rank !== 0) throw new PeftConfigError(`${a.tuner.peftType}: the method loss must be a scalar`);
            const methodLoss = reg.cast(task.dtype);
            loss = task.add(methodLoss);
            Object.assign(metrics, { [TASK_LOSS]: task, [METHOD_LOSS]: methodLoss });
          }
          if (!surgery) return { loss, metrics };
          // The teacher: the same inputs through the frozen base weights (no gradient reaches it).
          const teacher = surgery.reference ? model.traceForward(base, stepModelInputs(batch)).logits : null;
          const reference =
            teacher && prefix && head !== "sequence_classification" ? dropLeading(teacher, prefix, 1, batch.input_ids.shape[1]) : teacher;
          const terms = surgery.terms({ logits, reference: reference ?? null, labels: batch.labels });
          for (const [k, t] of Object.entries(terms)) metrics[k] = t;
          return { loss, metrics, surgery: { terms, combine: surgery.combine } };
        },
      },
      { params: init, frozen },
      { ...model.compileOptions, ...opts.compile },
    );
    const trainer = new PeftTrainer(peft, name, step, head, tokenTypes, controller, totalSteps, taskCount, opts.freeze);
    for (const k of Object.keys(params)) {
      const m = opts.lrScale?.(k) ?? 1;
      if (!(m > 0 && Number.isFinite(m))) throw new PeftConfigError(`the learning-rate multiple of "${k}" must be above 0, got ${m}`);
      if (m !== 1) step.setUpdateGate(k, m);
    }
    if (controller?.begin) trainer.act(controller.begin(a.tensors));
    return trainer;
  }

  /** Converts a user batch into the step's tensors (shifting causal-LM labels). */
  prepare(batch: TrainBatch): Record<string, HostTensor> {
    // Labels keep the input's length: the loss drops the soft tokens' logits (see create).
    const out = prepareBatch(this.head, batch, this.tokenTypes);
    if (this.taskCount !== null) {
      const rows = out.input_ids.shape[0];
      // A routing table of one row needs no id: every example is that task.
      const ids = batch.taskIds ?? (this.taskCount === 1 ? new Array<number>(rows).fill(0) : undefined);
      const who = `adapter "${this.adapterName}" (${this.peft.adapter(this.adapterName).tuner.peftType})`;
      if (!ids)
        throw new TaskIdError(
          `${who} routes by task: every training batch needs task ids (a "task" field in the data); its routing table has ${this.taskCount} task${this.taskCount === 1 ? "" : "s"}`,
        );
      if (ids.length !== rows) throw new TaskIdError(`${ids.length} task ids given for a batch of ${rows} examples`);
      out[TASK_IDS_INPUT] = taskIdTensor(ids, this.taskCount, who);
    }
    return out;
  }

  /** One optimizer step; the adapter's tensors in the PeftModel are updated in place. */
  async train(batch: TrainBatch, opts: { lr: number; seed?: number }): Promise<StepResult> {
    const res = await this.step.step(this.prepare(batch), opts);
    this.peft.setAdapterTensors(this.adapterName, new Map(Object.entries(this.step.getParams())));
    await this.control();
    return splitLoss(res);
  }

  /** Gradient accumulation: adds one micro-batch's gradients (no update yet). */
  async accumulate(batch: TrainBatch, opts: { seed?: number } = {}): Promise<StepResult> {
    return splitLoss(await this.step.accumulate(this.prepare(batch), opts));
  }

  /**
   * Puts a checkpoint back: the adapter's tensors (trained and fixed ones), the optimizer state at
   * `step` and the controller's state (with the config changes it had made).
   */
  restore(
    step: number,
    optimizer: Record<string, HostTensor>,
    tensors: ReadonlyMap<string, HostTensor>,
    controller?: ControllerState | null,
  ): void {
    if (this.controller && controller) this.act(this.controller.restore(controller));
    const a = this.peft.adapter(this.adapterName);
    const params: Record<string, HostTensor> = {};
    const fixed: Record<string, HostTensor> = {};
    for (const [k, t] of tensors) {
      if (isTrainableKey(a.tuner, a.config, k, this.freeze)) params[k] = t;
      else fixed[FROZEN_ADAPTER + k] = t;
    }
    this.step.setFrozen(fixed);
    this.step.setState({ step, tensors: optimizer, params });
    this.peft.setAdapterTensors(this.adapterName, new Map(tensors));
  }

  /** Gradient accumulation: one update with the mean accumulated gradient. */
  async apply(opts: { lr: number }): Promise<StepResult> {
    const res = splitLoss(await this.step.apply(opts));
    this.peft.setAdapterTensors(this.adapterName, new Map(Object.entries(this.step.getParams())));
    await this.control();
    return res;
  }

  /**
   * Parameters the run has trained. With update gates, the elements some update has reached, so a
   * method that grows what trains (IncreLoRA's slots) reports what it used, not its compiled
   * capacity; otherwise every trainable tensor of the adapter.
   */
  trainedParameters(): number {
    const updated = this.step.updatedElements();
    if (updated !== null && updated !== undefined) return updated;
    if (!this.freeze) return this.peft.parameterCounts().trainable;
    return Object.values(this.step.getParams()).reduce((n, t) => n + t.data.length, 0);
  }

  /** The controller's numbers after the last update (total rank, budget, ...); {} without one. */
  controllerMetrics(): Record<string, number> {
    return this.controller?.metrics() ?? {};
  }

  /**
   * Gives the controller's forward passes (Controller.passBatchSize) their batches: `batch(i)` is
   * pass batch i, the same batch for the same i (src/train/run.ts: a separate seeded shuffle of the
   * training data, cycled).
   */
  usePassBatches(batch: (index: number) => TrainBatch): void {
    this.passBatch = batch;
  }

  /**
   * The forward passes a controller's runPasses gets: the PeftModel's inference graph (no
   * dropout) on the pass batches (usePassBatches).
   */
  controllerPasses(): ControllerPasses {
    return {
      loss: async (index, tensors) => {
        if (!this.passBatch)
          throw new PeftConfigError(
            `${this.peft.adapter(this.adapterName).tuner.peftType}: the method runs forward passes on training data between steps; give them batches with PeftTrainer.usePassBatches (peftkit train does)`,
          );
        const p = this.prepare(this.passBatch(index));
        const a = this.peft.adapter(this.adapterName);
        const kept = new Map([...(tensors?.keys() ?? [])].map((k) => [k, a.tensors.get(k) as HostTensor]));
        if (tensors?.size) this.peft.setAdapterTensors(this.adapterName, new Map(tensors));
        try {
          const types = p.token_type_ids ? { tokenTypeIds: p.token_type_ids } : {};
          const tasks = this.passBatch(index).taskIds;
          const out = await this.peft.forward({
            inputIds: p.input_ids,
            attentionMask: p.attention_mask,
            ...types,
            ...(tasks ? { taskIds: tasks } : {}),
          });
          if (!out.logits) throw new ModelError(`a ${this.head} model has no logits to take a loss on`);
          return meanTaskLoss(out.logits, p.labels);
        } finally {
          if (kept.size) this.peft.setAdapterTensors(this.adapterName, kept);
        }
      },
    };
  }

  /** Runs the controller after an update and applies what it changes. */
  private async control(): Promise<void> {
    const ctl = this.controller;
    if (!ctl) return;
    const a = this.peft.adapter(this.adapterName);
    const s: ControllerStep = {
      step: this.step.stepCount,
      totalSteps: this.totalSteps,
      tensors: a.tensors,
      gradients: new Map(Object.entries(this.step.getGradients())),
      statistics: new Map(Object.entries(this.step.getStatistics())),
      optimizerState: (key) => this.step.parameterState(key),
    };
    if (ctl.runPasses) await ctl.runPasses(s, this.controllerPasses());
    this.act(ctl.afterStep(s));
  }

  private act(action: ControllerAction<AnyConfig> | null): void {
    if (!action) return;
    if (action.config) this.peft.setAdapterConfig(this.adapterName, action.config);
    for (const [k, on] of action.trainable ?? []) this.step.setUpdateGate(k, on);
    if (action.tensors?.size) {
      const a = this.peft.adapter(this.adapterName);
      const params: Record<string, HostTensor> = {};
      const fixed: Record<string, HostTensor> = {};
      for (const [k, t] of action.tensors) {
        if (isTrainableKey(a.tuner, a.config, k, this.freeze)) params[k] = t;
        else fixed[FROZEN_ADAPTER + k] = t;
      }
      this.step.setParams(params);
      this.step.setFrozen(fixed);
      this.peft.setAdapterTensors(this.adapterName, new Map(action.tensors));
    }
    for (const [k, slots] of action.optimizerState ?? []) this.step.setParameterState(k, slots);
  }

  release(): Promise<void> {
    return this.step.release();
  }
}
