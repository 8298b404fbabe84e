/**
 * MeZO / Sparse MeZO over a model's own weights (full-weight mode) or over an adapter's trainable
 * tensors (LoRA, prompt tuning, any tuner): the same ZoStep (src/train/zo/step.ts), only the set of
 * perturbed tensors and the forward differ.
 *
 * Full-weight mode trains the model's weight tensors in place (no copy: the point of a forward-only
 * step is memory at the level of inference); tied weights train once, under their first name.
 * Adapter mode trains copies of the adapter's trainable tensors, which it puts back into the
 * PeftModel, so the adapter saves as usual.
 */
import type { CompileOptions } from "../../engine/exec/backend.js";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { TensorDecl } from "../../engine/optim/train-step.js";
import { crossEntropy, crossEntropyBlockStats, crossEntropyFromBlocks } from "../../engine/trace/composites.js";
import { concat, type Tensor } from "../../engine/trace/tensor.js";
import type { PreTrainedModel } from "../../models/pretrained.js";
import { type ForwardContext, type LinearOptions, ModelError, WeightContext } from "../../nn/context.js";
import { dropLeading } from "../../nn/prompt.js";
import { PeftConfigError } from "../../tuners/config.js";
import { ModulesToSaveContext, modulesToSaveKeys } from "../../tuners/modules-to-save.js";
import type { PeftModel } from "../../tuners/peft-model.js";
import { prepareBatch, stepBatchDecls, stepModelInputs, type TrainBatch } from "../../tuners/train.js";
import { magnitudeThreshold } from "./sparse.js";
import { compileForward, type ZoLossContext, ZoStep, type ZoStepDefinition, type ZoStepResult, type ZoUpdateOptions } from "./step.js";

const IGNORE = -100;
/** The authors' zo_update skips weight decay for names with "bias", "layer_norm" or "layernorm"; peftkit's norms are all "...norm...". */
export const noDecay = (name: string): boolean => /bias|norm/i.test(name);

export interface ZoTrainerOptions {
  /** Sparse MeZO: the share of each tensor's entries left unperturbed (src/train/zo/sparse.ts); absent = MeZO. */
  sparsity?: number;
  /** h per tensor from a checkpoint (overrides the ones computed from the current weights). */
  thresholds?: Record<string, number>;
  compile?: CompileOptions;
  /** Full-weight mode: ZoStepDefinition.chunk (tests). */
  chunk?: number;
  /** ZoStepDefinition.split: the two forwards as two runs of a one-forward graph. */
  split?: boolean;
}

export class ZoTrainer {
  private constructor(
    readonly step: ZoStep,
    private readonly prepare: (b: TrainBatch) => Record<string, HostTensor>,
    private readonly after: () => void,
  ) {}

  /**
   * Full-weight MeZO: the model's weights selected by `trains` (default all) are perturbed and
   * updated in place; the others enter as frozen inputs.
   */
  static async full(model: PreTrainedModel, opts: ZoTrainerOptions & { trains?: (name: string) => boolean } = {}): Promise<ZoTrainer> {
    const { def, init, frozenInit } = fullDefinition(model, opts.trains, opts.sparsity !== undefined);
    if (opts.chunk !== undefined) def.chunk = opts.chunk;
    if (opts.split) def.split = true;
    const step = await ZoStep.create(
      def,
      { params: init, frozen: frozenInit, thresholds: thresholdsOf(init, opts), decay: Object.keys(init).filter((k) => !noDecay(k)) },
      { ...model.compileOptions, ...opts.compile },
    );
    // The model's own map must keep pointing at the trained tensors: its inference path may
    // re-point entries at packed copies (WeightStacks, src/models/stacked.ts), which the in-place
    // update would then leave behind. Evaluation during training, and any use of the model after
    // it, read the map.
    const keyOf = new Map(Object.entries(init).map(([k, t]) => [t, k]));
    const names = [...model.weights].flatMap(([n, t]) => {
      const k = keyOf.get(t);
      return k === undefined ? [] : [[n, k] as const];
    });
    return new ZoTrainer(
      step,
      (b) => prepareBatch(model.head, b, model.usesTokenTypeIds),
      () => {
        for (const [n, k] of names) model.weights.set(n, step.params[k]);
      },
    );
  }

  /** The loss of the same forward without perturbation or update: the inference baseline of the memory benchmark. */
  static async inference(
    model: PreTrainedModel,
    compile: CompileOptions = {},
  ): Promise<{ loss(b: TrainBatch): Promise<number>; release(): Promise<void> }> {
    const { def, init, frozenInit } = fullDefinition(model, undefined, false);
    const f = await compileForward(def, { params: init, frozen: frozenInit }, { ...model.compileOptions, ...compile });
    return { loss: (b) => f.loss(prepareBatch(model.head, b, model.usesTokenTypeIds)), release: f.release };
  }
  /**
   * MeZO over an adapter: its trainable tensors (as PeftTrainer trains them) are perturbed and
   * updated; the base weights and the adapter's fixed tensors are frozen inputs.
   */
  static async adapter(peft: PeftModel, opts: ZoTrainerOptions & { adapterName?: string } = {}): Promise<ZoTrainer> {
    const name = opts.adapterName ?? (peft.activeAdapters.length === 1 ? peft.activeAdapters[0] : undefined);
    if (!name) throw new PeftConfigError(`choose the adapter to train (active: ${peft.activeAdapters.join(", ") || "none"})`);
    if (peft.mergedAdapters.length) throw new PeftConfigError("unmerge adapters before training");
    const a = peft.adapter(name);
    const model = peft.base;
    const head = model.head;
    const params: Record<string, TensorDecl> = {};
    const init: Record<string, HostTensor> = {};
    const fixed: Record<string, HostTensor> = {};
    for (const [k, t] of a.tensors) {
      if (a.tuner.trainable?.(k, a.config) ?? true) {
        params[k] = { dtype: t.dtype, shape: t.shape };
        // A copy: the update writes in place, and the created tensors may be shared (PiSSA's initial factors).
        init[k] = hostTensor(t.dtype, [...t.shape], (t.data as Float32Array).slice());
      } else fixed[k] = t;
    }
    if (!Object.keys(params).length) throw new PeftConfigError(`adapter "${name}" has no trainable tensor`);
    const FIXED = "adapter:";
    const frozenInit: Record<string, HostTensor> = Object.fromEntries(model.weights);
    for (const [k, t] of Object.entries(fixed)) frozenInit[FIXED + k] = t;
    const frozen = Object.fromEntries(Object.entries(frozenInit).map(([k, t]) => [k, { dtype: t.dtype, shape: t.shape }]));
    const mts = modulesToSaveKeys(peft.info, a.config.modulesToSave ?? null);
    const prefix = a.tuner.virtualTokens?.(a.config) ?? 0;
    const step = await ZoStep.create(
      {
        params,
        frozen,
        batch: stepBatchDecls(head, model.usesTokenTypeIds),
        sparse: opts.sparsity !== undefined,
        split: opts.split,
        loss: ({ params: p, frozen: f, batch }) => {
          const base = new WeightContext((n) => f[n], new Set(Object.keys(f)));
          let ctx: ForwardContext = base;
          const tensor = (k: string): Tensor => {
            const t = k in p ? p[k] : f[FIXED + k];
            if (!t) throw new PeftConfigError(`adapter "${name}" has no tensor "${k}"`);
            return t;
          };
          if (mts.size) ctx = new ModulesToSaveContext(ctx, mts, tensor);
          ctx = a.tuner.wrap(ctx, peft.info, a.config, {
            adapterName: name,
            tensor,
            rowMask: null,
            training: false,
            seed: null,
            baseWeight: (n) => base.weight(n),
          });
          const out = model.traceForward(ctx, stepModelInputs(batch));
          if (!out.logits) throw new ModelError(`a ${head} model has no logits to train on`);
          const logits =
            prefix && head !== "sequence_classification" ? dropLeading(out.logits, prefix, 1, batch.input_ids.shape[1]) : out.logits;
          return crossEntropy(logits, batch.labels, { ignoreIndex: IGNORE });
        },
      },
      { params: init, frozen: frozenInit, thresholds: thresholdsOf(init, opts), decay: Object.keys(init).filter((k) => !noDecay(k)) },
      { ...model.compileOptions, ...opts.compile },
    );
    // Fresh HostTensor objects over the same buffers: the PeftModel memoizes values prepared from
    // its tensors by object identity, and the update changes the buffers in place.
    const sync = () =>
      peft.setAdapterTensors(
        name,
        new Map([...a.tensors, ...Object.entries(step.params).map(([k, t]) => [k, hostTensor(t.dtype, [...t.shape], t.data)] as const)]),
      );
    sync();
    return new ZoTrainer(step, (b) => prepareBatch(head, b, model.usesTokenTypeIds), sync);
  }

  /** One MeZO step on a batch; the trained tensors change in place. */
  async train(batch: TrainBatch, o: ZoUpdateOptions): Promise<ZoStepResult> {
    const res = await this.step.step(this.prepare(batch), o);
    this.after();
    return res;
  }

  /** The trained tensors (live: they change with every step). */
  get tensors(): Readonly<Record<string, HostTensor>> {
    return this.step.params;
  }

  /** Puts saved values back (resume): copied into the live tensors. */
  restore(values: Record<string, HostTensor>): void {
    for (const [k, t] of Object.entries(this.step.params)) {
      const v = values[k];
      if (!v) throw new PeftConfigError(`the checkpoint has no tensor "${k}"`);
      if (v.shape.join(",") !== t.shape.join(","))
        throw new PeftConfigError(`the checkpoint's "${k}" is [${v.shape}], the run's [${t.shape}]`);
      (t.data as Float32Array).set(v.data as Float32Array);
    }
    this.after();
  }

  trainedParameters(): number {
    return Object.values(this.step.params).reduce((a, t) => a + t.data.length, 0);
  }

  release(): Promise<void> {
    return this.step.release();
  }
}

function thresholdsOf(init: Record<string, HostTensor>, opts: ZoTrainerOptions): Record<string, number> | undefined {
  if (opts.sparsity === undefined) return undefined;
  if (opts.thresholds) return opts.thresholds;
  const s = opts.sparsity;
  return Object.fromEntries(Object.entries(init).map(([k, t]) => [k, magnitudeThreshold(t.data as Float32Array, s)]));
}

/**
 * Full-weight mode's context: each linear layer gets a fresh perturbed weight generated after its
 * input exists (ZoLossContext.perturbedAfter), so one layer's z is live at a time. An embedding
 * lookup perturbs only the rows it reads (perturbedRows), and a linear layer larger than the step's
 * chunk (a tied LM head: 49152 × 576 in SmolLM2) is applied in row blocks (perturbedBlocks), so
 * neither builds a whole perturbed copy of the embedding. Other weights (norms) are read once per
 * forward.
 */
class PerturbedLinears extends WeightContext {
  constructor(
    get: (name: string) => Tensor | undefined,
    names: ReadonlySet<string>,
    /** The trained tensor behind a weight name (aliases resolved), or null when it is frozen. */
    private readonly trained: (name: string) => string | null,
    private readonly zo: Pick<ZoLossContext, "perturbedAfter" | "perturbedRows" | "perturbedBlocks">,
    /** The LM head to fuse with the loss (see headLoss), or none. */
    private readonly head: { path: string; labels: Tensor } | null = null,
  ) {
    super(get, names);
  }

  /**
   * The loss of the fused head: when the head's weight is trained, each block of its logits is
   * reduced to cross-entropy statistics before the next block is generated, so neither the
   * perturbed weight nor the whole logits exist (the logits are still returned, as a concat that
   * the graph drops when nothing reads it). Valid only when the model returns those logits as
   * they are: the caller checks `logits === out.logits`.
   */
  headLoss: { logits: Tensor; loss: Tensor } | null = null;

  private fresh(name: string, after: Tensor): Tensor | null {
    const k = this.trained(name);
    return k === null ? null : this.zo.perturbedAfter(k, after);
  }

  override linear(path: string, x: Tensor, opts: LinearOptions = {}): Tensor {
    const k = this.trained(`${path}.weight`);
    let y: Tensor;
    if (k === null) y = x.matmul(opts.fanInFanOut ? this.weight(`${path}.weight`) : this.weight(`${path}.weight`).transpose());
    else if (this.head && path === this.head.path && !opts.fanInFanOut && !this.hasWeight(`${path}.bias`)) {
      const labels = this.head.labels;
      const parts: Tensor[] = [];
      const stats: Tensor[] = [];
      this.zo.perturbedBlocks(k, x, (w, r0) => {
        const p = x.matmul(w.transpose());
        parts.push(p);
        stats.push(crossEntropyBlockStats(p, labels, r0, { ignoreIndex: IGNORE }));
        return stats[stats.length - 1];
      });
      y = parts.length === 1 ? parts[0] : concat(parts, -1);
      this.headLoss = { logits: y, loss: crossEntropyFromBlocks(stats, labels, { ignoreIndex: IGNORE }) };
    } else if (opts.fanInFanOut) {
      // [in, out]: a block of rows is a block of inputs, and the blocks' products add up
      const parts = this.zo.perturbedBlocks(k, x, (w, r0, r1) => x.slice(-1, r0, r1).matmul(w));
      y = parts.reduce((a, b) => a.add(b));
    } else {
      // [out, in]: a block of rows is a block of output features
      const parts = this.zo.perturbedBlocks(k, x, (w) => x.matmul(w.transpose()));
      y = parts.length === 1 ? parts[0] : concat(parts, -1);
    }
    if (this.hasWeight(`${path}.bias`)) y = y.add(this.fresh(`${path}.bias`, x) ?? this.weight(`${path}.bias`));
    return y;
  }

  override embedding(path: string, ids: Tensor): Tensor {
    const k = this.trained(`${path}.weight`);
    return k === null ? this.weight(`${path}.weight`).gather(ids, 0) : this.zo.perturbedRows(k, ids);
  }
}

/** Full-weight mode: the perturbed weights (distinct tensors, those `trains` picks), the frozen rest, and the forward. */
function fullDefinition(
  model: PreTrainedModel,
  trains: ((name: string) => boolean) | undefined,
  sparse: boolean,
): { def: ZoStepDefinition; init: Record<string, HostTensor>; frozenInit: Record<string, HostTensor> } {
  const params: Record<string, TensorDecl> = {};
  const init: Record<string, HostTensor> = {};
  const frozen: Record<string, TensorDecl> = {};
  const frozenInit: Record<string, HostTensor> = {};
  const first = new Map<HostTensor, string>();
  const aliases = new Map<string, string>();
  for (const [k, t] of model.weights) {
    const f = first.get(t);
    if (f) {
      aliases.set(k, f);
      continue;
    }
    first.set(t, k);
    const on = trains?.(k) ?? true;
    (on ? params : frozen)[k] = { dtype: t.dtype, shape: t.shape };
    (on ? init : frozenInit)[k] = t;
  }
  if (!Object.keys(params).length) throw new PeftConfigError("zeroth-order training: no weight is selected to train");
  const head = model.head;
  const names = new Set(model.weights.keys());
  const def: ZoStepDefinition = {
    params,
    frozen,
    batch: stepBatchDecls(head, model.usesTokenTypeIds),
    sparse,
    loss: (zo) => {
      const { params: p, frozen: f, batch } = zo;
      const at = (n: string) => {
        const k = aliases.get(n) ?? n;
        return k in p ? p[k] : f[k];
      };
      const trained = (n: string) => {
        const k = aliases.get(n) ?? n;
        return k in params ? k : null;
      };
      const headPath = head === "causal_lm" ? "lm_head" : null;
      const ctx = new PerturbedLinears(at, names, trained, zo, zo.perturbing && headPath ? { path: headPath, labels: batch.labels } : null);
      const out = model.traceForward(ctx, stepModelInputs(batch));
      if (!out.logits) throw new ModelError(`a ${head} model has no logits to train on`);
      if (ctx.headLoss && ctx.headLoss.logits === out.logits) return ctx.headLoss.loss;
      return crossEntropy(out.logits, batch.labels, { ignoreIndex: IGNORE });
    },
  };
  return { def, init, frozenInit };
}
