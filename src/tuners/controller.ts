/**
 * Controllers: what a method runs between optimizer steps (AdaLoRA's rank allocator, IncreLoRA's
 * growth, SNELLA's re-allocation, LoCA's phases). A tuner that needs one returns it from
 * `Tuner.controller()`; PeftTrainer calls it after every update and the Trainer saves its state
 * in checkpoints, so a resumed run continues exactly.
 *
 * Structure changes never recompile the step: the step is compiled once at the largest shape
 * (AdaLoRA's init_r, IncreLoRA's reserved ranks) and a controller changes values (AdaLoRA zeroes
 * singular values, as PEFT does) or fixed tensors the step reads as inputs (masks).
 */
import type { HostTensor } from "../engine/ir/host.js";

/** What a controller sees after an optimizer step. */
export interface ControllerStep {
  /** Optimizer steps done, counting this one (1 after the first update). */
  readonly step: number;
  /** The run's planned number of optimizer steps; null when the trainer was not told. */
  readonly totalSteps: number | null;
  /** The adapter's tensors after the update (trained and fixed ones), by key. */
  readonly tensors: ReadonlyMap<string, HostTensor>;
  /**
   * The gradient the optimizer used for this update (mean over accumulated micro-batches, after
   * clipping) of each key in `Controller.gradientKeys`.
   */
  readonly gradients: ReadonlyMap<string, HostTensor>;
  /** The statistics the method's forward asked for with WrapOptions.probe, by name (f32). */
  readonly statistics: ReadonlyMap<string, HostTensor>;
  /**
   * A trained tensor's optimizer state after the update, by slot ("exp_avg", "exp_avg_sq", and
   * with gatedUpdates "update_count"): copies, read on demand (TrainStep.parameterState). Always
   * given by PeftTrainer; absent only where a test drives a controller by hand.
   */
  readonly optimizerState?: (key: string) => Readonly<Record<string, HostTensor>>;
}

/**
 * Forward passes a controller runs between updates, outside the training step (IST's losses with
 * some layers' adapters suppressed; the family of methods that score the adapter on data between
 * steps). PeftTrainer answers them with the model's inference graph (no dropout, no gradient, the
 * step untouched) on batches of the training data the driver supplies: src/train/run.ts gives a
 * separate seeded shuffle of the training set in batches of `Controller.passBatchSize`, cycled.
 */
export interface ControllerPasses {
  /**
   * The task loss (the mean over labelled tokens, or examples for classification, as the step's
   * loss) of the adapter on pass batch `index` (0, 1, ...; an index always names the same batch,
   * so a controller that counts the batches it used in its state resumes exactly), with
   * `tensors` replacing some adapter tensors for this pass only.
   */
  loss(index: number, tensors?: ReadonlyMap<string, HostTensor>): Promise<number>;
}

/** What a controller changes; everything absent stays as it is. */
export interface ControllerAction<C> {
  /**
   * Adapter tensors to replace, same shape and dtype: trained ones keep their optimizer state,
   * fixed ones (Tuner.trainable false) are fed to the step from the next update on.
   */
  readonly tensors?: ReadonlyMap<string, HostTensor>;
  /** The adapter's config from now on (AdaLoRA's rank_pattern); only `configFields` may differ. */
  readonly config?: C;
  /**
   * Which trained tensors (whole, or by an element mask of their shape) the next updates change,
   * and at what multiple of the learning rate: true/1 trains at the step's lr, 0/false freezes,
   * another value > 0 scales the lr (a separate lr for LoCA's locations). Needs
   * `Controller.gatedUpdates`. A frozen element keeps its value and optimizer state, and AdamW
   * counts steps per element (see TrainStepDefinition.gatedUpdates).
   */
  readonly trainable?: ReadonlyMap<string, boolean | number | HostTensor>;
  /**
   * Optimizer state to overwrite, by trained key and slot (names as ControllerStep.optimizerState
   * gives them), each of the tensor's shape: what entries a controller moved start from (SpIEL's
   * regrown deltas). Applied after `tensors`.
   */
  readonly optimizerState?: ReadonlyMap<string, Readonly<Record<string, HostTensor>>>;
}

/** A controller's state in a checkpoint: tensors (EMA buffers, masks) and a JSON value (counters). */
export interface ControllerState {
  readonly tensors: ReadonlyMap<string, HostTensor>;
  readonly json: unknown;
}

export interface Controller<C> {
  /** Trained adapter keys whose gradients afterStep() reads; the step outputs only these. */
  readonly gradientKeys: readonly string[];
  /**
   * Config fields (snake_case, as in adapter_config.json) the controller rewrites during training;
   * a resumed run does not count a difference there as a changed setting.
   */
  readonly configFields?: readonly string[];
  /** The step is compiled with per-element update gates, so `trainable` actions work. */
  readonly gatedUpdates?: boolean;
  /** Examples per batch of the forward passes runPasses takes (ControllerPasses). */
  readonly passBatchSize?: number;
  /** Called once when training starts, before the first update (not again on resume). */
  begin?(tensors: ReadonlyMap<string, HostTensor>): ControllerAction<C> | null;
  /**
   * The asynchronous part of a controller, for those with `passBatchSize`: called after every
   * optimizer update, before afterStep, with forward passes outside the step (IST's importance
   * round). It records what afterStep then acts on; the next update waits for it.
   */
  runPasses?(s: ControllerStep, passes: ControllerPasses): Promise<void>;
  /** Called after every optimizer update, before the step's metrics are logged. */
  afterStep(s: ControllerStep): ControllerAction<C> | null;
  /**
   * Numbers a user of the method watches (total rank, budget, sparsity), logged in metrics.jsonl
   * and shown on the progress line; keys are snake_case.
   */
  metrics(): Record<string, number>;
  /** Everything needed to continue exactly (saved with each checkpoint). */
  state(): ControllerState;
  /**
   * Puts a checkpoint's state back; returns what the checkpoint's adapter needs beyond its saved
   * tensors (the config fields the controller had changed), or null.
   */
  restore(s: ControllerState): ControllerAction<C> | null;
}

/** What a tuner's controller() may know about the run. */
export interface ControllerRun {
  /** Planned optimizer steps; null when the trainer was not told. */
  readonly totalSteps: number | null;
  /** The optimizer the step runs (its betas, for a controller that seeds moments: SpIEL). */
  readonly optimizer?: import("../engine/optim/optimizers.js").OptimizerConfig;
}
