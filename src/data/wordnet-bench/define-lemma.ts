/**
 * `define-lemma`: generation on the decoder, the pretraining line read backwards. Given a
 * definition, produce the synset's first lemma (the one the "lemma: definition" lines use):
 *
 *   {"prompt": "definition: a young dog\nword:", "completion": " puppy"}
 *
 * Scored by exact match. Kept: single lowercase words of 3-20 letters that the definition does
 * not itself contain (in any regular inflection), with definitions of at most 90 characters.
 * An evaluation answer is always a word that is the first lemma of some training synset, so the
 * model read it in pretraining; only the held-out definition is new to it.
 */

import type { PromptCompletion } from "../demo-task.js";
import type { Synset } from "../wordnet.js";
import { type BenchContext, type BenchItem, keyOf, rank, type TaskData } from "./common.js";
import { forms, words } from "./lemma-tag.js";

function item(s: Synset): PromptCompletion | null {
  const lemma = s.lemmas[0];
  const def = s.definition;
  if (!/^[a-z]{3,20}$/.test(lemma) || !def || def.length > 90) return null;
  const f = forms(lemma);
  if (words(def).some((w) => f.has(w.toLowerCase()))) return null;
  return { prompt: `definition: ${def}\nword:`, completion: ` ${lemma}` };
}

export function defineLemmaTask(ctx: BenchContext, maxTrain = 4000, maxEval = 500): TaskData<PromptCompletion> {
  const known = new Set<string>();
  for (const s of ctx.wn.synsets) if (ctx.isTrain(s)) known.add(s.lemmas[0]);
  type X = { rank: number; item: BenchItem<PromptCompletion> };
  const sides: Record<"train" | "eval", X[]> = { train: [], eval: [] };
  const prompts = { train: new Set<string>(), eval: new Set<string>() };
  for (const s of ctx.wn.synsets) {
    const side = ctx.side(s);
    const p = side && item(s);
    if (!side || !p || prompts[side].has(p.prompt)) continue;
    if (side === "eval" && !known.has(s.lemmas[0])) continue;
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
