/**
 * Entity (span) precision, recall and F1 of tag sequences, as seqeval scores them in its default
 * mode (chakki-works/seqeval, seqeval/metrics/sequence_labeling.py: get_entities, start_of_chunk,
 * end_of_chunk, f1_score), which is what transformers' token classification examples report.
 *
 * A tag is "O" or a prefix B, I, E or S, optionally followed by "-TYPE" ("B", "I-PER"); an untyped
 * tag has the type "_". A span is (type, first, last) and counts only when a predicted span has the
 * same type, start and end as a gold one. Spans never cross sequences. The chunking is lenient
 * (IOB2 read as seqeval's default mode does): a stray I after O (or after a span of another
 * type) starts a span instead of being dropped.
 *
 * Micro averages over all spans: precision = correct / predicted, recall = correct / gold, each 0
 * when its denominator is 0, and F1 = 2PR / (P + R), 0 when P + R = 0. So predicting no span at
 * all scores 0, not a high floor as token accuracy does.
 */

export interface Span {
  type: string;
  start: number;
  /** Inclusive, as seqeval's. */
  end: number;
}

export interface SpanScores {
  precision: number;
  recall: number;
  f1: number;
  /** Span counts behind the scores. */
  gold: number;
  predicted: number;
  correct: number;
}

const TAG = /^(?:O|[BIES](?:-.+)?)$/;

/** Whether every name is a tag this chunking understands (so span metrics mean something). */
export function isSpanTagSet(names: readonly string[]): boolean {
  return names.length > 0 && names.every((n) => TAG.test(n));
}

function split(tag: string): { prefix: string; type: string } {
  return { prefix: tag[0], type: tag.length > 2 ? tag.slice(2) : "_" };
}

function endsBefore(prev: { prefix: string; type: string }, cur: { prefix: string; type: string }): boolean {
  if (prev.prefix === "O") return false;
  if (prev.prefix === "E" || prev.prefix === "S") return true;
  if (cur.prefix === "B" || cur.prefix === "S" || cur.prefix === "O") return true;
  return prev.type !== cur.type;
}

function startsAt(prev: { prefix: string; type: string }, cur: { prefix: string; type: string }): boolean {
  if (cur.prefix === "O") return false;
  if (cur.prefix === "B" || cur.prefix === "S") return true;
  // I or E: continues a span of its type that is still open, else opens one.
  if (prev.prefix === "O" || prev.prefix === "E" || prev.prefix === "S") return true;
  return prev.type !== cur.type;
}

/** The spans of one tag sequence; throws on a tag outside the scheme (see isSpanTagSet). */
export function spansOf(tags: readonly string[]): Span[] {
  const spans: Span[] = [];
  let prev = { prefix: "O", type: "_" };
  let start = 0;
  for (let i = 0; i <= tags.length; i++) {
    const t = i < tags.length ? tags[i] : "O";
    if (!TAG.test(t)) throw new Error(`span F1: "${t}" is not a BIO tag (O, B, I, E, S, optionally with -TYPE)`);
    const cur = split(t);
    if (endsBefore(prev, cur)) spans.push({ type: prev.type, start, end: i - 1 });
    if (startsAt(prev, cur)) start = i;
    prev = cur;
  }
  return spans;
}

/** Accumulates span counts over (gold, predicted) tag sequences of equal length. */
export class SpanCounts {
  gold = 0;
  predicted = 0;
  correct = 0;

  add(gold: readonly string[], predicted: readonly string[]): void {
    if (gold.length !== predicted.length)
      throw new Error(`span F1: ${gold.length} gold tags but ${predicted.length} predicted ones in one sequence`);
    const g = spansOf(gold);
    const p = spansOf(predicted);
    const key = (s: Span) => `${s.start}:${s.end}:${s.type}`;
    const goldKeys = new Set(g.map(key));
    this.gold += g.length;
    this.predicted += p.length;
    for (const s of p) if (goldKeys.has(key(s))) this.correct++;
  }

  scores(): SpanScores {
    const precision = this.predicted ? this.correct / this.predicted : 0;
    const recall = this.gold ? this.correct / this.gold : 0;
    const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
    return { precision, recall, f1, gold: this.gold, predicted: this.predicted, correct: this.correct };
  }
}

/** Span scores of whole sequences: `pairs[k]` = [gold tags, predicted tags] of sequence k. */
export function spanScores(pairs: readonly (readonly [readonly string[], readonly string[]])[]): SpanScores {
  const c = new SpanCounts();
  for (const [g, p] of pairs) c.add(g, p);
  return c.scores();
}
