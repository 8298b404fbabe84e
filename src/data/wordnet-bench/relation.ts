/**
 * `relation`: text-pair classification on the encoder. Two "lemma: definition" lines A and B
 * of the same part of speech; the label says how B relates to A:
 *   "hypernym"  B is a direct hypernym of A (A is a kind of B),
 *   "hyponym"   B is a direct hyponym of A (B is a kind of A),
 *   "unrelated" neither, nor are they the same synset.
 * Each hypernym edge (through "@" or instance "@i" pointers) appears once, in a seeded random
 * orientation. Unrelated pairs are random pairs of the same part of speech with no direct
 * hypernym/hyponym link. The three labels are balanced.
 *
 * Leakage rule: a pair goes to training when both synsets are training synsets, to evaluation
 * when both are held out (and their text is not repeated in training text); a pair mixing the
 * two sides is dropped. So no evaluation pair contains any text the models were pretrained on.
 */

import { Rng } from "../../util/rng.js";
import { synsetText } from "../corpus.js";
import type { Synset } from "../wordnet.js";
import { type BenchContext, type BenchItem, balanced, keyOf, type TaskData } from "./common.js";

export interface TextPairLabel {
  text: string;
  text_pair: string;
  label: string;
}

export const RELATION_LABELS = ["hypernym", "hyponym", "unrelated"] as const;

/** The "lemma: definition" line of a synset, as the pretraining text writes it. */
function line(s: Synset): string {
  return synsetText(s).split("\n")[0];
}

export function relationTask(ctx: BenchContext, maxTrain = 4000, maxEval = 1000): TaskData<TextPairLabel> {
  const rng = new Rng(0x5eed_0002);
  // Records are made only for the picked pairs: there are ~80k training edges.
  type X = { order: number; a: Synset; b: Synset; label: string };
  const sides: Record<"train" | "eval", X[]> = { train: [], eval: [] };
  const pool: Record<"train" | "eval", Synset[]> = { train: [], eval: [] };
  const linked = new Set<string>();
  for (const s of ctx.wn.synsets) {
    if ((s.file !== "noun" && s.file !== "verb") || !s.definition) continue;
    const side = ctx.side(s);
    if (!side) continue;
    pool[side].push(s);
    for (const h of ctx.wn.related(s, ["@", "@i"])) {
      linked.add(`${keyOf(s)}>${keyOf(h)}`);
      if (ctx.side(h) !== side || !h.definition) continue;
      const up = rng.next() < 0.5;
      sides[side].push({ order: rng.next(), a: up ? s : h, b: up ? h : s, label: up ? "hypernym" : "hyponym" });
    }
  }
  const caps = { train: maxTrain, eval: maxEval };
  for (const side of ["train", "eval"] as const) {
    // A third of the cap, or as many as there are edges if fewer, so the three labels balance.
    const ss = pool[side];
    const want = Math.min(sides[side].length, Math.ceil(caps[side] / 3));
    for (let made = 0, tries = 0; made < want && tries < want * 10; tries++) {
      const a = ss[Math.floor(rng.next() * ss.length)];
      const b = ss[Math.floor(rng.next() * ss.length)];
      if (a === b || a.file !== b.file) continue;
      if (linked.has(`${keyOf(a)}>${keyOf(b)}`) || linked.has(`${keyOf(b)}>${keyOf(a)}`)) continue;
      sides[side].push({ order: rng.next(), a, b, label: "unrelated" });
      made++;
    }
  }
  const pick = (xs: X[], n: number): BenchItem<TextPairLabel>[] =>
    balanced(
      xs,
      RELATION_LABELS,
      (x) => x.label,
      (x) => x.order,
      n,
    ).map((x) => ({
      record: { text: line(x.a), text_pair: line(x.b), label: x.label },
      sources: [keyOf(x.a), keyOf(x.b)],
    }));
  return { train: pick(sides.train, maxTrain), eval: pick(sides.eval, maxEval) };
}
