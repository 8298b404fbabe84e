/**
 * The calibration pass (CorDA's covariances, LoRA-SB's gradient sums; SPT and Light-PEFT later):
 * streams batches through the frozen base model as ONE compiled graph (graph.ts) and adds its
 * per-batch outputs up on the host in float64. Batches are pulled one at a time and dropped once
 * their outputs are added, so memory does not grow with the number of batches: only the
 * accumulators (one [in, in] per covariance, one W-sized array per gradient statistic) persist.
 */
import { type CompileOptions, compileGraph } from "../engine/exec/backend.js";
import { type HostTensor, readNumber } from "../engine/ir/host.js";
import { type IdsLike, onesLike, toIdTensor } from "../models/inputs.js";
import type { PreTrainedModel } from "../models/pretrained.js";
import { prepareBatch, type TrainBatch } from "../tuners/train.js";
import type { CalibrationRequest, CalibrationStats } from "../tuners/tuner.js";
import { type Matrix, matrix } from "../util/linalg.js";
import { BATCH_INPUT, CalibrationError, COV_OUTPUT, GRAD_OUTPUT, LOSS_OUTPUT, traceCalibrationGraph, WEIGHT_INPUT } from "./graph.js";

/** A training batch whose labels may be left out when only covariances are asked for. */
export type CalibrationBatch = Omit<TrainBatch, "labels"> & { labels?: IdsLike };

export interface CalibrationProgress {
  batches: number;
  samples: number;
  tokens: number;
  /** The last batch's mean task loss, when gradients are taken. */
  loss?: number;
}

export interface CalibrationOptions {
  /** Called after each batch. */
  onProgress?: (p: CalibrationProgress) => void;
  /** Overrides the model's compile options (tests run the float64 interpreter). */
  compile?: CompileOptions;
}

function checkRequest(model: PreTrainedModel, r: CalibrationRequest): void {
  if (!r.inputCovariance && !r.gradientSum && !r.gradientSquareSum)
    throw new CalibrationError("calibration: the request asks for no statistic (inputCovariance, gradientSum or gradientSquareSum)");
  if (!r.layers.length) throw new CalibrationError("calibration: the request names no layer");
  for (const p of r.layers) {
    const w = model.weights.get(`${p}.weight`);
    if (w?.shape.length !== 2) throw new CalibrationError(`calibration: the model has no linear layer "${p}"`);
  }
}

/** The batch's graph inputs; labels only when gradients are taken. */
function batchTensors(model: PreTrainedModel, b: CalibrationBatch, needsLabels: boolean, tokenTypes: boolean): Record<string, HostTensor> {
  if (needsLabels) {
    if (b.labels === undefined) throw new CalibrationError("calibration: gradient statistics need batches with labels");
    return prepareBatch(model.head, b as TrainBatch, tokenTypes);
  }
  const ids = toIdTensor(b.inputIds, "inputIds");
  const out: Record<string, HostTensor> = {
    input_ids: ids,
    attention_mask: b.attentionMask !== undefined ? toIdTensor(b.attentionMask, "attentionMask") : onesLike(ids),
  };
  if (tokenTypes)
    out.token_type_ids =
      b.tokenTypeIds !== undefined ? toIdTensor(b.tokenTypeIds, "tokenTypeIds") : { ...ids, data: new BigInt64Array(ids.data.length) };
  return out;
}

function addInto(acc: Float64Array, t: HostTensor, what: string, square = false): void {
  const d = t.data as Float32Array | Float64Array;
  if (d.length !== acc.length) throw new CalibrationError(`calibration: ${what} has ${d.length} values, expected ${acc.length}`);
  for (let i = 0; i < d.length; i++) {
    const v = d[i];
    if (!Number.isFinite(v))
      throw new CalibrationError(
        `calibration: ${what} is not finite for this batch (an example whose inputs to the layer are all zero, or a diverging model)`,
      );
    acc[i] += square ? v * v : v;
  }
}

/**
 * Runs the pass: every batch of `batches` once, in order. Deterministic: the same batches give
 * the same statistics (the graph has no random ops; the host adds in float64 in batch order).
 */
export async function runCalibration(
  model: PreTrainedModel,
  batches: AsyncIterable<CalibrationBatch> | Iterable<CalibrationBatch>,
  request: CalibrationRequest,
  opts: CalibrationOptions = {},
): Promise<CalibrationStats> {
  checkRequest(model, request);
  const { graph, needsLabels, tokenTypes } = traceCalibrationGraph(model, request);
  const exec = await compileGraph(graph, { ...model.compileOptions, ...opts.compile });
  const cov = new Map<string, Matrix>();
  const gradSum = new Map<string, Matrix>();
  const gradSq = new Map<string, Matrix>();
  for (const p of request.layers) {
    const [rows, cols] = (model.weights.get(`${p}.weight`) as HostTensor).shape;
    // The input width: [out, in] weights, or [in, out] for GPT-2's Conv1D.
    const inWidth = model.arch.fanInFanOut ? rows : cols;
    if (request.inputCovariance) cov.set(p, matrix(inWidth, inWidth));
    if (request.gradientSum) gradSum.set(`${p}.weight`, matrix(rows, cols));
    if (request.gradientSquareSum) gradSq.set(`${p}.weight`, matrix(rows, cols));
  }
  const progress: CalibrationProgress = { batches: 0, samples: 0, tokens: 0 };
  try {
    for await (const b of batches) {
      const t = batchTensors(model, b, needsLabels, tokenTypes);
      const feeds: Record<string, HostTensor> = {};
      for (const inp of graph.inputs) {
        if (inp.name.startsWith(WEIGHT_INPUT)) feeds[inp.name] = model.weights.get(inp.name.slice(WEIGHT_INPUT.length)) as HostTensor;
        else if (inp.name.startsWith(BATCH_INPUT)) feeds[inp.name] = t[inp.name.slice(BATCH_INPUT.length)];
      }
      const outs = await exec.run(feeds);
      graph.outputs.forEach((o, i) => {
        if (o.name.startsWith(COV_OUTPUT)) {
          const p = o.name.slice(COV_OUTPUT.length);
          addInto((cov.get(p) as Matrix).data, outs[i], `the input covariance of "${p}"`);
        } else if (o.name.startsWith(GRAD_OUTPUT)) {
          const w = o.name.slice(GRAD_OUTPUT.length);
          const s = gradSum.get(w);
          if (s) addInto(s.data, outs[i], `the gradient of "${w}"`);
          const q = gradSq.get(w);
          if (q) addInto(q.data, outs[i], `the gradient of "${w}"`, true);
        } else if (o.name === LOSS_OUTPUT) progress.loss = readNumber(outs[i], 0);
      });
      const mask = t.attention_mask.data as BigInt64Array;
      let tokens = 0;
      for (let i = 0; i < mask.length; i++) tokens += mask[i] !== 0n ? 1 : 0;
      progress.batches += 1;
      progress.samples += t.input_ids.shape[0];
      progress.tokens += tokens;
      opts.onProgress?.({ ...progress });
    }
  } finally {
    await exec.release();
  }
  if (progress.batches === 0) throw new CalibrationError("calibration: no batches to calibrate on");
  const { loss: _last, ...counts } = progress;
  return { ...counts, inputCovariance: cov, gradientSum: gradSum, gradientSquareSum: gradSq };
}
