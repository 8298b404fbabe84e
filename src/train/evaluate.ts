/** Evaluation: loss and perplexity, classification accuracy, exact match of short completions. */
import { PeftkitError } from "../engine/errors.js";
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

/** Labels that do not fit the model's logits (the data loader should have caught them). */
export class EvalLabelError extends PeftkitError {}

export interface EvalMetrics {
  eval_loss: number;
  eval_perplexity: number;
  eval_accuracy?: number;
  eval_exact_match?: number;
  eval_tokens: number;
}

/** −log softmax(z)[target] and whether target is the argmax, for one row of logits. */
function rowNll(z: Float32Array, target: number): { nll: number; hit: boolean } {
  let m = Number.NEGATIVE_INFINITY;
  let arg = 0;
  for (let j = 0; j < z.length; j++) if (z[j] > m) [m, arg] = [z[j], j];
  let s = 0;
  for (let j = 0; j < z.length; j++) s += Math.exp(z[j] - m);
  return { nll: Math.log(s) + m - z[target], hit: arg === target };
}

/**
 * Summed NLL, count and argmax hits for one batch from host logits: classification logits
 * [B, C] with labels [[c], ...], or token logits [B, T, V] (causal: labels shifted by one).
 */
function batchNll(
  logits: Float32Array,
  shape: number[],
  labels: number[][],
  causal: boolean,
): { nll: number; count: number; correct: number } {
  const v = shape[shape.length - 1];
  const t = shape.length === 2 ? 1 : shape[1];
  const acc = { nll: 0, count: 0, correct: 0 };
  labels.forEach((row, b) => {
    for (let i = 0; i < t; i++) {
      const target = shape.length === 2 ? row[0] : causal ? row[i + 1] : row[i];
      if (target === undefined || target < 0) continue;
      // An id past the logits would give a NaN loss that looks like a result.
      if (target >= v || !Number.isInteger(target))
        throw new EvalLabelError(
          `label ${target} is out of range for the model's ${v} ${shape.length === 2 ? "classes" : "vocabulary entries"} (ids 0 to ${v - 1})`,
        );
      const r = rowNll(logits.subarray((b * t + i) * v, (b * t + i + 1) * v), target);
      acc.nll += r.nll;
      acc.count++;
      if (r.hit) acc.correct++;
    }
  });
  return acc;
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

/** What exact-match scoring needs of a tokenizer. */
export type CompletionTokenizer = Pick<PreTrainedTokenizer, "encode" | "decode" | "eosTokenId">;

/** One scored completion: the model's normalised answer and whether it matches the reference. */
export interface ExactMatchResult {
  prediction: string;
  hit: boolean;
}

/**
 * The greedy continuation of every prompt, scored against its reference. Each item gets its own
 * token budget (`maxNew`, else its reference's length + 2) and the rows of a batch are cut to
 * their own budget, so an item's result does not depend on the batch size or its neighbours
 * (generation itself is batch-invariant: left padding is masked and positions skip it).
 */
export async function exactMatchResults(
  model: EvalModel,
  items: readonly CompletionItem[],
  tok: CompletionTokenizer,
  maxNew?: number,
  batchSize = 16,
): Promise<ExactMatchResult[]> {
  const results: ExactMatchResult[] = [];
  for (let i = 0; i < items.length; i += batchSize) {
    const chunk = items.slice(i, i + batchSize);
    const budgets = chunk.map((c) => maxNew ?? tok.encode(c.completion, { addSpecialTokens: false }).length + 2);
    const outs = await model.generate(
      chunk.map((c) => c.prompt),
      { maxNewTokens: Math.max(...budgets), eosTokenId: tok.eosTokenId ?? undefined },
    );
    outs.forEach((o, j) => {
      const start = chunk[j].prompt.length;
      const prediction = normalizeAnswer(tok.decode(o.slice(start, start + budgets[j]), { skipSpecialTokens: true }));
      results.push({ prediction, hit: prediction === normalizeAnswer(chunk[j].completion) });
    });
  }
  return results;
}

/** Fraction of prompts whose greedy continuation equals the reference completion. */
export async function exactMatch(
  model: EvalModel,
  items: readonly CompletionItem[],
  tok: CompletionTokenizer,
  maxNew?: number,
  batchSize = 16,
): Promise<number> {
  const results = await exactMatchResults(model, items, tok, maxNew, batchSize);
  return results.length ? results.filter((r) => r.hit).length / results.length : 0;
}
