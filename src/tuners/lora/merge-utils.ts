/**
 * Task-vector merging rules from PEFT's utils/merge_utils.py, on flat float64 tensors of equal
 * length: task arithmetic, magnitude pruning, TIES (Yadav et al. 2023: trim, elect sign, disjoint
 * merge) and DARE (Yu et al. 2023: random drop with rescale), each with per-task weights.
 */
import type { Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";

export type MajoritySignMethod = "total" | "frequency";

function sameLength(tensors: readonly Float64Array[], weights: readonly number[], what: string): number {
  if (tensors.length === 0) throw new PeftConfigError(`${what}: no task tensors`);
  if (tensors.length !== weights.length) throw new PeftConfigError(`${what}: ${tensors.length} task tensors but ${weights.length} weights`);
  const n = tensors[0].length;
  for (const t of tensors) if (t.length !== n) throw new PeftConfigError(`${what}: task tensors differ in size (${n} vs ${t.length})`);
  return n;
}

function checkDensity(density: number): void {
  if (!Number.isFinite(density) || density < 0) throw new PeftConfigError(`density must be >= 0, got ${density}`);
}

/**
 * torch.quantile(values, q) with its default "linear" interpolation: with the values sorted and
 * p = q·(n − 1), v[⌊p⌋] + (p − ⌊p⌋)·(v[⌈p⌉] − v[⌊p⌋]). Signed values, as PEFT's svd_clamp uses it.
 */
export function quantile(values: ArrayLike<number>, q: number): number {
  if (!(q >= 0 && q <= 1)) throw new PeftConfigError(`quantile: q must be in [0, 1], got ${q}`);
  if (values.length === 0) throw new PeftConfigError("quantile: no values");
  const v = Float64Array.from(values).sort();
  const p = q * (v.length - 1);
  const lo = Math.floor(p);
  const hi = Math.ceil(p);
  return v[lo] + (p - lo) * (v[hi] - v[lo]);
}

/** Keeps the k = ⌊density·n⌋ entries of largest magnitude (ties broken by position), zeroes the rest. */
export function magnitudePrune(t: Float64Array, density: number): Float64Array {
  checkDensity(density);
  if (density >= 1) return Float64Array.from(t);
  const k = Math.trunc(density * t.length);
  const order = Array.from(t.keys()).sort((i, j) => Math.abs(t[j]) - Math.abs(t[i]) || i - j);
  const out = new Float64Array(t.length);
  for (let i = 0; i < k; i++) out[order[i]] = t[order[i]];
  return out;
}

/** Keeps each entry with probability `density` (Bernoulli), optionally dividing by density. */
export function randomPrune(t: Float64Array, density: number, rescale: boolean, rng: Rng): Float64Array {
  checkDensity(density);
  if (density >= 1) return Float64Array.from(t);
  const out = new Float64Array(t.length);
  for (let i = 0; i < t.length; i++) if (rng.next() < density) out[i] = rescale ? t[i] / density : t[i];
  return out;
}

/** Σ_i w_i·t_i. */
export function taskArithmetic(tensors: readonly Float64Array[], weights: readonly number[]): Float64Array {
  const n = sameLength(tensors, weights, "task arithmetic");
  const out = new Float64Array(n);
  tensors.forEach((t, k) => {
    for (let i = 0; i < n; i++) out[i] += weights[k] * t[i];
  });
  return out;
}

/**
 * Per entry, the elected sign: of Σ_i t_i ("total") or of Σ_i sign(t_i) ("frequency"), + on ties;
 * entry i of task k survives when sign(t_k[i]) equals it (zeros never do).
 */
export function majoritySignMask(tensors: readonly Float64Array[], method: MajoritySignMethod): Uint8Array[] {
  const n = tensors[0].length;
  const elected = new Float64Array(n);
  for (const t of tensors) for (let i = 0; i < n; i++) elected[i] += method === "total" ? t[i] : Math.sign(t[i]);
  return tensors.map((t) => Uint8Array.from(t, (v, i) => (Math.sign(v) === (elected[i] >= 0 ? 1 : -1) ? 1 : 0)));
}

/** Mean over the tasks whose entry survived the sign election (sum / max(count, 1)). */
export function disjointMerge(weighted: readonly Float64Array[], mask: readonly Uint8Array[]): Float64Array {
  const n = weighted[0].length;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let sum = 0;
    let count = 0;
    weighted.forEach((t, k) => {
      if (mask[k][i]) {
        sum += t[i];
        count++;
      }
    });
    out[i] = sum / Math.max(count, 1);
  }
  return out;
}

function weighted(tensors: readonly Float64Array[], weights: readonly number[]): Float64Array[] {
  return tensors.map((t, k) => Float64Array.from(t, (v) => v * weights[k]));
}

export function ties(
  tensors: readonly Float64Array[],
  weights: readonly number[],
  density: number,
  method: MajoritySignMethod,
): Float64Array {
  sameLength(tensors, weights, "ties");
  const pruned = tensors.map((t) => magnitudePrune(t, density));
  return disjointMerge(weighted(pruned, weights), majoritySignMask(pruned, method));
}

export function magnitudePruneMerge(tensors: readonly Float64Array[], weights: readonly number[], density: number): Float64Array {
  sameLength(tensors, weights, "magnitude_prune");
  return taskArithmetic(
    tensors.map((t) => magnitudePrune(t, density)),
    weights,
  );
}

export function dareLinear(tensors: readonly Float64Array[], weights: readonly number[], density: number, rng: Rng): Float64Array {
  sameLength(tensors, weights, "dare_linear");
  return taskArithmetic(
    tensors.map((t) => randomPrune(t, density, true, rng)),
    weights,
  );
}

export function dareTies(
  tensors: readonly Float64Array[],
  weights: readonly number[],
  density: number,
  method: MajoritySignMethod,
  rng: Rng,
): Float64Array {
  sameLength(tensors, weights, "dare_ties");
  const pruned = tensors.map((t) => randomPrune(t, density, true, rng));
  return disjointMerge(weighted(pruned, weights), majoritySignMask(pruned, method));
}
