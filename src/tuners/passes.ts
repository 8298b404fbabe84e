/**
 * The task loss of a forward pass outside the training step (ControllerPasses.loss), from host
 * logits and the step's labels, in float64: the same mean the step's cross-entropy takes.
 */
import type { HostTensor } from "../engine/ir/host.js";
import { ModelError } from "../nn/context.js";

const IGNORE = -100;

/**
 * Mean −log softmax(logits)[label] over the labelled positions. `labels` are prepareBatch's: [B]
 * class ids for sequence classification, else [B, T] (causal LMs already shifted), −100 skipped.
 * Logits are [B, C] or [B, T', V]; with T' > T the first T' − T positions (soft prompt tokens)
 * are left out, as the step does.
 */
export function meanTaskLoss(logits: { shape: readonly number[]; data: Float32Array }, labels: HostTensor): number {
  const v = logits.shape[logits.shape.length - 1];
  const b = logits.shape[0];
  const rows = logits.shape.length === 2 ? 1 : logits.shape[1];
  const t = labels.shape.length === 1 ? 1 : labels.shape[1];
  if (labels.shape[0] !== b || rows < t) throw new ModelError(`pass loss: labels [${labels.shape}] do not fit logits [${logits.shape}]`);
  const lead = rows - t;
  const ids = labels.data as BigInt64Array;
  let sum = 0;
  let count = 0;
  for (let i = 0; i < b; i++) {
    for (let j = 0; j < t; j++) {
      const y = Number(ids[i * t + j]);
      if (y === IGNORE) continue;
      if (y < 0 || y >= v) throw new ModelError(`pass loss: label ${y} is outside the ${v} logits`);
      const off = (i * rows + lead + j) * v;
      let m = Number.NEGATIVE_INFINITY;
      for (let k = 0; k < v; k++) m = Math.max(m, logits.data[off + k]);
      let s = 0;
      for (let k = 0; k < v; k++) s += Math.exp(logits.data[off + k] - m);
      sum += Math.log(s) + m - logits.data[off + y];
      count++;
    }
  }
  return count ? sum / count : Number.NaN;
}
