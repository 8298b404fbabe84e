/**
 * `define-lemma`: generation on the decoder, the pretraining line "lemma: definition" read
 * backwards. Given a definition, produce the word it defines:
 *
 *   {"prompt": "definition: deposit\nword:", "completion": " cast"}
 *
 * Scored by exact match. The answers are the VOCABULARY_SIZE most polysemous single words of the
 * training synsets (break, cut, make, play, run, …: each has at least ~19 training senses), so
 * the decoder read every answer many times in pretraining, each with several definitions; only
 * the held-out sense's definition is new. A synset is used when exactly one of its lemmas is in
 * that vocabulary, its definition is at most 90 characters and does not contain the word itself
 * in any regular inflection.
 *
 * (An open vocabulary, any single-word lemma, was tried first: after 1000 LoRA steps on
 * models/wordnet-llama exact match stayed at 0 and the model wrote frequent unrelated words, so
 * it could not tell methods apart; this closed-vocabulary version is the hard task that remains.)
 */
import type { PromptCompletion } from "../demo-task.js";
import type { Synset } from "../wordnet.js";
import { type BenchContext, type BenchItem, keyOf, rank, type TaskData } from "./common.js";
import { forms, words } from "./lemma-tag.js";

export const VOCABULARY_SIZE = 100;

const WORD = /^[a-z]{3,20}$/;

/** The answer words: the single words with the most training senses (ties alphabetical). */
export function answerVocabulary(ctx: BenchContext, size = VOCABULARY_SIZE): string[] {
  const senses = new Map<string, number>();
  for (const s of ctx.wn.synsets) {
    if (!ctx.isTrain(s)) continue;
    for (const l of new Set(s.lemmas)) if (WORD.test(l)) senses.set(l, (senses.get(l) ?? 0) + 1);
  }
  return [...senses]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .slice(0, size)
    .map((x) => x[0]);
}

function item(s: Synset, vocab: ReadonlySet<string>): PromptCompletion | null {
  const hits = s.lemmas.filter((l) => vocab.has(l));
  const def = s.definition;
  if (new Set(hits).size !== 1 || !def || def.length > 90) return null;
  const f = forms(hits[0]);
  if (words(def).some((w) => f.has(w.toLowerCase()))) return null;
  return { prompt: `definition: ${def}\nword:`, completion: ` ${hits[0]}` };
}

export function defineLemmaTask(ctx: BenchContext, maxTrain = 4000, maxEval = 500): TaskData<PromptCompletion> {
  const vocab = new Set(answerVocabulary(ctx));
  type X = { rank: number; item: BenchItem<PromptCompletion> };
  const sides: Record<"train" | "eval", X[]> = { train: [], eval: [] };
  const prompts = { train: new Set<string>(), eval: new Set<string>() };
  for (const s of ctx.wn.synsets) {
    const side = ctx.side(s);
    const p = side && item(s, vocab);
    // One record per definition: a repeated definition would be a duplicate question.
    if (!side || !p || prompts[side].has(p.prompt)) continue;
    prompts[side].add(p.prompt);
    sides[side].push({ rank: rank("define-lemma", s), item: { record: p, sources: [keyOf(s)] } });
  }
  const pick = (xs: X[], n: number) =>
    xs
      .sort((a, b) => a.rank - b.rank)
      .slice(0, n)
      .map((x) => x.item);
  return { train: pick(sides.train, maxTrain), eval: pick(sides.eval, maxEval) };
}
