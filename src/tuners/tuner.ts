/**
 * The contract of a PEFT method. A method is a folder (tuners/<method>/) exporting one Tuner;
 * the registry lists them. PeftModel does everything method-independent: adapters by name,
 * activation, merging bookkeeping, saving and loading, training, mixed batches.
 */
import type { HostTensor } from "../engine/ir/host.js";
import type { GradientSurgery } from "../engine/optim/train-step.js";
import type { Tensor } from "../engine/trace/tensor.js";
import type { RawTensor } from "../io/safetensors.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import type { ForwardContext } from "../nn/context.js";
import type { Matrix } from "../util/linalg.js";
import type { Rng } from "../util/rng.js";
import type { CommonConfig, RawPeftConfig } from "./config.js";
import type { Controller, ControllerRun } from "./controller.js";

/** What a tuner may know about the model it attaches to. */
export interface ModelInfo {
  readonly model: PreTrainedModel;
  readonly modelType: string;
  /** Linear layers as canonical paths (e.g. "model.layers.0.self_attn.q_proj"). */
  readonly linearLayers: readonly string[];
  /** Linear layers eligible for "all-linear" (everything but output heads). */
  readonly allLinear: readonly string[];
  /** Weights are stored [in, out] (GPT-2 Conv1D). */
  readonly fanInFanOut: boolean;
  /** The module path PEFT uses for a canonical path (task models: the same; bare backbones: no prefix). */
  peftName(canonical: string): string;
  canonicalName(peftName: string): string;
  /** Current base weight by canonical name. */
  weight(name: string): HostTensor;
  hasWeight(name: string): boolean;
  /** Every base weight name. */
  weightNames(): string[];
  /** Number of transformer layers and hidden size, for prompt methods. */
  readonly numLayers: number;
  readonly hidden: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
}

export interface WrapOptions {
  readonly adapterName: string;
  /** The graph tensor of one of this adapter's tensors (by its key). */
  tensor(key: string): Tensor;
  /** [B] f32 with 1 for the rows that use this adapter (mixed batches); null when all rows do. */
  readonly rowMask: Tensor | null;
  /**
   * [B] i32: each example's task id, a row of the method's routing table (POLY); present exactly
   * when the tuner declares `taskCount`. The callers have checked every id is in [0, taskCount).
   * One id per example of the batch, whatever the inputs are (tokens or pixels).
   */
  readonly taskIds?: Tensor | null;
  /** True inside a training step (dropout on). */
  readonly training: boolean;
  /** i64 scalar seed for random ops in training; null otherwise. */
  readonly seed: Tensor | null;
  /**
   * A base weight (canonical name, stored layout) as a tensor of the graph being built: the step's
   * frozen input, for a method loss that involves the pretrained weights (PEGO's ‖W·ΔWᵀ‖₁).
   * Present in training steps and the conformance suite; absent where only the forward is traced.
   */
  readonly baseWeight?: (name: string) => Tensor;
  /**
   * Training steps only: asks the step for a statistic `reduce(value, ∂loss/∂value)` of an
   * intermediate value (IncreLoRA's Σ|ΔW ⊙ ∂L/∂ΔW|), which the method's controller reads as
   * `ControllerStep.statistics.get(name)`. Absent outside training.
   */
  readonly probe?: (
    name: string,
    value: Tensor,
    reduce: (value: Tensor, grad: Tensor) => Tensor,
    opts?: import("../engine/optim/train-step.js").ProbeOptions,
  ) => void;
  /**
   * Inference only (absent when gradients flow to the adapter): a tensor computed on the host
   * from this adapter's tensors `sources` and fed as a graph input, e.g. a weight transposed and
   * pre-scaled so the graph runs fewer ops per token. It is recomputed when a source is replaced.
   * `key` must name everything `compute` depends on besides the sources' values. `compute`
   * returns null when it cannot handle the sources (then so does `prepared`, and no input is made).
   */
  readonly prepared?: (key: string, sources: readonly string[], compute: (...sources: HostTensor[]) => HostTensor | null) => Tensor | null;
  /**
   * A base weight as it was before any adapter was merged into it, or null when no merge changed
   * it (then it is `weight(name)`). DoRA normalises against this weight, so merging other adapters
   * of a stack does not change what a DoRA adapter computes.
   */
  readonly unmergedWeight?: (name: string) => Tensor | null;
}

/**
 * What a data-aware initialisation (CorDA, LoRA-SB; SPT and Light-PEFT later) needs from a
 * calibration pass over a few batches of data (src/calibration/). Only the statistics asked for
 * are collected.
 */
export interface CalibrationRequest {
  /** Linear layers to collect statistics for, as canonical paths. */
  readonly layers: readonly string[];
  /** Σ xᵀx over every non-padding input row x of the layer: [in, in]. */
  readonly inputCovariance?: boolean;
  /** Σ over batches of ∂L/∂W (L = the batch's mean task loss): W's stored shape. */
  readonly gradientSum?: boolean;
  /** Σ over batches of (∂L/∂W)², elementwise: W's stored shape. */
  readonly gradientSquareSum?: boolean;
  /**
   * "exampleMax": before entering inputCovariance, each example's inputs to a layer are divided
   * by |max| of that example's (non-padding) inputs to it, as CorDA's hook does in PEFT and in
   * the authors' code (one sequence per forward there). Default: no scaling.
   */
  readonly inputScaling?: "exampleMax";
}

/** The statistics a calibration pass collected, in float64 on the host. */
export interface CalibrationStats {
  /** Examples streamed through the model. */
  readonly samples: number;
  /** Batches (gradient sums add one term per batch). */
  readonly batches: number;
  /** Non-padding tokens (rows that entered the covariances). */
  readonly tokens: number;
  /** By layer path: Σ xᵀx, [in, in] row-major. */
  readonly inputCovariance: ReadonlyMap<string, Matrix>;
  /** By weight name (`<path>.weight`): Σ ∂L/∂W in W's stored layout. */
  readonly gradientSum: ReadonlyMap<string, Matrix>;
  /** By weight name: Σ (∂L/∂W)² in W's stored layout. */
  readonly gradientSquareSum: ReadonlyMap<string, Matrix>;
}

/** What a method's surgery terms see of a training step (Tuner.gradientSurgery). */
export interface SurgeryOutputs {
  /** The logits the task loss scores (with the adapter). */
  readonly logits: Tensor;
  /** With `reference`: the same inputs' logits without this adapter (frozen base weights); else null. */
  readonly reference: Tensor | null;
  /** The step's labels: causal LMs shifted, −100 where no loss is taken; [B] class ids for classifiers. */
  readonly labels: Tensor;
}

export interface TunerSurgery {
  /** The step also runs the model without this adapter (a frozen teacher) for terms(). */
  readonly reference: boolean;
  /** f32 scalar loss terms by name; each gets its own backward pass (GradientSurgery.terms). */
  terms(out: SurgeryOutputs): Record<string, Tensor>;
  /** The gradients the optimizer applies, by adapter key, from the loss's and the terms' (GradientSurgery.combine). */
  combine: GradientSurgery["combine"];
}

/** Inputs to create() beyond the config and the random stream. */
export interface CreateData {
  /** Present when calibration() asked for statistics (PeftModel refuses to create without them). */
  readonly calibration?: CalibrationStats;
}

export interface CreatedAdapter<C = never> {
  /** Adapter tensors by key: PEFT's state-dict key without "base_model.model." and adapter name. */
  tensors: Map<string, HostTensor>;
  /** Base weights the method replaces at creation (PiSSA/OLoRA residuals), by canonical name. */
  baseEdits?: Map<string, HostTensor>;
  /**
   * The config as creation resolved it, when that depends on the model or data and must be saved
   * for the folder to reload (SpIEL's per-module counts num_deltas, SPT's chosen matrices);
   * absent: the config as given.
   */
  config?: C;
}

export interface Tuner<C extends CommonConfig = CommonConfig> {
  /** PEFT's peft_type ("LORA", "IA3", ...). */
  readonly peftType: string;
  /** Parses a normalised (snake_case) config; errors name the field. */
  parseConfig(raw: RawPeftConfig, where: string): C;
  /** Every field PEFT writes for this method, snake_case. */
  toJson(c: C): Record<string, unknown>;
  /** Fresh adapter tensors for this model. */
  create(info: ModelInfo, c: C, rng: Rng, data?: CreateData): CreatedAdapter<C>;
  /**
   * The statistics create() needs from a calibration pass (CorDA's input covariances, LoRA-SB's
   * gradient sums), or null; absent for methods that need no data.
   */
  calibration?(info: ModelInfo, c: C): CalibrationRequest | null;
  /**
   * False for adapter tensors that are saved and loaded with the adapter but never trained
   * (VeRA's shared projections, LoRA-SB's frozen factors, the singular vectors SVFit scales).
   * They enter the training step as frozen inputs: no gradient, no optimizer state, not counted
   * as trainable. Absent: every tensor is trained.
   */
  trainable?(key: string, c: C): boolean;
  /**
   * A regulariser the training step adds to the task loss (KaSA's; PEGO and GGPO later): a f32
   * scalar built from the adapter's tensors (`opts.tensor`), or null. The trainer minimises
   * task loss + this and logs this as `method_loss` in metrics.jsonl. Absent: no term.
   */
  loss?(info: ModelInfo, c: C, opts: WrapOptions): Tensor | null;
  /**
   * Gradient surgery (R-AMT's gradient dropout; methods that combine several losses' gradients
   * element by element before the optimizer): further loss terms, built from the step's logits
   * (and, with `reference`, the logits of the model without this adapter, traced in the same
   * step with no gradient), each differentiated by its own backward pass, and the combination
   * the optimizer applies instead of ∂(task loss + method loss). `opts.seed` is the step's seed,
   * for stochastic combinations. Absent or null: the plain gradient.
   */
  gradientSurgery?(info: ModelInfo, c: C, opts: WrapOptions): TunerSurgery | null;
  /**
   * What runs between optimizer steps while this adapter trains (AdaLoRA's rank allocator,
   * IncreLoRA's growth; see controller.ts), or null. Absent: nothing.
   */
  controller?(info: ModelInfo, c: C, run: ControllerRun): Controller<C> | null;
  /** The keys and shapes a saved adapter of this config must hold. */
  expectedTensors(info: ModelInfo, c: C): Map<string, number[]>;
  /** The forward pass with the adapter: a context wrapping `base`. */
  wrap(base: ForwardContext, info: ModelInfo, c: C, opts: WrapOptions): ForwardContext;
  /**
   * Base weights with the adapter folded in, for each weight it changes; absent when the method
   * cannot merge. `info.weight` gives the current weights (earlier adapters of the stack already
   * merged); `unmerged` the weights before any merge (see WrapOptions.unmergedWeight), by default
   * the current ones.
   */
  merge?(info: ModelInfo, c: C, tensors: ReadonlyMap<string, HostTensor>, unmerged?: (name: string) => HostTensor): Map<string, HostTensor>;
  /**
   * Looks at a saved folder before its tensors are matched against expectedTensors: `raw` is its
   * normalised config, `shapes` its tensors by key (without "base_model.model."). Throws a
   * PeftConfigError (one line) for a folder written in an older PEFT format this method refuses
   * (OFT before PEFT 0.16/0.18); returns keys to skip (buffers older PEFT releases saved, e.g.
   * BOFT's boft_P). `info` is the model the folder is read for (LOWBIT checks its packed codes'
   * lengths against the layers, one line per bad tensor). Absent: nothing is checked or skipped.
   */
  checkFolder?(
    raw: RawPeftConfig,
    shapes: ReadonlyMap<string, readonly number[]>,
    where: string,
    info?: ModelInfo,
  ): { ignore?: readonly string[] } | undefined;
  /**
   * Methods that route by task (POLY): the size of the routing table. The forward then gets a task
   * id per example (WrapOptions.taskIds), and PeftModel / PeftTrainer refuse batches without ids or
   * with an id outside [0, taskCount). Absent: the method ignores task ids.
   */
  taskCount?(c: C): number;
  /** Whether mixed-adapter batches are supported (prompt methods cannot). */
  readonly supportsMixedBatch: boolean;
  /** Prompt-learning methods save keys without the "base_model.model." prefix. */
  readonly promptLearning?: boolean;
  /** Soft tokens the method prepends to the sequence (prompt tuning), which shift the labels. */
  virtualTokens?(c: C): number;
  /**
   * The tensors written by savePretrained when they differ from the trained ones (prefix tuning
   * with prefix_projection saves the projected prefix, as PEFT does); absent: the tensors as they are.
   * A `RawTensor` is written with its own file dtype and bytes (R-AMT's bit-packed masks as U8,
   * which read back as i32 byte values).
   */
  tensorsToSave?(info: ModelInfo, c: C, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor | RawTensor>;
  /**
   * The adapter's tensors from the ones a folder holds (checked against expectedTensors), when a
   * saved adapter omits tensors it can rebuild from its config (VeRA without save_projection
   * regenerates its projections from projection_prng_key); absent: the tensors as read.
   */
  tensorsFromSaved?(info: ModelInfo, c: C, saved: ReadonlyMap<string, HostTensor>): Map<string, HostTensor>;
}

/** Passes every call through; tuners extend it and override what they change. */
export class DelegatingContext implements ForwardContext {
  constructor(protected readonly inner: ForwardContext) {}
  weight(name: string): Tensor {
    return this.inner.weight(name);
  }
  hasWeight(name: string): boolean {
    return this.inner.hasWeight(name);
  }
  linear(path: string, x: Tensor, opts?: import("../nn/context.js").LinearOptions): Tensor {
    return this.inner.linear(path, x, opts);
  }
  /** No fusion unless a tuner opts in: a tuner that overrides linear() must see every layer. */
  fusedLinear(_paths: readonly string[], _x: Tensor): Tensor | null {
    return null;
  }
  embedding(path: string, ids: Tensor): Tensor {
    return this.inner.embedding(path, ids);
  }
  hook(point: import("../nn/context.js").HookPoint, x: Tensor): Tensor {
    return this.inner.hook(point, x);
  }
  attentionPrefix(layer: number, batch: Tensor): { key: Tensor; value: Tensor } | null {
    return this.inner.attentionPrefix(layer, batch);
  }
  softPrompt(batch: Tensor): Tensor | null {
    return this.inner.softPrompt(batch);
  }
}

/**
 * The change `d` a trained bias makes to a layer output of rank `rank`, scaled per row by a [B]
 * mask. `d` is [out], or [B, 1, out] when it was taken against a bias that an inner adapter of a
 * mixed batch already mixed per row (weight() shapes those for [B, T, out] activations): for a
 * [B, out] output (a pooler, a classification head) its sequence axis goes, or it would
 * broadcast to [B, B, out].
 */
export function maskedBiasShift(d: Tensor, rowMask: Tensor | null, rank: number): Tensor {
  let s = d;
  while (s.rank > rank) s = s.squeeze(1);
  return maskRowsOf(s, rowMask, rank);
}

/** `x` times a [B] mask shaped [B, 1, …, 1] of rank `rank` (cast to x's dtype); x when there is no mask. */
function maskRowsOf(x: Tensor, rowMask: Tensor | null, rank: number): Tensor {
  if (!rowMask) return x;
  let m = rowMask.cast(x.dtype);
  for (let i = 1; i < rank; i++) m = m.unsqueeze(-1);
  return x.mul(m);
}

/**
 * The forward of a method that adds a change to chosen linear layers' outputs, y = W·x + Δ(x):
 * `delta(layer, x, inner)` computes the change (`inner` gives the weights beneath), which is
 * masked to the adapter's rows of a mixed batch.
 */
export class LinearDeltaContext<L extends { readonly path: string }> extends DelegatingContext {
  private readonly layers: Map<string, L>;
  constructor(
    inner: ForwardContext,
    layers: readonly L[],
    private readonly rowMask: Tensor | null,
    private readonly delta: (layer: L, x: Tensor, inner: ForwardContext) => Tensor,
  ) {
    super(inner);
    this.layers = new Map(layers.map((l) => [l.path, l]));
  }

  override linear(path: string, x: Tensor, opts?: import("../nn/context.js").LinearOptions): Tensor {
    const y = this.inner.linear(path, x, opts);
    const l = this.layers.get(path);
    return l ? y.add(maskRows(this.delta(l, x, this.inner), this.rowMask)) : y;
  }
}

/** x scaled per row by a [B] mask (broadcast over the remaining dims), or x when there is no mask. */
export function maskRows(x: Tensor, rowMask: Tensor | null): Tensor {
  if (!rowMask) return x;
  let m = rowMask;
  for (let i = 1; i < x.rank; i++) m = m.unsqueeze(-1);
  return x.mul(m.cast(x.dtype));
}
