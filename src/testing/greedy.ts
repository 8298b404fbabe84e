/** An independent reference for generation tests: greedy decoding without a KV cache. */
import assert from "node:assert/strict";
import type { PreTrainedModel } from "../models/pretrained.js";

/** Greedy decoding by a full forward over the whole sequence at every step (no cache, no padding). */
export async function greedyByRecompute(model: PreTrainedModel, start: readonly number[], steps: number): Promise<number[]> {
  const seq = [...start];
  for (let i = 0; i < steps; i++) {
    const { logits } = await model.forward({ inputIds: [seq] });
    assert.ok(logits);
    const v = logits.shape[2];
    const last = logits.data.subarray((seq.length - 1) * v, seq.length * v);
    let best = 0;
    for (let j = 1; j < v; j++) if (last[j] > last[best]) best = j;
    seq.push(best);
  }
  return seq;
}
