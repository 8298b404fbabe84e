/**
 * The demo's fine-tuning task, built from WordNet's hypernym relation: given a noun and its
 * definition, name the broad kind of thing it is, i.e. which of a dozen category synsets
 * (person, animal, plant, food, disease, vehicle, device, structure, location, substance, act,
 * feeling) is its nearest ancestor through hypernym / instance-hypernym pointers.
 *
 *   prompt:     "poodle: an intelligent dog with a heavy curly solid-colored coat …\npoodle is a kind of"
 *   completion: " animal"
 *
 * The pretraining corpus has "lemma: definition" lines but never the "is a kind of" question, so
 * the base model was not trained to answer it. Training pairs come from training synsets and
 * evaluation pairs from held-out synsets, whose definitions the base model never saw. Both are
 * class-balanced, so always answering the most common category scores about 1/12.
 *
 * (Asking for the exact hypernym word instead, e.g. " dog", needs the model to copy a word out of
 * the definition, which a model this small and briefly trained does not learn in minutes.)
 */
import { roundRobin } from "./round-robin.js";
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

/**
 * The answer categories: WordNet noun synsets (by offset in data.noun) and the word the task
 * expects for each. A noun's answer is the category nearest to it in its hypernym closure.
 */
export const CATEGORIES: readonly { offset: number; label: string }[] = [
  { offset: 7846, label: "person" },
  { offset: 15568, label: "animal" },
  { offset: 17402, label: "plant" },
  { offset: 21445, label: "food" },
  { offset: 14093842, label: "disease" },
  { offset: 4531608, label: "vehicle" },
  { offset: 3187746, label: "device" },
  { offset: 4348764, label: "structure" },
  { offset: 27365, label: "location" },
  { offset: 20270, label: "substance" },
  { offset: 30657, label: "act" },
  { offset: 26390, label: "feeling" },
];

const CATEGORY_INDEX = new Map(CATEGORIES.map((c, i) => [c.offset, i]));

/**
 * The category of a noun synset: breadth-first up hypernym and instance-hypernym pointers, the
 * first category synset reached (ties at one depth: CATEGORIES order). Null if none is reached
 * or the synset is a category itself.
 */
export function categoryOf(wn: WordNet, s: Synset): string | null {
  if (s.file !== "noun" || CATEGORY_INDEX.has(s.offset)) return null;
  let frontier = [s];
  const seen = new Set<number>([s.offset]);
  while (frontier.length > 0) {
    const next: Synset[] = [];
    let best = Number.POSITIVE_INFINITY;
    for (const x of frontier) {
      for (const h of wn.related(x, ["@", "@i"])) {
        if (seen.has(h.offset)) continue;
        seen.add(h.offset);
        const c = CATEGORY_INDEX.get(h.offset);
        if (c !== undefined) best = Math.min(best, c);
        next.push(h);
      }
    }
    if (best < CATEGORIES.length) return CATEGORIES[best].label;
    frontier = next;
  }
  return null;
}

/** The pair of one noun synset, or null when it does not fit the task. */
export function categoryPair(wn: WordNet, s: Synset, maxDefinitionChars = 90): PromptCompletion | null {
  const lemma = s.lemmas[0];
  const def = s.definition;
  if (s.file !== "noun" || !def || def.length > maxDefinitionChars || lemma.length > 24) return null;
  const label = categoryOf(wn, s);
  if (label === null) return null;
  return { prompt: `${lemma}: ${def}\n${lemma} ${KIND_OF}`, completion: ` ${label}` };
}

/** Stable order independent of file order: by a hash of the synset key. */
function hashOrder(s: Synset): number {
  return fnv1a(`order:${s.file}:${s.offset}`);
}

/**
 * Interleaves the categories (one pair of each in turn, each category in hash order) so any
 * prefix is class-balanced until a category runs out: guessing one category scores about
 * 1/CATEGORIES.length, not the share of the largest one.
 */
function balanced(xs: [number, PromptCompletion][], n: number): PromptCompletion[] {
  const groups = CATEGORIES.map((c) =>
    xs
      .filter((x) => x[1].completion === ` ${c.label}`)
      .sort((a, b) => a[0] - b[0])
      .map((x) => x[1]),
  );
  return roundRobin(groups, n);
}

export function demoTask(opts: DemoTaskOptions = {}): DemoTask {
  const wn = opts.wordnet ?? WordNet.load({ files: ["noun"] });
  const train: [number, PromptCompletion][] = [];
  const evalPairs: [number, PromptCompletion][] = [];
  for (const s of wn.synsets) {
    const p = categoryPair(wn, s, opts.maxDefinitionChars);
    if (!p) continue;
    (isHeldOut(s.file, s.offset) ? evalPairs : train).push([hashOrder(s), p]);
  }
  return { train: balanced(train, opts.maxTrain ?? Number.POSITIVE_INFINITY), eval: balanced(evalPairs, opts.maxEval ?? 300) };
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
