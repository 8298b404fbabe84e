/**
 * The pretraining text of models/wordnet-bert and how it becomes model rows. The text is exactly
 * the demo decoder's (pretrainingBlocks: training synsets only), so both embedded models read the
 * same training split and no held-out synset reaches either.
 */
import { pretrainingBlocks } from "../../src/data/corpus.js";
import type { WordNet } from "../../src/data/wordnet.js";

/** The encoder's pretraining blocks, one per training synset, in a seeded order. */
export function encoderPretrainingBlocks(wn: WordNet, seed: number): string[] {
  return pretrainingBlocks(wn, seed);
}

/**
 * Packs blocks into rows of `seqLen` ids, RoBERTa's FULL-SENTENCES way: `<s>`, then content that
 * runs across block boundaries (each block followed by `</s>`), then `</s>`. A trailing partial
 * row is dropped.
 */
export function packRows(blocks: readonly number[][], seqLen: number, bos: number, eos: number): number[][] {
  const room = seqLen - 2;
  const rows: number[][] = [];
  let cur: number[] = [];
  for (const b of blocks) {
    for (const id of [...b, eos]) {
      cur.push(id);
      if (cur.length === room) {
        rows.push([bos, ...cur, eos]);
        cur = [];
      }
    }
  }
  return rows;
}
