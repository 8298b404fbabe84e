/**
 * `lexname`: single-text classification on the encoder. A synset's definition → the
 * lexicographer file it was filed in (45 classes: noun.animal, verb.motion, adj.all, …).
 * Sampled round-robin over the classes, so small files (noun.Tops, verb.weather) are kept
 * whole and the large ones (noun.artifact, adj.all) capped.
 */
import { type BenchContext, balanced, keyOf, rank, type TaskData } from "./common.js";
import { LEXNAMES } from "./lexnames.js";

export interface TextLabel {
  text: string;
  label: string;
}

export function lexnameTask(ctx: BenchContext, maxTrain = 4000, maxEval = 1000): TaskData<TextLabel> {
  type X = { rank: number; item: { record: TextLabel; sources: string[] } };
  const sides: Record<"train" | "eval", X[]> = { train: [], eval: [] };
  for (const s of ctx.wn.synsets) {
    const side = ctx.side(s);
    const label = LEXNAMES[s.lexFile];
    if (!side || !s.definition || label === undefined) continue;
    sides[side].push({ rank: rank("lexname", s), item: { record: { text: s.definition, label }, sources: [keyOf(s)] } });
  }
  const pick = (xs: X[], n: number) =>
    balanced(
      xs,
      LEXNAMES,
      (x) => x.item.record.label,
      (x) => x.rank,
      n,
    ).map((x) => x.item);
  return { train: pick(sides.train, maxTrain), eval: pick(sides.eval, maxEval) };
}
