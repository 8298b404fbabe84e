/** Analytic FLOP counts of training steps, for achieved-GFLOP/s figures. */
export interface LlamaShape {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  vocab: number;
}

export function llamaShape(c: Record<string, unknown>): LlamaShape {
  const hidden = c.hidden_size as number;
  const heads = c.num_attention_heads as number;
  return {
    hidden,
    layers: c.num_hidden_layers as number,
    heads,
    kvHeads: (c.num_key_value_heads as number) ?? heads,
    headDim: (c.head_dim as number) ?? hidden / heads,
    intermediate: c.intermediate_size as number,
    vocab: c.vocab_size as number,
  };
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
