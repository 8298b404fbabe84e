/**
 * What the wordnet-bench task builders share: the split rule, the text-overlap guard, stable
 * ordering and class-balanced sampling.
 *
 * The split rule: a training example is built only from training synsets, an evaluation example
 * only from held-out synsets (src/data/split.ts) whose definition and example sentences occur
 * nowhere in the training synsets' text. The second condition matters because WordNet repeats
 * text: a held-out synset may share its definition or an example with a training synset, and the
 * pretrained models read that training text.
 */
import { Rng } from "../../util/rng.js";
import { synsetText } from "../corpus.js";
import { roundRobin } from "../round-robin.js";
import { fnv1a, isHeldOut } from "../split.js";
import { type Synset, synsetKey, type WordNet } from "../wordnet.js";

/** One example of a task and the synsets whose text went into it. */
export interface BenchItem<R> {
  record: R;
  /** Synset keys (file:offset). */
  sources: string[];
}

export interface TaskData<R> {
  train: BenchItem<R>[];
  eval: BenchItem<R>[];
}

/** A loaded WordNet plus what every builder needs to know about its training text. */
export class BenchContext {
  readonly wn: WordNet;
  /** Every line of the training synsets' text blocks, and their bare definitions. */
  private readonly trainText = new Set<string>();

  constructor(wn: WordNet) {
    this.wn = wn;
    for (const s of wn.synsets) {
      if (isHeldOut(s.file, s.offset)) continue;
      for (const line of synsetText(s).split("\n")) if (line) this.trainText.add(line);
      if (s.definition) this.trainText.add(s.definition);
    }
  }

  /** Training synsets feed training examples. */
  isTrain(s: Synset): boolean {
    return !isHeldOut(s.file, s.offset);
  }

  /** A held-out synset none of whose text (definition, "lemma: definition" line, examples) training text repeats. */
  isEval(s: Synset): boolean {
    if (!isHeldOut(s.file, s.offset)) return false;
    if (s.definition && (this.trainText.has(s.definition) || this.trainText.has(`${s.lemmas[0]}: ${s.definition}`))) return false;
    return !s.examples.some((e) => this.trainText.has(e));
  }

  /** "train" / "eval" for a synset a builder may use on that side, null for neither. */
  side(s: Synset): "train" | "eval" | null {
    return this.isTrain(s) ? "train" : this.isEval(s) ? "eval" : null;
  }
}

export function keyOf(s: Synset): string {
  return synsetKey(s.file, s.offset);
}

/** A stable pseudo-random rank of a synset for one task (the salt), independent of file order. */
export function rank(salt: string, s: Synset): number {
  return fnv1a(`${salt}:${s.file}:${s.offset}`);
}

/** Groups items by a label (labels in `labels` order), each group sorted by `order`, then round-robin. */
export function balanced<T>(
  items: readonly T[],
  labels: readonly string[],
  labelOf: (x: T) => string,
  order: (x: T) => number,
  n: number,
): T[] {
  const byLabel = new Map<string, T[]>(labels.map((l) => [l, []]));
  for (const x of items) byLabel.get(labelOf(x))?.push(x);
  return roundRobin(
    labels.map((l) => byLabel.get(l)!.sort((a, b) => order(a) - order(b))),
    n,
  );
}

/** A seeded sample of `n` items in shuffled order (Fisher-Yates on a copy). */
export function sample<T>(xs: readonly T[], n: number, seed: number): T[] {
  const a = [...xs];
  const rng = new Rng(seed);
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a.slice(0, n);
}
