/**
 * Evaluation: loss and perplexity, classification accuracy and macro-F1, token classification
 * accuracy, macro-F1 and entity (span) F1, exact match of short completions.
 *
 * Macro-F1 is the unweighted mean of per-class F1 over the classes that occur among the labels or
 * the predictions (scikit-learn's f1_score(average="macro")); a class predicted but never labelled
 * counts with F1 0. For token classification it is computed per token (every labelled sub-token
 * is one decision). Span precision/recall/F1 (span-f1.ts) are seqeval's: over the tags of the
 * labelled positions of each example (the first sub-token of each word, as transformers' examples
 * drop the -100 positions), reported when the class names are BIO tags.
 */
import { PeftkitError } from "../engine/errors.js";
import type { PreTrainedTokenizer } from "../io/tokenizer.js";
import type { ModelOutput } from "../models/pretrained.js";
import type { TrainBatch } from "../tuners/train.js";
import { BatchStream, type Example } from "./data/index.js";
import { isSpanTagSet, SpanCounts } from "./span-f1.js";

export interface EvalModel {
  /** `taskIds`: one routing-table row per example, for adapters that route by task (POLY); a model without one ignores them. */
  forward(inputs: {
    inputIds: number[][];
    attentionMask?: number[][];
    tokenTypeIds?: number[][];
    taskIds?: readonly number[];
  }): Promise<ModelOutput>;
  /** Whether the model takes token_type_ids (text pairs on BERT); they are passed only then. */
  readonly usesTokenTypeIds?: boolean;
  generate(
    prompts: number[][],
    opts: { maxNewTokens: number; eosTokenId?: number | number[]; taskIds?: readonly number[] },
  ): Promise<number[][]>;
}

export interface EvalBatch extends TrainBatch {
  inputIds: number[][];
  attentionMask: number[][];
  tokenTypeIds?: number[][];
  labels: number[][];
}

/** Evaluation batches: the examples in order, `batchSize` at a time, padded with `padId`. */
export function evalBatches(examples: readonly Example[], batchSize: number, padId: number): EvalBatch[] {
  return new BatchStream(examples, { batchSize, seed: 0, padId, shuffle: false }).epochBatches(0) as EvalBatch[];
}

export interface CompletionItem {
  prompt: number[];
  completion: string;
  /** The example's task (a routing-table row), for adapters that route by task. */
  taskId?: number;
}

/** Labels that do not fit the model's logits (the data loader should have caught them). */
export class EvalLabelError extends PeftkitError {}

export interface EvalMetrics {
  eval_loss: number;
  eval_perplexity: number;
  /** Sequence classification: share of examples whose argmax class is the label. */
  eval_accuracy?: number;
  /** Token classification: share of labelled tokens whose argmax class is the tag. */
  eval_token_accuracy?: number;
  /** (Token) classification: macro-averaged F1 over classes (see the module comment). */
  eval_macro_f1?: number;
  /** Token classification with BIO class names: seqeval's micro span precision, recall and F1. */
  eval_span_precision?: number;
  eval_span_recall?: number;
  eval_span_f1?: number;
  eval_exact_match?: number;
  eval_tokens: number;
}

/** −log softmax(z)[target] and the argmax (the first on ties), for one row of logits. */
function rowNll(z: Float32Array, target: number): { nll: number; arg: number } {
  let m = Number.NEGATIVE_INFINITY;
  let arg = 0;
  for (let j = 0; j < z.length; j++) if (z[j] > m) [m, arg] = [z[j], j];
  let s = 0;
  for (let j = 0; j < z.length; j++) s += Math.exp(z[j] - m);
  return { nll: Math.log(s) + m - z[target], arg };
}

/** Per-class counts for macro-F1: true positives, and how often each class was labelled / predicted. */
class ClassCounts {
  readonly tp = new Map<number, number>();
  readonly gold = new Map<number, number>();
  readonly pred = new Map<number, number>();

  add(target: number, predicted: number): void {
    const inc = (m: Map<number, number>, k: number) => m.set(k, (m.get(k) ?? 0) + 1);
    inc(this.gold, target);
    inc(this.pred, predicted);
    if (target === predicted) inc(this.tp, target);
  }

  /** Mean F1 over the classes seen as a label or a prediction; 0 when there are none. */
  macroF1(): number {
    const classes = new Set([...this.gold.keys(), ...this.pred.keys()]);
    if (classes.size === 0) return 0;
    let sum = 0;
    for (const c of classes) {
      const tp = this.tp.get(c) ?? 0;
      // F1 = 2tp / (2tp + fp + fn) = 2tp / (labelled + predicted); 0 when the class has no true positive.
      sum += tp === 0 ? 0 : (2 * tp) / ((this.gold.get(c) ?? 0) + (this.pred.get(c) ?? 0));
    }
    return sum / classes.size;
  }
}

/** Macro-F1 of (label, prediction) pairs; exported for tests and callers scoring their own predictions. */
export function macroF1(pairs: readonly (readonly [number, number])[]): number {
  const c = new ClassCounts();
  for (const [t, p] of pairs) c.add(t, p);
  return c.macroF1();
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
  classes: ClassCounts | null,
  /** Token classification: receives each row's (gold, predicted) class ids at its labelled positions. */
  onRow?: (gold: number[], predicted: number[]) => void,
): { nll: number; count: number; correct: number } {
  const v = shape[shape.length - 1];
  const t = shape.length === 2 ? 1 : shape[1];
  const acc = { nll: 0, count: 0, correct: 0 };
  labels.forEach((row, b) => {
    // Prompt tuning returns logits for its soft tokens too, in front of the real ones: skip them.
    const lead = shape.length === 2 ? 0 : Math.max(0, t - row.length);
    const gold: number[] = [];
    const predicted: number[] = [];
    for (let i = lead; i < t; i++) {
      const at = i - lead;
      const target = shape.length === 2 ? row[0] : causal ? row[at + 1] : row[at];
      if (target === undefined || target < 0) continue;
      // An id past the logits would give a NaN loss that looks like a result.
      if (target >= v || !Number.isInteger(target))
        throw new EvalLabelError(
          `label ${target} is out of range for the model's ${v} ${shape.length === 2 ? "classes" : "vocabulary entries"} (ids 0 to ${v - 1})`,
        );
      const r = rowNll(logits.subarray((b * t + i) * v, (b * t + i + 1) * v), target);
      acc.nll += r.nll;
      acc.count++;
      if (r.arg === target) acc.correct++;
      classes?.add(target, r.arg);
      gold.push(target);
      predicted.push(r.arg);
    }
    onRow?.(gold, predicted);
  });
  return acc;
}

export async function evaluate(
  model: EvalModel,
  batches: readonly EvalBatch[],
  opts: {
    causal: boolean;
    /** Sequence classification: adds eval_accuracy and eval_macro_f1. */
    classification: boolean;
    /** Token classification: adds eval_token_accuracy and eval_macro_f1 over labelled tokens. */
    tokenClassification?: boolean;
    /**
     * The class names (`names[id]`). For token classification whose names are all BIO tags
     * ("O", "B", "I-PER", ...), adds eval_span_precision, eval_span_recall and eval_span_f1.
     */
    labelNames?: readonly string[];
    completions?: readonly CompletionItem[];
    tokenizer?: PreTrainedTokenizer;
    maxNewTokens?: number;
  },
): Promise<EvalMetrics> {
  let nll = 0;
  let count = 0;
  let correct = 0;
  const classes = opts.classification || opts.tokenClassification ? new ClassCounts() : null;
  const names = opts.labelNames;
  const spans = opts.tokenClassification && names && isSpanTagSet(names) ? new SpanCounts() : null;
  const onRow = spans
    ? (gold: number[], predicted: number[]) => {
        const name = (id: number) => {
          const n = names?.[id];
          if (n === undefined)
            throw new EvalLabelError(`class ${id} has no name: the model has more classes than its ${names?.length} label names`);
          return n;
        };
        spans.add(gold.map(name), predicted.map(name));
      }
    : undefined;
  for (const b of batches) {
    const types = model.usesTokenTypeIds && b.tokenTypeIds ? { tokenTypeIds: b.tokenTypeIds } : {};
    const tasks = b.taskIds ? { taskIds: b.taskIds } : {};
    const out = await model.forward({ inputIds: b.inputIds, attentionMask: b.attentionMask, ...types, ...tasks });
    if (!out.logits) continue;
    const r = batchNll(out.logits.data, out.logits.shape, b.labels, opts.causal, classes, onRow);
    nll += r.nll;
    count += r.count;
    correct += r.correct;
  }
  const loss = count ? nll / count : Number.NaN;
  const m: EvalMetrics = { eval_loss: loss, eval_perplexity: Math.exp(loss), eval_tokens: count };
  if (opts.classification) m.eval_accuracy = count ? correct / count : 0;
  if (opts.tokenClassification) m.eval_token_accuracy = count ? correct / count : 0;
  if (classes) m.eval_macro_f1 = classes.macroF1();
  if (spans) {
    const sc = spans.scores();
    m.eval_span_precision = sc.precision;
    m.eval_span_recall = sc.recall;
    m.eval_span_f1 = sc.f1;
  }
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
      {
        maxNewTokens: Math.max(...budgets),
        eosTokenId: tok.eosTokenId ?? undefined,
        ...(chunk.every((c) => c.taskId !== undefined) ? { taskIds: chunk.map((c) => c.taskId as number) } : {}),
      },
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
