/**
 * The perturbation z of a zeroth-order step is never stored: it is a function of the step's seed,
 * regenerated where it is used (twice in the graph, once in the host update) by the engine's
 * counter generator (src/engine/ir/random.ts). Element j of a random tensor with seed s is
 * normalAt(s, j), built from the hashes of counters 2j and 2j+1 under s.
 *
 * The authors draw every tensor from ONE torch stream (manual_seed, then randn per tensor in
 * named_parameters order). The same here: tensor i gets a seed s_i under which its counters are
 * those of the step seed shifted by o_i = 2·(elements of the tensors before it), so the tensors
 * tile one stream without overlap. That works because the generator hashes c·K_INDEX + s·K_SEED
 * (mod 2^32): s_i = s + o_i·K_INDEX·K_SEED⁻¹ turns counter c into c + o_i. Equal seeds per tensor
 * would give equal-shaped tensors the same z (the counters restart at 0 for each random op).
 */
import { normalAt, RNG } from "../../engine/ir/random.js";
import { deriveSeed } from "../data/index.js";

const TWO32 = 4294967296n;

/** x⁻¹ mod 2^32 for odd x (Newton's iteration: each round doubles the correct low bits). */
function inverseMod32(x: bigint): bigint {
  let y = x;
  for (let i = 0; i < 5; i++) y = (y * (2n - x * y)) % TWO32;
  return ((y % TWO32) + TWO32) % TWO32;
}

const SHIFT = (BigInt(RNG.K_INDEX) * inverseMod32(BigInt(RNG.K_SEED))) % TWO32;

/** Counters of one stream: 2 per normal value, 2^32 in all. */
export const STREAM_ELEMENTS = 2 ** 31;

/** The seed of optimizer step `step` (0-based) of a run with seed `runSeed`: a state-free function, so a resumed run draws the same z. */
export function stepSeed(runSeed: number, step: number): number {
  return deriveSeed(runSeed, 0x2e20, step) >>> 0;
}

/** The seed under which counters start `elements` normal values further along the stream of `seed` (mod 2^32). */
export function seedOffset(elements: number): number {
  return Number((BigInt(2 * elements) * SHIFT) % TWO32);
}

/**
 * Per-tensor seeds for one step: tensor i (in the given order) is elements
 * [Σ_{k<i} n_k, Σ_{k≤i} n_k) of the stream of `seed`. Throws past 2^31 elements in all.
 */
export function tensorSeeds(seed: number, sizes: readonly number[]): number[] {
  let offset = 0;
  const out: number[] = [];
  for (const n of sizes) {
    const s = (BigInt(seed >>> 0) + BigInt(2 * offset) * SHIFT) % TWO32;
    out.push(Number(s));
    offset += n;
  }
  if (offset > STREAM_ELEMENTS)
    throw new RangeError(`zeroth-order step: ${offset} perturbed elements exceed the generator's 2^31 per step`);
  return out;
}

/** z_j = normalAt(seed, j): the host's copy of what the graph's random_normal computes (in f64 here, f32 in ORT). */
export function perturbationAt(seed: number, j: number): number {
  return normalAt(seed, j);
}
