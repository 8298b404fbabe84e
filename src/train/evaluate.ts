/** Evaluation: loss and perplexity, classification accuracy, exact match of short completions. */
import type { PreTrainedTokenizer } from "../io/tokenizer.js";
import type { ModelOutput } from "../models/pretrained.js";
import type { TrainBatch } from "../tuners/train.js";

export interface EvalModel {
  forward(inputs: { inputIds: number[][]; attentionMask?: number[][] }): Promise<ModelOutput>;
  generate(prompts: number[][], opts: { maxNewTokens: number; eosTokenId?: number | number[] }): Promise<number[][]>;
}

export interface EvalBatch extends TrainBatch {
  inputIds: number[][];
  attentionMask: number[][];
  labels: number[][];
}

export interface CompletionItem {
  prompt: number[];
  completion: string;
}

export interface EvalMetrics {
  eval_loss: number;
  eval_perplexity: number;
  eval_accuracy?: number;
  eval_exact_match?: number;
  eval_tokens: number;
}

/** Summed token NLL and count for one batch from host logits (causal: labels shifted by one). */
function batchNll(
  logits: Float32Array,
  shape: number[],
  labels: number[][],
  causal: boolean,
): { nll: number; count: number; correct: number } {
  let nll = 0;
  let count = 0;
  let correct = 0;
  const v = shape[shape.length - 1];
  if (shape.length === 2) {
    // Classification: logits [B, C], labels [[c], ...].
    labels.forEach((row, b) => {
      const l = row[0];
      const z = logits.subarray(b * v, (b + 1) * v);
      let m = Number.NEGATIVE_INFINITY;
      let arg = 0;
      for (let j = 0; j < v; j++) if (z[j] > m) [m, arg] = [z[j], j];
      let s = 0;
      for (let j = 0; j < v; j++) s += Math.exp(z[j] - m);
      nll += Math.log(s) + m - z[l];
      count++;
      if (arg === l) correct++;
    });
    return { nll, count, correct };
  }
  const t = shape[1];
  labels.forEach((row, b) => {
    for (let i = 0; i < t; i++) {
      const target = causal ? row[i + 1] : row[i];
      if (target === undefined || target < 0) continue;
      const z = logits.subarray((b * t + i) * v, (b * t + i + 1) * v);
      let m = Number.NEGATIVE_INFINITY;
      let arg = 0;
      for (let j = 0; j < v; j++) if (z[j] > m) [m, arg] = [z[j], j];
      let s = 0;
      for (let j = 0; j < v; j++) s += Math.exp(z[j] - m);
      nll += Math.log(s) + m - z[target];
      count++;
      if (arg === target) correct++;
    }
  });
  return { nll, count, correct };
}

export async function evaluate(
  model: EvalModel,
  batches: readonly EvalBatch[],
  opts: {
    causal: boolean;
    classification: boolean;
    completions?: readonly CompletionItem[];
    tokenizer?: PreTrainedTokenizer;
    maxNewTokens?: number;
  },
): Promise<EvalMetrics> {
  let nll = 0;
  let count = 0;
  let correct = 0;
  for (const b of batches) {
    const out = await model.forward({ inputIds: b.inputIds, attentionMask: b.attentionMask });
    if (!out.logits) continue;
    const r = batchNll(out.logits.data, out.logits.shape, b.labels, opts.causal);
    nll += r.nll;
    count += r.count;
    correct += r.correct;
  }
  const loss = count ? nll / count : Number.NaN;
  const m: EvalMetrics = { eval_loss: loss, eval_perplexity: Math.exp(loss), eval_tokens: count };
  if (opts.classification) m.eval_accuracy = count ? correct / count : 0;
  if (opts.completions?.length && opts.tokenizer)
    m.eval_exact_match = await exactMatch(model, opts.completions, opts.tokenizer, opts.maxNewTokens);
  return m;
}

/** Normalises a completion for comparison: up to the first newline, trimmed. */
export function normalizeAnswer(s: string): string {
  return s.split("\n")[0].trim().toLowerCase();
}

/** Fraction of prompts whose greedy continuation equals the reference completion. */
export async function exactMatch(
  model: EvalModel,
  items: readonly CompletionItem[],
  tok: PreTrainedTokenizer,
  maxNew?: number,
  batchSize = 16,
): Promise<number> {
  let hits = 0;
  for (let i = 0; i < items.length; i += batchSize) {
    const chunk = items.slice(i, i + batchSize);
    const longest = Math.max(...chunk.map((c) => tok.encode(c.completion, { addSpecialTokens: false }).length));
    const outs = await model.generate(
      chunk.map((c) => c.prompt),
      { maxNewTokens: maxNew ?? longest + 2, eosTokenId: tok.eosTokenId ?? undefined },
    );
    outs.forEach((o, j) => {
      const text = tok.decode(o.slice(chunk[j].prompt.length), { skipSpecialTokens: true });
      if (normalizeAnswer(text) === normalizeAnswer(chunk[j].completion)) hits++;
    });
  }
  return items.length ? hits / items.length : 0;
}
