/**
 * The pretraining text of the demo model: for every training synset (never a held-out one), a
 * "lemma: definition" line followed by the gloss's example sentences, one per line.
 */
import { Rng } from "../util/rng.js";
import { isHeldOut } from "./split.js";
import type { Synset, WordNet } from "./wordnet.js";

/** The text block of one synset ("lemma: definition\nexample\n…"), ending with a newline. */
export function synsetText(s: Synset): string {
  let t = s.definition ? `${s.lemmas[0]}: ${s.definition}\n` : "";
  for (const e of s.examples) t += `${e}\n`;
  return t;
}

/**
 * The training synsets' blocks in a seeded shuffled order (so neighbouring blocks in a packed
 * sequence are unrelated rather than grouped by WordNet's lexicographer files).
 */
export function pretrainingBlocks(wn: WordNet, seed: number): string[] {
  const blocks = wn.synsets
    .filter((s) => !isHeldOut(s.file, s.offset))
    .map(synsetText)
    .filter((t) => t.length > 0);
  const rng = new Rng(seed);
  for (let i = blocks.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    const x = blocks[i];
    blocks[i] = blocks[j];
    blocks[j] = x;
  }
  return blocks;
}

/** The held-out synsets' blocks (for a validation loss on text the model never saw). */
export function heldOutBlocks(wn: WordNet): string[] {
  return wn.synsets
    .filter((s) => isHeldOut(s.file, s.offset))
    .map(synsetText)
    .filter((t) => t.length > 0);
}
