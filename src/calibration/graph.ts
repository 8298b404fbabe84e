/**
 * The calibration graph: the frozen model's forward on one batch, with extra outputs per
 * requested layer — Σ xᵀx of the layer's input rows (padding masked out), and ∂L/∂W of its base
 * weight (L = the batch's mean task loss, the training step's loss). One graph is traced for a
 * request and compiled once; the host adds its outputs up over batches (run.ts).
 */
import { backward } from "../engine/autodiff/grad.js";
import { onesLike } from "../engine/autodiff/rules.js";
import { PeftkitError } from "../engine/errors.js";
import type { DType } from "../engine/ir/dtype.js";
import { Graph } from "../engine/ir/graph.js";
import type { Dim } from "../engine/ir/shape.js";
import { crossEntropy } from "../engine/trace/composites.js";
import { withGraph } from "../engine/trace/context.js";
import { Tensor } from "../engine/trace/tensor.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import { type ForwardContext, type LinearOptions, WeightContext } from "../nn/context.js";
import { stepBatchDecls, stepModelInputs } from "../tuners/train.js";
import { type CalibrationRequest, DelegatingContext } from "../tuners/tuner.js";

/** Bad calibration input: an unknown layer, no data, a file too small, non-finite statistics. */
export class CalibrationError extends PeftkitError {}

/** Graph input prefixes: base weights, batch tensors. */
export const WEIGHT_INPUT = "w.";
export const BATCH_INPUT = "b.";
/** Graph output prefixes: per-layer Σ xᵀx (by layer path), per-weight ∂L/∂W (by weight name). */
export const COV_OUTPUT = "cov.";
export const GRAD_OUTPUT = "grad.";
/** The batch's mean task loss (when gradients are taken). */
export const LOSS_OUTPUT = "loss";

const IGNORE = -100;
/** Stands in for −∞ at padding positions when taking an example's maximum (finite in f32). */
const BELOW_ANY = -1e30;

/** Passes every call through and hands the inputs of the watched linear layers to `seen`. */
class RecordingContext extends DelegatingContext {
  constructor(
    inner: ForwardContext,
    private readonly watched: ReadonlySet<string>,
    private readonly seen: (path: string, x: Tensor) => void,
  ) {
    super(inner);
  }

  override linear(path: string, x: Tensor, opts?: LinearOptions): Tensor {
    if (this.watched.has(path)) this.seen(path, x);
    return super.linear(path, x, opts);
  }
}

/**
 * Σ xᵀx over the rows of x ([B, T, in] token rows or [B, in] example rows), padding rows
 * (attention mask 0) left out. With "exampleMax" each example's rows are first divided by |max|
 * of its own non-padding values, as CorDA's hook does for its one-sequence forwards.
 */
export function maskedGram(path: string, x: Tensor, mask: Tensor | null, scaling: CalibrationRequest["inputScaling"]): Tensor {
  const d = x.shape[x.rank - 1];
  if (typeof d !== "number") throw new CalibrationError(`calibration: layer "${path}" has a symbolic input width`);
  let keep: Tensor | null = null;
  if (x.rank === 3 && mask) {
    if (x.shape[1] !== mask.shape[1])
      throw new CalibrationError(`calibration: layer "${path}" sees ${x.shape[1]} positions, the attention mask ${mask.shape[1]}`);
    keep = mask.cast(x.dtype).unsqueeze(-1);
  } else if (x.rank !== 2 && x.rank !== 3) {
    throw new CalibrationError(`calibration: layer "${path}" has a rank-${x.rank} input; expected [batch, seq, in] or [batch, in]`);
  }
  let rows = keep ? x.mul(keep) : x;
  if (scaling === "exampleMax") {
    const axes = x.rank === 3 ? [1, 2] : [1];
    const valued = keep ? keep.gt(0).where(x, BELOW_ANY) : x;
    rows = rows.div(valued.max(axes, true).abs());
  }
  const flat = rows.reshape([-1, d]);
  return flat.transpose().matmul(flat);
}

export interface CalibrationGraph {
  graph: Graph;
  /** Whether the batch must carry labels (gradients were asked for). */
  needsLabels: boolean;
  /** Whether token_type_ids are an input. */
  tokenTypes: boolean;
}

/** Traces the calibration graph of a request on a model (its base weights, no adapters). */
export function traceCalibrationGraph(model: PreTrainedModel, request: CalibrationRequest): CalibrationGraph {
  const wantCov = Boolean(request.inputCovariance);
  const wantGrad = Boolean(request.gradientSum || request.gradientSquareSum);
  const tokenTypes = model.usesTokenTypeIds;
  const g = new Graph();
  withGraph(g, () => {
    const weights = new Map<string, Tensor>();
    for (const [name, t] of model.weights)
      weights.set(name, new Tensor(g, g.addInput(WEIGHT_INPUT + name, { dtype: t.dtype, shape: t.shape })));
    const decls: Record<string, { dtype: DType; shape: readonly Dim[] }> = stepBatchDecls(model.head, tokenTypes);
    if (!wantGrad) delete decls.labels;
    const batch: Record<string, Tensor> = {};
    for (const [k, d] of Object.entries(decls)) batch[k] = new Tensor(g, g.addInput(BATCH_INPUT + k, d));
    const start = g.nodes.length;
    const grams = new Map<string, Tensor>();
    const base = new WeightContext((n) => weights.get(n), new Set(weights.keys()));
    const ctx = wantCov
      ? new RecordingContext(base, new Set(request.layers), (path, x) => {
          const c = maskedGram(path, x, batch.attention_mask, request.inputScaling);
          const prev = grams.get(path);
          grams.set(path, prev ? prev.add(c) : c);
        })
      : base;
    const out = model.traceForward(ctx, stepModelInputs(batch));
    if (wantCov) {
      for (const path of request.layers) {
        const c = grams.get(path);
        if (!c) throw new CalibrationError(`calibration: layer "${path}" is not used by the ${model.head} forward pass`);
        g.addOutput(COV_OUTPUT + path, c.id);
      }
    }
    if (wantGrad) {
      if (!out.logits) throw new CalibrationError(`calibration: a ${model.head} model has no logits to take gradients of`);
      const loss = crossEntropy(out.logits, batch.labels, { ignoreIndex: IGNORE });
      const names = request.layers.map((p) => `${p}.weight`);
      const grads = backward(
        [loss],
        [onesLike(loss)],
        names.map((n) => weights.get(n) as Tensor),
        start,
      );
      // The loss is an output too: the progress line shows it, and the ONNX emitter needs it live
      // (it emits cross_entropy's custom_vjp node whole once any of its outputs is used).
      g.addOutput(LOSS_OUTPUT, loss.cast("f32").id);
      names.forEach((n, i) => {
        g.addOutput(GRAD_OUTPUT + n, grads[i].id);
      });
    }
  });
  return { graph: g, needsLabels: wantGrad, tokenTypes };
}
