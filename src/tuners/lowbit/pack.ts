/**
 * Host side of the low-bit format: the per-matrix normalisation and codes (what the training
 * forward computes, in float64 here), and the packing of codes into bytes, LSB first, as the
 * authors' QLinear.dump writes them (code i at bits (i mod 8/b)·b of byte ⌊i·b/8⌋) but with the
 * last byte padded with zeros instead of dropped.
 */
import { PeftConfigError } from "../config.js";

/** Added to σ before dividing, as in QLinear.forward (not when scaling back). */
export const SIGMA_EPS = 1e-5;

/** Bytes that hold n codes of b bits: ⌈n·b/8⌉. */
export function packedLength(n: number, bits: number): number {
  return Math.ceil((n * bits) / 8);
}

export function packCodes(codes: ArrayLike<number>, bits: number): Uint8Array {
  const out = new Uint8Array(packedLength(codes.length, bits));
  const perByte = 8 / bits;
  for (let i = 0; i < codes.length; i++) out[Math.floor(i / perByte)] |= codes[i] << ((i % perByte) * bits);
  return out;
}

/** The n codes of a packed tensor; `what` names the tensor and file for the error. */
export function unpackCodes(bytes: ArrayLike<number>, n: number, bits: number, what: string): Uint8Array {
  const want = packedLength(n, bits);
  if (bytes.length !== want)
    throw new PeftConfigError(`${what} holds ${bytes.length} bytes, expected ⌈${n}·${bits}/8⌉ = ${want} (truncated or corrupt)`);
  const perByte = 8 / bits;
  const mask = (1 << bits) - 1;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (bytes[Math.floor(i / perByte)] >> ((i % perByte) * bits)) & mask;
  return out;
}

export interface Quantized {
  /** Index into the ascending levels per element. */
  codes: Uint8Array;
  /** mean(w), as f32. */
  mu: number;
  /** Unbiased std(w), as f32. */
  sigma: number;
}

/**
 * μ, σ (unbiased) of the whole matrix and each element's cell: code = #{k : w_n > t_k} with
 * w_n = (w − μ)/(σ + 1e-5) and t the thresholds (midpoints of the levels).
 */
export function quantize(w: ArrayLike<number>, levels: readonly number[]): Quantized {
  const n = w.length;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += w[i];
  const mu = Math.fround(sum / n);
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (w[i] - mu) ** 2;
  const sigma = Math.fround(Math.sqrt(ss / Math.max(n - 1, 1)));
  const t = levels.slice(1).map((v, i) => (levels[i] + v) / 2);
  const codes = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const wn = (w[i] - mu) / (sigma + SIGMA_EPS);
    let c = 0;
    while (c < t.length && wn > t[c]) c++;
    codes[i] = c;
  }
  return { codes, mu, sigma };
}

/** w = level[code]·σ + μ (no ε), as the authors' QLinear.load. */
export function dequantize(q: Quantized, levels: readonly number[]): Float32Array {
  const out = new Float32Array(q.codes.length);
  for (let i = 0; i < out.length; i++) out[i] = levels[q.codes[i]] * q.sigma + q.mu;
  return out;
}
