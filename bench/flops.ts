/** Analytic FLOP counts of training steps, for achieved-GFLOP/s figures. */
import { LLAMA, type LlamaConfig } from "../src/models/llama.js";

/** The parsed config (validated by the llama architecture, so a bad field is reported there). */
export type LlamaShape = Pick<LlamaConfig, "hidden" | "layers" | "heads" | "kvHeads" | "headDim" | "intermediate" | "vocab">;

export function llamaShape(c: Record<string, unknown>): LlamaShape {
  return LLAMA.parseConfig(c, {});
}

/** Linear layers of one block as [out, in]. */
function blockLinears(s: LlamaShape): [number, number][] {
  return [
    [s.heads * s.headDim, s.hidden],
    [s.kvHeads * s.headDim, s.hidden],
    [s.kvHeads * s.headDim, s.hidden],
    [s.hidden, s.heads * s.headDim],
    [s.intermediate, s.hidden],
    [s.intermediate, s.hidden],
    [s.hidden, s.intermediate],
  ];
}

/**
 * FLOPs of one step: forward (frozen linears, LM head, attention, low-rank paths), backward through
 * every frozen linear (input gradient only) and attention (2× its forward), and for LoRA the
 * low-rank input and weight gradients. Full fine-tuning adds the weight gradients of every linear
 * and the LM head. Elementwise work is not counted.
 */
export function trainStepFlops(s: LlamaShape, batch: number, seq: number, opts: { rank?: number; full?: boolean }): number {
  const n = batch * seq;
  let linear = 0;
  let lora = 0;
  for (const [o, i] of blockLinears(s)) {
    linear += 2 * n * o * i;
    if (opts.rank) lora += 2 * n * opts.rank * (o + i);
  }
  linear *= s.layers;
  lora *= s.layers;
  const head = 2 * n * s.vocab * s.hidden;
  const attention = s.layers * 2 * 2 * batch * s.heads * seq * seq * s.headDim;
  const forward = linear + head + attention + lora;
  const backward = linear + head + 2 * attention + 3 * lora + (opts.full ? linear + head : 0);
  return forward + backward;
}
