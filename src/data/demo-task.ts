/**
 * The demo's fine-tuning task, built from WordNet hypernyms: given a noun and its definition,
 * name the kind of thing it is.
 *
 *   prompt:     "poodle: an intelligent dog with a heavy curly coat\npoodle is a kind of"
 *   completion: " dog"
 *
 * The pretraining corpus has "lemma: definition" lines but never the "is a kind of" question, so
 * the base model was not trained to answer it; it has to learn to pick the genus word (the
 * hypernym) out of the definition. Only nouns whose definition contains a one-word hypernym
 * lemma are used. Training pairs come from training synsets and evaluation pairs from held-out
 * synsets, whose definitions the base model never saw.
 */
import { fnv1a, isHeldOut } from "./split.js";
import { type Synset, WordNet } from "./wordnet.js";

export interface PromptCompletion {
  prompt: string;
  completion: string;
}

export interface DemoTaskOptions {
  /** Most training pairs to return (default all). */
  maxTrain?: number;
  /** Most evaluation pairs to return (default 300). */
  maxEval?: number;
  /** Longest definition kept, in characters (default 90), so prompts stay short. */
  maxDefinitionChars?: number;
  /** A loaded WordNet (nouns at least); loaded when absent. */
  wordnet?: WordNet;
}

export interface DemoTask {
  train: PromptCompletion[];
  eval: PromptCompletion[];
}

/** The question appended after the definition line. */
export const KIND_OF = "is a kind of";

const SIMPLE_WORD = /^[a-z]{3,12}$/;

/** The pair of one noun synset, or null when it does not fit the task. */
export function hypernymPair(wn: WordNet, s: Synset, maxDefinitionChars = 90): PromptCompletion | null {
  if (s.file !== "noun") return null;
  const lemma = s.lemmas[0];
  const def = s.definition;
  if (!def || def.length > maxDefinitionChars || lemma.length > 24) return null;
  const words = def.toLowerCase().split(/[^a-z]+/);
  const position = new Map<string, number>();
  words.forEach((w, i) => {
    if (!position.has(w)) position.set(w, i);
  });
  let best: string | null = null;
  let bestAt = Number.POSITIVE_INFINITY;
  for (const h of wn.related(s, ["@", "@i"])) {
    for (const l of h.lemmas) {
      if (!SIMPLE_WORD.test(l) || l === lemma.toLowerCase()) continue;
      const at = position.get(l);
      if (at !== undefined && at < bestAt) {
        best = l;
        bestAt = at;
      }
    }
  }
  if (best === null) return null;
  return { prompt: `${lemma}: ${def}\n${lemma} ${KIND_OF}`, completion: ` ${best}` };
}

/** Stable order independent of file order: by a hash of the synset key. */
function hashOrder(s: Synset): number {
  return fnv1a(`order:${s.file}:${s.offset}`);
}

export function demoTask(opts: DemoTaskOptions = {}): DemoTask {
  const wn = opts.wordnet ?? WordNet.load({ files: ["noun"] });
  const train: [number, PromptCompletion][] = [];
  const evalPairs: [number, PromptCompletion][] = [];
  for (const s of wn.synsets) {
    const p = hypernymPair(wn, s, opts.maxDefinitionChars);
    if (!p) continue;
    (isHeldOut(s.file, s.offset) ? evalPairs : train).push([hashOrder(s), p]);
  }
  const take = (xs: [number, PromptCompletion][], n: number) =>
    xs
      .sort((a, b) => a[0] - b[0])
      .slice(0, n)
      .map((x) => x[1]);
  return { train: take(train, opts.maxTrain ?? Number.POSITIVE_INFINITY), eval: take(evalPairs, opts.maxEval ?? 300) };
}

/**
 * Exact match: the generated continuation, cut at the first newline or end-of-text token text,
 * equals the completion (surrounding whitespace ignored).
 */
export function exactMatch(generated: string, completion: string, eosText = "<|endoftext|>"): boolean {
  let g = generated;
  const nl = g.indexOf("\n");
  if (nl >= 0) g = g.slice(0, nl);
  const e = g.indexOf(eosText);
  if (e >= 0) g = g.slice(0, e);
  return g.trim() === completion.trim();
}
