/**
 * ID³'s schedule and selection on the host (pure; unit-tested): how many entries step t unmasks,
 * the global top of the step's per-layer candidates, and which slots the new entries take.
 */

/**
 * Entries unmasked at step t (1-based) of T with budget B: ⌊B/T⌋, plus 1 for the first B mod T
 * steps (the toolkit's Id3.get_num_unmask); 0 after step T (the toolkit keeps going, past B).
 */
export function unmaskCount(t: number, budget: number, total: number): number {
  if (t < 1 || t > total) return 0;
  const base = Math.floor(budget / total);
  return base + (t - 1 < budget - base * total ? 1 : 0);
}

/** Entries unmasked after t steps: Σ_{s ≤ t} unmaskCount(s). */
export function unmaskedAfter(t: number, budget: number, total: number): number {
  let n = 0;
  for (let s = 1; s <= Math.min(t, total); s++) n += unmaskCount(s, budget, total);
  return n;
}

export interface Candidate {
  readonly layer: number;
  readonly position: number;
  readonly score: number;
}

/**
 * The u candidates with the largest scores; ties go to the earlier layer, then the lower position
 * (the toolkit takes every entry tied with the u-th score and trims per tensor, which can overrun
 * or un-choose trained entries; here exactly u are taken).
 */
export function topCandidates(cands: readonly Candidate[], u: number): Candidate[] {
  return [...cands].sort((a, b) => b.score - a.score || a.layer - b.layer || a.position - b.position).slice(0, u);
}

/**
 * Puts new positions into a layer's free slots (used 0), keeping every position in the layer
 * distinct: a new position that is some free slot's placeholder takes that slot, the rest take the
 * remaining free slots in order. Returns the slots used, in the order of `positions`; edits
 * `indices` and `used` in place.
 */
export function assignSlots(indices: Int32Array, used: Float32Array, positions: readonly number[]): number[] {
  const free = new Map<number, number>();
  used.forEach((u, slot) => {
    if (u === 0) free.set(indices[slot], slot);
  });
  const slots: number[] = new Array(positions.length);
  const rest: number[] = [];
  positions.forEach((p, i) => {
    const s = free.get(p);
    if (s === undefined) rest.push(i);
    else {
      slots[i] = s;
      free.delete(p);
    }
  });
  const open = [...free.values()].sort((a, b) => a - b);
  if (open.length < rest.length)
    throw new RangeError(`ID3: ${positions.length} new entries, ${positions.length - rest.length + open.length} free slots`);
  rest.forEach((i, j) => {
    slots[i] = open[j];
  });
  positions.forEach((p, i) => {
    indices[slots[i]] = p;
    used[slots[i]] = 1;
  });
  return slots;
}
