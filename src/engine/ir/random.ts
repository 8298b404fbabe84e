/**
 * The engine's counter-based random number generator. Element i of a random tensor depends only on
 * (seed, i), so a step can be replayed from its seed (dropout masks, MeZO perturbations) and the
 * ONNX lowering and the interpreter produce the same numbers. The ONNX lowering computes the same
 * function with int64 Mul/Add/Div/Mod/BitwiseXor (ONNX's own RandomUniform takes its seed as an
 * attribute, not an input, and keeps hidden state between runs, which would make steps unreplayable).
 *
 * All arithmetic is mod 2^32; every multiplier is < 2^31 so the int64 products never overflow.
 * The mixing steps are xorshift-multiply rounds: x ^= x >> k needs XOR (an additive variant was
 * tried first and left strong correlations between nearby counters).
 */
export const RNG = {
  K_INDEX: 0x6e3779b1,
  K_SEED: 0x2545f491,
  OFFSET: 0x6a09e667,
  K_MIX1: 0x7feb352d,
  K_MIX2: 0x046f3a6b,
  SHIFT1: 16,
  SHIFT2: 13,
  SHIFT3: 16,
} as const;

const TWO32 = 4294967296;

/** seed mod 2^32 (non-negative), as ONNX Mod(fmod=0) with a positive divisor computes it. */
export function reduceSeed(seed: bigint): number {
  const m = ((seed % 4294967296n) + 4294967296n) % 4294967296n;
  return Number(m);
}

/** 32 random bits for counter i (0 <= i < 2^32) under a reduced seed. */
export function hashBits(seed32: number, i: number): number {
  let x = (Math.imul(i >>> 0, RNG.K_INDEX) >>> 0) + (Math.imul(seed32, RNG.K_SEED) >>> 0) + RNG.OFFSET;
  x = x % TWO32;
  x = (x ^ (x >>> RNG.SHIFT1)) >>> 0;
  x = Math.imul(x, RNG.K_MIX1) >>> 0;
  x = (x ^ (x >>> RNG.SHIFT2)) >>> 0;
  x = Math.imul(x, RNG.K_MIX2) >>> 0;
  x = (x ^ (x >>> RNG.SHIFT3)) >>> 0;
  return x;
}

/** Uniform in [0, 1) with 24 random bits (exact in f32): floor(bits / 256) / 2^24. */
export function uniformAt(seed32: number, i: number): number {
  return Math.floor(hashBits(seed32, i) / 256) / 16777216;
}

/**
 * Standard normal by Box-Muller from counters 2i and 2i+1:
 * u1 = (floor(bits(2i)/256) + 1) / 2^24 in (0, 1], u2 = uniformAt(2i+1),
 * z = sqrt(-2 ln u1) · cos(2π u2).
 */
export function normalAt(seed32: number, i: number): number {
  const u1 = (Math.floor(hashBits(seed32, 2 * i) / 256) + 1) / 16777216;
  const u2 = uniformAt(seed32, 2 * i + 1);
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}
