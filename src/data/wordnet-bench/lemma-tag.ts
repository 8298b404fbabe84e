/**
 * `lemma-tag`: token classification on the encoder. Find the word a definition defines inside an
 * example sentence: the record's words are the synset's definition, a "|" separator, then one of
 * its example sentences. The sentence words that spell one of the synset's lemmas are tagged "B"
 * (first word) and "I" (later words of a multi-word lemma); every other word, the definition's
 * included, is "O". Without the definition the target would be ambiguous ("an awkward pause
 * followed his remark" illustrates "awkward", but nothing in it says so).
 *
 * A lemma word also matches its regular inflections (dogs, barked, barking, carries, …), since
 * examples often use them; irregular ones (ran, geese) do not match, and sentences where no lemma
 * matches are left out.
 *
 * Words: runs of letters/digits (with inner apostrophes, hyphens and periods, as in "don't",
 * "well-known", "U.S" + ".") and single punctuation marks.
 */
import { type BenchContext, type BenchItem, keyOf, sample, type TaskData } from "./common.js";

export interface TokensTags {
  tokens: string[];
  tags: string[];
}

export const TAGS = ["B", "I", "O"] as const;

const WORD = /[\p{L}\p{N}]+(?:['’.-][\p{L}\p{N}]+)*|[^\s\p{L}\p{N}]/gu;

export function words(sentence: string): string[] {
  return sentence.match(WORD) ?? [];
}

/** The lemma word and its regular inflections, lowercased. */
export function forms(word: string): Set<string> {
  const w = word.toLowerCase();
  const out = new Set([w, `${w}s`, `${w}es`, `${w}ed`, `${w}d`, `${w}ing`, `${w}er`, `${w}est`]);
  if (w.endsWith("e")) out.add(`${w.slice(0, -1)}ing`);
  if (/[^aeiou]y$/.test(w)) for (const suf of ["ies", "ied", "ier", "iest"]) out.add(w.slice(0, -1) + suf);
  // Doubled final consonant: stop → stopped, stopping.
  if (/[^aeiou][aeiou][bdgklmnprt]$/.test(w)) for (const suf of ["ed", "ing", "er"]) out.add(w + w.at(-1) + suf);
  return out;
}

/** Tags for one sentence, or null when none of the synset's lemmas occurs in it. */
export function tagSentence(sentence: string, lemmas: readonly string[]): TokensTags | null {
  const tokens = words(sentence);
  const lower = tokens.map((t) => t.toLowerCase());
  const tags: string[] = tokens.map(() => "O");
  let found = false;
  // Longer lemmas first, so "hot dog" wins over "dog".
  const parts = [...lemmas]
    .map(words)
    .filter((p) => p.length > 0)
    .sort((a, b) => b.length - a.length);
  const partForms = parts.map((p) => p.map(forms));
  for (let i = 0; i < tokens.length; i++) {
    if (tags[i] !== "O") continue;
    for (const pf of partForms) {
      if (i + pf.length > tokens.length) continue;
      let ok = true;
      for (let k = 0; k < pf.length && ok; k++) ok = tags[i + k] === "O" && pf[k].has(lower[i + k]);
      if (!ok) continue;
      for (let k = 0; k < pf.length; k++) tags[i + k] = k === 0 ? "B" : "I";
      found = true;
      break;
    }
  }
  return found ? { tokens, tags } : null;
}

/** Separates the definition from the sentence in a record's words. */
export const SEPARATOR = "|";

export function lemmaTagTask(ctx: BenchContext, maxTrain = 4000, maxEval = 1000): TaskData<TokensTags> {
  const sides: Record<"train" | "eval", BenchItem<TokensTags>[]> = { train: [], eval: [] };
  const seen = new Set<string>();
  for (const s of ctx.wn.synsets) {
    const side = ctx.side(s);
    if (!side || !s.definition || s.examples.length === 0) continue;
    const def = words(s.definition);
    if (def.length > 24 || def.includes(SEPARATOR)) continue;
    for (const e of s.examples) {
      const t = tagSentence(e, s.lemmas);
      const key = `${s.definition}|${e}`;
      if (!t || t.tokens.length > 32 || t.tokens.includes(SEPARATOR) || seen.has(key)) continue;
      seen.add(key);
      const record = { tokens: [...def, SEPARATOR, ...t.tokens], tags: [...def.map(() => "O"), "O", ...t.tags] };
      sides[side].push({ record, sources: [keyOf(s)] });
    }
  }
  return { train: sample(sides.train, maxTrain, 0x5eed_0003), eval: sample(sides.eval, maxEval, 0x5eed_0013) };
}
