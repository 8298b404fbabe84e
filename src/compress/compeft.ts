/**
 * ComPEFT (Yadav et al., 2023): compress an adapter's update τ = θ − init by keeping its k largest
 * magnitudes and replacing each kept entry by ±α·σ, σ the unbiased standard deviation of the whole
 * uncompressed τ. As in the authors' `compress_and_update_parms` (prateeky2806/ComPEFT,
 * src/bert_eval.py), top-k is global over the concatenation of every adapter tensor in sorted key
 * order and there is one scale; `per-tensor` scope is peftkit's option.
 *
 * Exactness: k = round(D·n) (at least 1) and never more than the non-zero entries; ties at the k-th
 * magnitude are broken by the lower position in the concatenated vector. The authors keep
 * int(D·n)+1 entries plus every tie (docs/methods/compeft.md).
 *
 * The stored form (docs/formats/compeft.md) is here as plain tensors + metadata; reading and
 * writing files is in file.ts (Node).
 */
import { PeftkitError } from "../engine/errors.js";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";

export class CompeftError extends PeftkitError {}

export const COMPEFT_FORMAT = "peftkit.compeft";
export const COMPEFT_VERSION = "1";
export const MASK = ".compeft_mask";
export const SIGN = ".compeft_sign";
export const SCALE = ".compeft_scale";

export type CompeftScope = "global" | "per-tensor";

export interface CompeftOptions {
  /** Fraction of entries kept, in (0, 1]. */
  readonly density: number;
  /** The scale is alpha·σ. */
  readonly alpha: number;
  readonly scope: CompeftScope;
  /** What τ is measured from: 0 for additive adapters (LoRA factors), 1 for multiplicative (IA³). */
  readonly init: 0 | 1;
}

/** One tensor's compressed form: kept positions and their signs. */
export interface CompressedTensor {
  readonly shape: readonly number[];
  /** n bits, LSB-first, bit i = flat row-major position i is kept; padding bits are 0. */
  readonly mask: Uint8Array;
  /** One bit per kept entry in increasing position order, 1 = negative; padding bits are 0. */
  readonly sign: Uint8Array;
  /** The tensor's own scale in per-tensor scope; the global one otherwise. */
  readonly scale: number;
}

export interface CompressedAdapter {
  readonly scope: CompeftScope;
  readonly density: number;
  readonly alpha: number;
  readonly init: 0 | 1;
  /** The global scale α·σ (as f32); in per-tensor scope, NaN (each tensor has its own). */
  readonly scale: number;
  /** By saved tensor name, in sorted order. */
  readonly tensors: ReadonlyMap<string, CompressedTensor>;
}

/** Checks --density; `what` names the flag or field in the error. */
export function checkCompeftDensity(d: number, what = "--density"): void {
  if (!(Number.isFinite(d) && d > 0 && d <= 1)) throw new CompeftError(`${what} must be in (0, 1], got ${d}`);
}

/** k for n entries at density d: round(d·n), at least 1. */
export function keptCount(n: number, density: number): number {
  return Math.min(n, Math.max(1, Math.round(density * n)));
}

/** Unbiased (n−1) standard deviation, in float64, as torch.Tensor.std(). */
export function unbiasedStd(x: Float64Array): number {
  const n = x.length;
  let mean = 0;
  for (let i = 0; i < n; i++) mean += x[i];
  mean /= n;
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (x[i] - mean) ** 2;
  return Math.sqrt(ss / (n - 1));
}

/**
 * The positions of the k largest |x|, increasing; ties at the k-th magnitude go to the lower
 * positions; zeros are never kept (their sign is 0, as torch.sign gives), so fewer than k
 * positions come back when x has fewer than k non-zeros.
 */
export function topKPositions(x: Float64Array, k: number): Int32Array {
  const n = x.length;
  const mags = new Float64Array(n);
  for (let i = 0; i < n; i++) mags[i] = Math.abs(x[i]);
  const sorted = mags.slice().sort();
  const t = sorted[n - Math.min(k, n)];
  let above = 0;
  for (let i = 0; i < n; i++) if (mags[i] > t) above++;
  let ties = t > 0 ? k - above : 0;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    if (mags[i] > t) out.push(i);
    else if (mags[i] === t && ties > 0) {
      out.push(i);
      ties--;
    }
  }
  return Int32Array.from(out);
}

function asFloat64(t: HostTensor, name: string): Float64Array {
  if (t.dtype !== "f32" && t.dtype !== "f64") throw new CompeftError(`tensor "${name}": ComPEFT compresses float tensors, got ${t.dtype}`);
  const out = Float64Array.from(t.data as Float32Array);
  for (let i = 0; i < out.length; i++)
    if (!Number.isFinite(out[i])) throw new CompeftError(`tensor "${name}": element ${i} is ${out[i]}, not a finite number`);
  return out;
}

function bitsBytes(bits: number): number {
  return Math.ceil(bits / 8);
}

function packTensor(shape: readonly number[], tau: Float64Array, offset: number, n: number, kept: Int32Array, from: number, to: number) {
  const mask = new Uint8Array(bitsBytes(n));
  const sign = new Uint8Array(bitsBytes(to - from));
  for (let j = from; j < to; j++) {
    const p = kept[j] - offset;
    mask[p >> 3] |= 1 << (p & 7);
    if (tau[kept[j]] < 0) sign[(j - from) >> 3] |= 1 << ((j - from) & 7);
  }
  return { shape, mask, sign };
}

/** Compresses tensors (by saved name; compressed in sorted name order). */
export function compressTensors(tensors: ReadonlyMap<string, HostTensor>, o: CompeftOptions): CompressedAdapter {
  checkCompeftDensity(o.density);
  if (!(Number.isFinite(o.alpha) && o.alpha > 0)) throw new CompeftError(`--alpha must be a positive number, got ${o.alpha}`);
  const names = [...tensors.keys()].sort();
  if (names.length === 0) throw new CompeftError("the adapter has no tensors to compress");
  const taus = names.map((name) => {
    const x = asFloat64(tensors.get(name) as HostTensor, name);
    if (o.init !== 0) for (let i = 0; i < x.length; i++) x[i] -= o.init;
    return x;
  });
  const out = new Map<string, CompressedTensor>();
  if (o.scope === "per-tensor") {
    names.forEach((name, i) => {
      const tau = taus[i];
      if (tau.length < 2) throw new CompeftError(`tensor "${name}": per-tensor scope needs at least 2 entries for σ`);
      const scale = Math.fround(o.alpha * unbiasedStd(tau));
      const kept = topKPositions(tau, keptCount(tau.length, o.density));
      const shape = (tensors.get(name) as HostTensor).shape;
      out.set(name, { ...packTensor(shape, tau, 0, tau.length, kept, 0, kept.length), scale });
    });
    return { scope: o.scope, density: o.density, alpha: o.alpha, init: o.init, scale: Number.NaN, tensors: out };
  }
  const total = taus.reduce((s, t) => s + t.length, 0);
  if (total < 2) throw new CompeftError("the adapter has fewer than 2 entries: σ is undefined");
  const all = new Float64Array(total);
  let off = 0;
  for (const t of taus) {
    all.set(t, off);
    off += t.length;
  }
  const scale = Math.fround(o.alpha * unbiasedStd(all));
  const kept = topKPositions(all, keptCount(total, o.density));
  off = 0;
  let j = 0;
  names.forEach((name, i) => {
    const n = taus[i].length;
    const from = j;
    while (j < kept.length && kept[j] < off + n) j++;
    out.set(name, { ...packTensor((tensors.get(name) as HostTensor).shape, all, off, n, kept, from, j), scale });
    off += n;
  });
  return { scope: o.scope, density: o.density, alpha: o.alpha, init: o.init, scale, tensors: out };
}

export function popcount(bytes: Uint8Array): number {
  let c = 0;
  for (const b of bytes) {
    let v = b;
    while (v) {
      v &= v - 1;
      c++;
    }
  }
  return c;
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The dense f32 tensor init + scale·sign at the mask, init elsewhere. */
export function decompressTensor(t: CompressedTensor, init: 0 | 1): HostTensor {
  const n = numel(t.shape);
  const out = new Float32Array(n).fill(init);
  const plus = Math.fround(init + t.scale);
  const minus = Math.fround(init - t.scale);
  let j = 0;
  for (let i = 0; i < n; i++) {
    if (!(t.mask[i >> 3] & (1 << (i & 7)))) continue;
    out[i] = t.sign[j >> 3] & (1 << (j & 7)) ? minus : plus;
    j++;
  }
  return hostTensor("f32", t.shape, out);
}

export function decompressAdapter(c: CompressedAdapter): Map<string, HostTensor> {
  return new Map([...c.tensors].map(([name, t]) => [name, decompressTensor(t, c.init)]));
}

// ------------------------------------------------------------------------------------------
// stored form: tensors + metadata (docs/formats/compeft.md)

/** A stored tensor as raw little-endian bytes with its safetensors dtype. */
export interface StoredTensor {
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

export interface CompeftFileParts {
  readonly tensors: Record<string, StoredTensor>;
  readonly metadata: Record<string, string>;
}

function f32Bytes(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setFloat32(0, v, true);
  return b;
}

/** The tensors and metadata of the stored form; the writer adds provenance and the checksum. */
export function compeftParts(c: CompressedAdapter): CompeftFileParts {
  const tensors: Record<string, StoredTensor> = {};
  const shapes: Record<string, number[]> = {};
  for (const [name, t] of c.tensors) {
    tensors[name + MASK] = { dtype: "U8", shape: [t.mask.length], data: t.mask };
    tensors[name + SIGN] = { dtype: "U8", shape: [t.sign.length], data: t.sign };
    if (c.scope === "per-tensor") tensors[name + SCALE] = { dtype: "F32", shape: [1], data: f32Bytes(t.scale) };
    shapes[name] = [...t.shape];
  }
  const metadata: Record<string, string> = {
    format: COMPEFT_FORMAT,
    format_version: COMPEFT_VERSION,
    scope: c.scope,
    density: String(c.density),
    alpha: String(c.alpha),
    init: String(c.init),
    dtype: "F32",
    shapes: JSON.stringify(shapes),
  };
  if (c.scope === "global") metadata.scale = String(c.scale);
  return { tensors, metadata };
}

function u8Vector(t: StoredTensor, where: string): Uint8Array {
  if (t.dtype !== "U8" || t.shape.length !== 1)
    throw new CompeftError(`${where}: must be a U8 vector, got ${t.dtype} [${t.shape.join(", ")}]`);
  return t.data;
}

function padBitsClear(bytes: Uint8Array, bits: number): boolean {
  const r = bits & 7;
  return r === 0 || bytes.length === 0 || bytes[bytes.length - 1] >> r === 0;
}

function metaNumber(metadata: Readonly<Record<string, string>>, field: string, file: string): number {
  const v = Number(metadata[field]);
  if (metadata[field] === undefined || !Number.isFinite(v))
    throw new CompeftError(`${file}: metadata "${field}" is missing or not a number`);
  return v;
}

/** Reads a stored ComPEFT adapter back, checking every field and tensor; `file` names the source. */
export function compeftFromParts(parts: CompeftFileParts, file: string): CompressedAdapter {
  const { tensors, metadata } = parts;
  if (metadata.format !== COMPEFT_FORMAT)
    throw new CompeftError(`${file}: not a peftkit ComPEFT file (metadata "format" is ${JSON.stringify(metadata.format ?? null)})`);
  if (metadata.format_version !== COMPEFT_VERSION)
    throw new CompeftError(
      `${file}: ComPEFT format_version ${JSON.stringify(metadata.format_version ?? null)} is not supported (this peftkit reads "${COMPEFT_VERSION}")`,
    );
  const scope = metadata.scope;
  if (scope !== "global" && scope !== "per-tensor")
    throw new CompeftError(`${file}: metadata "scope" must be "global" or "per-tensor", got ${JSON.stringify(scope ?? null)}`);
  const init = metadata.init === "0" ? 0 : metadata.init === "1" ? 1 : null;
  if (init === null) throw new CompeftError(`${file}: metadata "init" must be "0" or "1", got ${JSON.stringify(metadata.init ?? null)}`);
  const density = metaNumber(metadata, "density", file);
  checkCompeftDensity(density, `${file}: metadata "density"`);
  const alpha = metaNumber(metadata, "alpha", file);
  const globalScale = scope === "global" ? metaNumber(metadata, "scale", file) : Number.NaN;
  let shapes: Record<string, unknown>;
  try {
    shapes = JSON.parse(metadata.shapes ?? "") as Record<string, unknown>;
    if (typeof shapes !== "object" || shapes === null || Array.isArray(shapes)) throw new Error("not an object");
  } catch {
    throw new CompeftError(`${file}: metadata "shapes" must be a JSON object of tensor shapes`);
  }
  const names = new Set<string>();
  for (const key of Object.keys(tensors)) {
    const suffix = [MASK, SIGN, SCALE].find((s) => key.endsWith(s));
    if (!suffix)
      throw new CompeftError(
        `${file}: unexpected tensor "${key}" (expected NAME${MASK}, NAME${SIGN}${scope === "per-tensor" ? `, NAME${SCALE}` : ""})`,
      );
    if (suffix === SCALE && scope === "global")
      throw new CompeftError(`${file}: tensor "${key}" in a global-scope file (one scale, in metadata "scale")`);
    names.add(key.slice(0, -suffix.length));
  }
  for (const name of Object.keys(shapes))
    if (!names.has(name)) throw new CompeftError(`${file}: metadata "shapes" lists "${name}" but the file has no ${name}${MASK}`);
  const out = new Map<string, CompressedTensor>();
  for (const name of [...names].sort()) {
    const shape = shapes[name];
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0))
      throw new CompeftError(`${file}: metadata "shapes" has no valid shape for tensor "${name}"`);
    const m = tensors[name + MASK];
    const s = tensors[name + SIGN];
    if (!m || !s) throw new CompeftError(`${file}: tensor "${name}" has no ${m ? SIGN.slice(1) : MASK.slice(1)}`);
    const n = numel(shape as number[]);
    const mask = u8Vector(m, `${file}: tensor "${name}${MASK}"`);
    const sign = u8Vector(s, `${file}: tensor "${name}${SIGN}"`);
    if (mask.length !== bitsBytes(n))
      throw new CompeftError(
        `${file}: tensor "${name}${MASK}" has ${mask.length} bytes, expected ceil(${n}/8) = ${bitsBytes(n)} for shape [${(shape as number[]).join(", ")}]`,
      );
    if (!padBitsClear(mask, n)) throw new CompeftError(`${file}: tensor "${name}${MASK}" has bits set past its ${n} entries`);
    const kept = popcount(mask);
    if (sign.length !== bitsBytes(kept))
      throw new CompeftError(
        `${file}: tensor "${name}${SIGN}" has ${sign.length} bytes, but its mask keeps ${kept} entries (expected ${bitsBytes(kept)})`,
      );
    if (!padBitsClear(sign, kept)) throw new CompeftError(`${file}: tensor "${name}${SIGN}" has bits set past its ${kept} signs`);
    let scale = globalScale;
    if (scope === "per-tensor") {
      const st = tensors[name + SCALE];
      if (st?.dtype !== "F32" || st.data.length !== 4)
        throw new CompeftError(`${file}: tensor "${name}${SCALE}" is missing or not one F32`);
      scale = new DataView(st.data.buffer, st.data.byteOffset, 4).getFloat32(0, true);
    }
    if (!(Number.isFinite(scale) && scale >= 0))
      throw new CompeftError(`${file}: the scale of tensor "${name}" is ${scale}, not a finite number ≥ 0`);
    out.set(name, { shape: shape as number[], mask, sign, scale });
  }
  return { scope, density, alpha, init, scale: globalScale, tensors: out };
}

/** Bytes of the payload at density d for n entries: the bitmap plus one sign bit per kept entry. */
export function payloadBytes(n: number, kept: number): number {
  return bitsBytes(n) + bitsBytes(kept);
}
