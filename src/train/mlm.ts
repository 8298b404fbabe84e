/**
 * Masked-language-model inputs, as transformers' DataCollatorForLanguageModeling makes them: each
 * ordinary token is selected with probability `probability` (15%); a selected token becomes
 * <mask> 80% of the time, a random token 10%, and stays as it is 10%. Labels hold the original
 * token at selected positions and -100 (ignored by the loss) everywhere else, so the loss is the
 * cross-entropy over selected positions with no shift. Deterministic given the Rng.
 */
import type { Rng } from "../util/rng.js";

export interface MaskOptions {
  maskTokenId: number;
  /** Random replacements are drawn uniformly from [0, vocabSize), as transformers draws from len(tokenizer). */
  vocabSize: number;
  /** Ids never selected: <s>, </s>, <pad> and the like. */
  specialIds: ReadonlySet<number>;
  /** Default 0.15. */
  probability?: number;
}

export interface MaskedBatch {
  inputIds: number[][];
  labels: number[][];
}

export const IGNORE_INDEX = -100;

export function maskTokens(rows: readonly (readonly number[])[], rng: Rng, opts: MaskOptions): MaskedBatch {
  const p = opts.probability ?? 0.15;
  const inputIds: number[][] = [];
  const labels: number[][] = [];
  for (const row of rows) {
    const ids = [...row];
    const lab = new Array<number>(row.length).fill(IGNORE_INDEX);
    for (let t = 0; t < row.length; t++) {
      if (opts.specialIds.has(row[t]) || rng.next() >= p) continue;
      lab[t] = row[t];
      const r = rng.next();
      if (r < 0.8) ids[t] = opts.maskTokenId;
      else if (r < 0.9) ids[t] = Math.floor(rng.next() * opts.vocabSize);
    }
    inputIds.push(ids);
    labels.push(lab);
  }
  return { inputIds, labels };
}

/**
 * Top-1 accuracy of masked-LM logits [B, T, V] (row-major) at the labelled positions (label ≠ -100):
 * the fraction where the highest logit is the original token.
 */
export function maskedAccuracy(
  logits: ArrayLike<number>,
  vocab: number,
  labels: readonly (readonly number[])[],
): { correct: number; total: number } {
  let correct = 0;
  let total = 0;
  const seq = labels[0]?.length ?? 0;
  for (let b = 0; b < labels.length; b++) {
    for (let t = 0; t < seq; t++) {
      const label = labels[b][t];
      if (label === IGNORE_INDEX) continue;
      const off = (b * seq + t) * vocab;
      let best = 0;
      for (let k = 1; k < vocab; k++) if (logits[off + k] > logits[off + best]) best = k;
      total++;
      if (best === label) correct++;
    }
  }
  return { correct, total };
}
