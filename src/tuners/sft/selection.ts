/**
 * SpIEL's drop-and-regrow of one module's index set (AlanAnsell/peft, sft/trainer.py,
 * SftSelector.select_rigl), on the host:
 * 1. r = ⌊k·p⌋ slots with the smallest |value| are dropped;
 * 2. candidates (the phase's top-k |∂L/∂W| positions) already among the kept indices are removed;
 *    of the rest, the r with the largest |Σ gradient| over the phase grow;
 * 3. a position both dropped and regrown keeps its slot; the other dropped slots take the new
 *    positions with value 0 (the dropped values are discarded, as the authors do).
 * Ties go to the lower slot or candidate order, so the choice is reproducible.
 */

export interface Regrowth {
  /** Slots whose position changed. */
  readonly slots: Int32Array;
  /** Their new positions. */
  readonly positions: Int32Array;
  /** Which candidate each new position came from (its accumulated gradient seeds the moments). */
  readonly fromCandidate: Int32Array;
}

/** Indices of the n smallest (or largest) of `score` among `among`, ties to the earlier entry. */
function pick(score: (i: number) => number, among: number[], n: number, largest: boolean): number[] {
  const order = [...among].sort((a, b) => (largest ? score(b) - score(a) : score(a) - score(b)) || a - b);
  return order.slice(0, n);
}

export function regrow(
  indices: Int32Array,
  values: ArrayLike<number>,
  candidates: Int32Array,
  gradientSum: ArrayLike<number>,
  p: number,
): Regrowth {
  const k = indices.length;
  const r = Math.floor(k * p);
  const all = Array.from({ length: k }, (_, i) => i);
  const dropped = pick((i) => Math.abs(values[i]), all, r, false);
  const outgoing = new Set(dropped.map((s) => indices[s]));
  const kept = new Set<number>();
  for (const i of indices) if (!outgoing.has(i)) kept.add(i);
  const eligible = Array.from({ length: candidates.length }, (_, j) => j).filter((j) => !kept.has(candidates[j]));
  const grown = pick((j) => Math.abs(gradientSum[j]), eligible, Math.min(r, eligible.length), true);
  // A position both dropped and regrown stays where it is, with its value and moments.
  const incoming = new Set(grown.map((j) => candidates[j]));
  const freed = dropped.filter((s) => !incoming.has(indices[s]));
  const arriving = grown.filter((j) => !outgoing.has(candidates[j]));
  const n = Math.min(freed.length, arriving.length);
  return {
    slots: Int32Array.from(freed.slice(0, n)),
    positions: Int32Array.from(arriving.slice(0, n), (j) => candidates[j]),
    fromCandidate: Int32Array.from(arriving.slice(0, n)),
  };
}

/**
 * The share of each index set replaced at a reselection after `step` updates of `total`
 * (SftSelector.end_selection_phase): "linear" replaces everything at the first (the random
 * start), then p₀·(1 − step/total); "cosine" is p₀·(1 + cos(π·step/total))/2 from the first on.
 */
export function reselectionRate(
  step: number,
  firstSelection: number,
  total: number,
  p0: number,
  policy: "linear" | "cosine" = "linear",
): number {
  if (policy === "cosine") return (p0 * (1 + Math.cos((Math.PI * Math.min(step, total)) / total))) / 2;
  if (step === firstSelection) return 1;
  return Math.max(0, p0 * (1 - step / total));
}

/**
 * The authors' schedule (SftSelector.step, with R = reselection_steps, A =
 * selection_accumulation_steps): a gradient-collecting phase is open from the start and again
 * after every step s with (s + 1) mod R = 0; it closes with a reselection after the step s with
 * s mod R = A. So the first phase spans steps 1…A, later ones R·j … R·j + A (A + 1 steps).
 */
export function phaseOpensAfter(step: number, R: number): boolean {
  return (step + 1) % R === 0;
}

export function reselectsAfter(step: number, R: number, A: number): boolean {
  return step % R === A;
}
