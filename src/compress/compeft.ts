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
 * `bits` b ≥ 2 is a peftkit extension (ComPEFT itself is b = 1): each kept entry keeps its sign
 * and gets a (b−1)-bit index into 2^(b−1) magnitude levels fitted to the kept |τ| by Lloyd–Max
 * (lloydMax below), scaled by α; σ is not used then.
 *
 * The stored form (docs/formats/compeft.md) is here as plain tensors + metadata; reading and
 * writing files is in file.ts (Node).
 */
import { PeftkitError } from "../engine/errors.js";
import { type HostTensor, hostTensor } from "../engine/ir/host.js";

export class CompeftError extends PeftkitError {}

export const COMPEFT_FORMAT = "peftkit.compeft";
/** The format_version of b = 1 files (ComPEFT's ternary form, unchanged since it was introduced). */
export const COMPEFT_VERSION = "1";
/** The format_version of b ≥ 2 files, so that a reader that knows only "1" refuses them by name. */
export const COMPEFT_VERSION_CODES = "2";
export const MASK = ".compeft_mask";
export const SIGN = ".compeft_sign";
export const SCALE = ".compeft_scale";
export const CODE = ".compeft_code";
export const LEVELS = ".compeft_levels";
/** The one codebook of a global-scope b ≥ 2 file (a tensor name, not a suffix). */
export const GLOBAL_LEVELS = "compeft_levels";

/** Bits per kept entry: 1 is ComPEFT's sign; b ≥ 2 adds a (b−1)-bit magnitude code (peftkit's extension). */
export const COMPEFT_BITS = [1, 2, 3, 4, 8] as const;
export type CompeftBits = (typeof COMPEFT_BITS)[number];

export function isCompeftBits(b: number): b is CompeftBits {
  return (COMPEFT_BITS as readonly number[]).includes(b);
}

export type CompeftScope = "global" | "per-tensor";

export interface CompeftOptions {
  /** Fraction of entries kept, in (0, 1]. */
  readonly density: number;
  /** The scale is alpha·σ. */
  readonly alpha: number;
  readonly scope: CompeftScope;
  /** What τ is measured from: 0 for additive adapters (LoRA factors), 1 for multiplicative (IA³). */
  readonly init: 0 | 1;
  /** Bits per kept entry (default 1: ComPEFT's ±α·σ). */
  readonly bits?: CompeftBits;
}

/** b ≥ 2: the magnitudes of a tensor's kept entries as indices into a codebook. */
export interface MagnitudeCodes {
  /** b; each code has b − 1 bits. */
  readonly bits: Exclude<CompeftBits, 1>;
  /** The code of each kept entry in position order, b − 1 bits each, packed LSB-first; padding bits are 0. */
  readonly codes: Uint8Array;
  /** The levels the codes index: α·(fitted level) as f32, non-decreasing, only the used ones (≤ 2^(b−1)). */
  readonly levels: Float32Array;
}

/** One tensor's compressed form: kept positions and their signs (and, b ≥ 2, magnitude codes). */
export interface CompressedTensor {
  readonly shape: readonly number[];
  /** n bits, LSB-first, bit i = flat row-major position i is kept; padding bits are 0. */
  readonly mask: Uint8Array;
  /** One bit per kept entry in increasing position order, 1 = negative; padding bits are 0. */
  readonly sign: Uint8Array;
  /** The tensor's own scale in per-tensor scope; the global one otherwise; NaN at b ≥ 2. */
  readonly scale: number;
  /** b ≥ 2 only: the kept magnitudes are levels[code] instead of scale. */
  readonly magnitudes?: MagnitudeCodes;
}

export interface CompressedAdapter {
  readonly scope: CompeftScope;
  readonly density: number;
  readonly alpha: number;
  readonly init: 0 | 1;
  /** The global scale α·σ (as f32); in per-tensor scope or at b ≥ 2, NaN. */
  readonly scale: number;
  readonly bits: CompeftBits;
  /** b ≥ 2 in global scope: the one codebook every tensor's codes index; null otherwise. */
  readonly levels: Float32Array | null;
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

/** Lloyd iterations at most; each is O(levels·log m), and the fit stops earlier at a fixed point. */
const LLOYD_MAX_ITERATIONS = 1000;

/**
 * Lloyd–Max: `count` levels locally minimising Σ (x − nearest level)² over the values x (1-D
 * k-means on their empirical distribution). Start: level i = the sorted value at index
 * ⌊(i + ½)·m / count⌋ (the (i + ½)/count quantile). Step: a value goes to its nearest level
 * (a value exactly midway goes to the lower level), then each level becomes the mean of its
 * values; a level with no values stays where it is. Stops when no level moves, or after
 * LLOYD_MAX_ITERATIONS steps. Returns the levels in non-decreasing order (empty when m = 0).
 */
export function lloydMax(x: Float64Array, count: number): Float64Array {
  const sorted = x.slice().sort();
  const m = sorted.length;
  const levels = new Float64Array(m === 0 ? 0 : count);
  if (m === 0) return levels;
  const prefix = new Float64Array(m + 1);
  for (let i = 0; i < m; i++) prefix[i + 1] = prefix[i] + sorted[i];
  for (let i = 0; i < count; i++) levels[i] = sorted[Math.min(m - 1, Math.floor(((i + 0.5) * m) / count))];
  // Cells are contiguous in sorted order: cell i is [end(i−1), end(i)), end(i) = #values ≤ the midpoint.
  const upper = (t: number): number => {
    let lo = 0;
    let hi = m;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid] <= t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  for (let it = 0; it < LLOYD_MAX_ITERATIONS; it++) {
    let moved = false;
    let start = 0;
    const next = levels.slice();
    for (let i = 0; i < count; i++) {
      const end = i === count - 1 ? m : upper((levels[i] + levels[i + 1]) / 2);
      if (end > start) {
        const mean = (prefix[end] - prefix[start]) / (end - start);
        if (mean !== levels[i]) moved = true;
        next[i] = mean;
      }
      start = Math.max(start, end);
    }
    levels.set(next);
    if (!moved) break;
  }
  return levels;
}

/** The index of the level nearest to x (ties to the lower index). */
export function nearestLevel(x: number, levels: ArrayLike<number>): number {
  let best = 0;
  let bestD = Math.abs(x - levels[0]);
  for (let j = 1; j < levels.length; j++) {
    const d = Math.abs(x - levels[j]);
    if (d < bestD) {
      best = j;
      bestD = d;
    }
  }
  return best;
}

/**
 * b ≥ 2: fits 2^(b−1) levels to the magnitudes, scales them by α (f32), and codes each magnitude
 * as its nearest scaled level to α·|τ|; levels that no value uses are dropped (codes renumbered),
 * so the codebook holds at most min(2^(b−1), distinct magnitudes) levels.
 */
export function quantiseMagnitudes(
  mags: Float64Array,
  bits: Exclude<CompeftBits, 1>,
  alpha: number,
): { levels: Float32Array; codes: Int32Array } {
  const fitted = lloydMax(mags, 2 ** (bits - 1));
  const scaled = Float32Array.from(fitted, (l) => alpha * l);
  const codes = new Int32Array(mags.length);
  const used = new Uint8Array(scaled.length);
  for (let j = 0; j < mags.length; j++) {
    codes[j] = nearestLevel(alpha * mags[j], scaled);
    used[codes[j]] = 1;
  }
  const renumber = new Int32Array(scaled.length);
  const levels: number[] = [];
  for (let i = 0; i < scaled.length; i++) {
    renumber[i] = levels.length;
    if (used[i]) levels.push(scaled[i]);
  }
  for (let j = 0; j < codes.length; j++) codes[j] = renumber[codes[j]];
  return { levels: Float32Array.from(levels), codes };
}

/** Codes [from, to) packed LSB-first, `width` bits each (bit k of code j at stream bit j·width + k). */
export function packCodes(codes: ArrayLike<number>, from: number, to: number, width: number): Uint8Array {
  const out = new Uint8Array(bitsBytes((to - from) * width));
  for (let j = from; j < to; j++)
    for (let k = 0; k < width; k++) {
      const p = (j - from) * width + k;
      if ((codes[j] >> k) & 1) out[p >> 3] |= 1 << (p & 7);
    }
  return out;
}

/** Code j of a stream packed by packCodes. */
export function unpackCode(bytes: Uint8Array, j: number, width: number): number {
  let c = 0;
  for (let k = 0; k < width; k++) {
    const p = j * width + k;
    if (bytes[p >> 3] & (1 << (p & 7))) c |= 1 << k;
  }
  return c;
}

/** Compresses tensors (by saved name; compressed in sorted name order). */
export function compressTensors(tensors: ReadonlyMap<string, HostTensor>, o: CompeftOptions): CompressedAdapter {
  checkCompeftDensity(o.density);
  if (!(Number.isFinite(o.alpha) && o.alpha > 0)) throw new CompeftError(`--alpha must be a positive number, got ${o.alpha}`);
  const bits = o.bits ?? 1;
  if (!isCompeftBits(bits)) throw new CompeftError(`--bits must be one of ${COMPEFT_BITS.join(", ")}, got ${bits}`);
  const names = [...tensors.keys()].sort();
  if (names.length === 0) throw new CompeftError("the adapter has no tensors to compress");
  const taus = names.map((name) => {
    const x = asFloat64(tensors.get(name) as HostTensor, name);
    if (o.init !== 0) for (let i = 0; i < x.length; i++) x[i] -= o.init;
    return x;
  });
  const base = { scope: o.scope, density: o.density, alpha: o.alpha, init: o.init, bits };
  const out = new Map<string, CompressedTensor>();
  /** b ≥ 2: the codebook and codes of the entries of `tau` at the positions `kept`. */
  const quantise = (tau: Float64Array, kept: Int32Array) =>
    quantiseMagnitudes(
      Float64Array.from(kept, (p) => Math.abs(tau[p])),
      bits as Exclude<CompeftBits, 1>,
      o.alpha,
    );
  if (o.scope === "per-tensor") {
    names.forEach((name, i) => {
      const tau = taus[i];
      const kept = topKPositions(tau, keptCount(tau.length, o.density));
      const shape = (tensors.get(name) as HostTensor).shape;
      const packed = packTensor(shape, tau, 0, tau.length, kept, 0, kept.length);
      if (bits === 1) {
        if (tau.length < 2) throw new CompeftError(`tensor "${name}": per-tensor scope needs at least 2 entries for σ`);
        out.set(name, { ...packed, scale: Math.fround(o.alpha * unbiasedStd(tau)) });
        return;
      }
      const q = quantise(tau, kept);
      const codes = packCodes(q.codes, 0, kept.length, bits - 1);
      out.set(name, { ...packed, scale: Number.NaN, magnitudes: { bits, codes, levels: q.levels } });
    });
    return { ...base, scale: Number.NaN, levels: null, tensors: out };
  }
  const total = taus.reduce((s, t) => s + t.length, 0);
  if (bits === 1 && total < 2) throw new CompeftError("the adapter has fewer than 2 entries: σ is undefined");
  const all = new Float64Array(total);
  let off = 0;
  for (const t of taus) {
    all.set(t, off);
    off += t.length;
  }
  const scale = bits === 1 ? Math.fround(o.alpha * unbiasedStd(all)) : Number.NaN;
  const kept = topKPositions(all, keptCount(total, o.density));
  const q = bits === 1 ? null : quantise(all, kept);
  off = 0;
  let j = 0;
  names.forEach((name, i) => {
    const n = taus[i].length;
    const from = j;
    while (j < kept.length && kept[j] < off + n) j++;
    const packed = packTensor((tensors.get(name) as HostTensor).shape, all, off, n, kept, from, j);
    if (q === null || bits === 1)
      out.set(name, { ...packed, scale }); // (bits === 1 narrows the type)
    else out.set(name, { ...packed, scale, magnitudes: { bits, codes: packCodes(q.codes, from, j, bits - 1), levels: q.levels } });
    off += n;
  });
  return { ...base, scale, levels: q?.levels ?? null, tensors: out };
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

/**
 * The dense f32 tensor init + scale·sign at the mask (b = 1), or init + levels[code]·sign
 * (b ≥ 2), and init elsewhere.
 */
export function decompressTensor(t: CompressedTensor, init: 0 | 1): HostTensor {
  const n = numel(t.shape);
  const out = new Float32Array(n).fill(init);
  const q = t.magnitudes;
  const plus = Math.fround(init + t.scale);
  const minus = Math.fround(init - t.scale);
  let j = 0;
  for (let i = 0; i < n; i++) {
    if (!(t.mask[i >> 3] & (1 << (i & 7)))) continue;
    const negative = t.sign[j >> 3] & (1 << (j & 7));
    if (q) {
      const level = q.levels[unpackCode(q.codes, j, q.bits - 1)];
      out[i] = negative ? init - level : init + level;
    } else out[i] = negative ? minus : plus;
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
    const q = t.magnitudes;
    if (q) {
      tensors[name + CODE] = { dtype: "U8", shape: [q.codes.length], data: q.codes };
      if (c.scope === "per-tensor") tensors[name + LEVELS] = f32Vector(q.levels);
    } else if (c.scope === "per-tensor") tensors[name + SCALE] = { dtype: "F32", shape: [1], data: f32Bytes(t.scale) };
    shapes[name] = [...t.shape];
  }
  if (c.bits !== 1 && c.scope === "global") tensors[GLOBAL_LEVELS] = f32Vector(c.levels ?? new Float32Array(0));
  // b = 1 writes exactly the fields (and bytes) it always has; b ≥ 2 is format_version 2 with "bits".
  const metadata: Record<string, string> = {
    format: COMPEFT_FORMAT,
    format_version: c.bits === 1 ? COMPEFT_VERSION : COMPEFT_VERSION_CODES,
    scope: c.scope,
    density: String(c.density),
    alpha: String(c.alpha),
    init: String(c.init),
    dtype: "F32",
    shapes: JSON.stringify(shapes),
  };
  if (c.bits !== 1) metadata.bits = String(c.bits);
  else if (c.scope === "global") metadata.scale = String(c.scale);
  return { tensors, metadata };
}

function f32Vector(v: Float32Array): StoredTensor {
  const data = new Uint8Array(4 * v.length);
  const view = new DataView(data.buffer);
  for (let i = 0; i < v.length; i++) view.setFloat32(4 * i, v[i], true);
  return { dtype: "F32", shape: [v.length], data };
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

/** The bits of a file: 1 without metadata "bits" (format_version 1), else 2, 3, 4 or 8 (format_version 2). */
function metaBits(metadata: Readonly<Record<string, string>>, file: string): CompeftBits {
  const raw = metadata.bits;
  if (raw === undefined) {
    if (metadata.format_version === COMPEFT_VERSION_CODES)
      throw new CompeftError(`${file}: metadata "bits" is missing (format_version "${COMPEFT_VERSION_CODES}" files have 2, 3, 4 or 8)`);
    return 1;
  }
  const b = Number(raw);
  if (!(/^[0-9]+$/.test(raw) && isCompeftBits(b) && b !== 1))
    throw new CompeftError(`${file}: metadata "bits" must be one of 2, 3, 4, 8 (absent for 1), got ${JSON.stringify(raw)}`);
  if (metadata.format_version !== COMPEFT_VERSION_CODES)
    throw new CompeftError(
      `${file}: metadata "bits" is ${raw} but format_version is "${metadata.format_version}" (b ≥ 2 files are "${COMPEFT_VERSION_CODES}")`,
    );
  return b;
}

/** A stored F32 codebook: at most 2^(b−1) finite levels ≥ 0 (none only when nothing is kept). */
function levelsOf(t: StoredTensor | undefined, where: string, bits: number, kept: number): Float32Array {
  if (t?.dtype !== "F32" || t.shape.length !== 1 || t.data.length !== 4 * t.shape[0])
    throw new CompeftError(`${where}: is missing or not an F32 vector`);
  const count = t.shape[0];
  const max = 2 ** (bits - 1);
  if (count > max || (count === 0 && kept > 0))
    throw new CompeftError(`${where}: has ${count} levels, expected 1 to 2^(${bits}−1) = ${max} at bits ${bits}`);
  const view = new DataView(t.data.buffer, t.data.byteOffset, t.data.length);
  const levels = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    levels[i] = view.getFloat32(4 * i, true);
    if (!(Number.isFinite(levels[i]) && levels[i] >= 0))
      throw new CompeftError(`${where}: level ${i} is ${levels[i]}, not a finite number ≥ 0`);
  }
  return levels;
}

/** Reads a stored ComPEFT adapter back, checking every field and tensor; `file` names the source. */
export function compeftFromParts(parts: CompeftFileParts, file: string): CompressedAdapter {
  const { tensors, metadata } = parts;
  if (metadata.format !== COMPEFT_FORMAT)
    throw new CompeftError(`${file}: not a peftkit ComPEFT file (metadata "format" is ${JSON.stringify(metadata.format ?? null)})`);
  if (metadata.format_version !== COMPEFT_VERSION && metadata.format_version !== COMPEFT_VERSION_CODES)
    throw new CompeftError(
      `${file}: ComPEFT format_version ${JSON.stringify(metadata.format_version ?? null)} is not supported (this peftkit reads "${COMPEFT_VERSION}" and "${COMPEFT_VERSION_CODES}")`,
    );
  const bits = metaBits(metadata, file);
  const scope = metadata.scope;
  if (scope !== "global" && scope !== "per-tensor")
    throw new CompeftError(`${file}: metadata "scope" must be "global" or "per-tensor", got ${JSON.stringify(scope ?? null)}`);
  const init = metadata.init === "0" ? 0 : metadata.init === "1" ? 1 : null;
  if (init === null) throw new CompeftError(`${file}: metadata "init" must be "0" or "1", got ${JSON.stringify(metadata.init ?? null)}`);
  const density = metaNumber(metadata, "density", file);
  checkCompeftDensity(density, `${file}: metadata "density"`);
  const alpha = metaNumber(metadata, "alpha", file);
  const globalScale = scope === "global" && bits === 1 ? metaNumber(metadata, "scale", file) : Number.NaN;
  let shapes: Record<string, unknown>;
  try {
    shapes = JSON.parse(metadata.shapes ?? "") as Record<string, unknown>;
    if (typeof shapes !== "object" || shapes === null || Array.isArray(shapes)) throw new Error("not an object");
  } catch {
    throw new CompeftError(`${file}: metadata "shapes" must be a JSON object of tensor shapes`);
  }
  // Which tensors this (bits, scope) has besides NAME.compeft_mask and NAME.compeft_sign.
  const perTensor = bits === 1 ? SCALE : LEVELS;
  const suffixes = bits === 1 ? [MASK, SIGN, SCALE] : [MASK, SIGN, CODE, LEVELS];
  const expected = [MASK, SIGN, ...(bits === 1 ? [] : [CODE]), ...(scope === "per-tensor" ? [perTensor] : [])];
  const names = new Set<string>();
  for (const key of Object.keys(tensors)) {
    if (key === GLOBAL_LEVELS && bits !== 1 && scope === "global") continue;
    const suffix = suffixes.find((s) => key.endsWith(s));
    if (!suffix)
      throw new CompeftError(
        `${file}: unexpected tensor "${key}" (expected ${expected.map((s) => `NAME${s}`).join(", ")}${bits !== 1 && scope === "global" ? `, ${GLOBAL_LEVELS}` : ""} at bits ${bits}, scope ${scope})`,
      );
    if (suffix === perTensor && scope === "global")
      throw new CompeftError(
        `${file}: tensor "${key}" in a global-scope file (${bits === 1 ? 'one scale, in metadata "scale"' : `one codebook, in tensor "${GLOBAL_LEVELS}"`})`,
      );
    names.add(key.slice(0, -suffix.length));
  }
  for (const name of Object.keys(shapes))
    if (!names.has(name)) throw new CompeftError(`${file}: metadata "shapes" lists "${name}" but the file has no ${name}${MASK}`);
  let totalKept = 0;
  for (const name of names) {
    const m = tensors[name + MASK];
    if (m) totalKept += popcount(m.data);
  }
  const globalLevels =
    bits !== 1 && scope === "global" ? levelsOf(tensors[GLOBAL_LEVELS], `${file}: tensor "${GLOBAL_LEVELS}"`, bits, totalKept) : null;
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
    if (bits !== 1) {
      out.set(name, {
        shape: shape as number[],
        mask,
        sign,
        scale: Number.NaN,
        magnitudes: codesOf(parts, file, name, bits, kept, globalLevels),
      });
      continue;
    }
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
  return { scope, density, alpha, init, bits, scale: globalScale, levels: globalLevels, tensors: out };
}

/** b ≥ 2: tensor `name`'s codes (checked against its kept count and its codebook). */
function codesOf(
  parts: CompeftFileParts,
  file: string,
  name: string,
  bits: Exclude<CompeftBits, 1>,
  kept: number,
  globalLevels: Float32Array | null,
): MagnitudeCodes {
  const width = bits - 1;
  const t = parts.tensors[name + CODE];
  if (!t) throw new CompeftError(`${file}: tensor "${name}" has no ${CODE.slice(1)} (metadata "bits" is ${bits})`);
  const codes = u8Vector(t, `${file}: tensor "${name}${CODE}"`);
  const want = bitsBytes(kept * width);
  if (codes.length !== want)
    throw new CompeftError(
      `${file}: tensor "${name}${CODE}" has ${codes.length} bytes, but its mask keeps ${kept} entries of ${width} bits (expected ceil(${kept}·${width}/8) = ${want})`,
    );
  if (!padBitsClear(codes, kept * width)) throw new CompeftError(`${file}: tensor "${name}${CODE}" has bits set past its ${kept} codes`);
  const levelsName = globalLevels ? GLOBAL_LEVELS : name + LEVELS;
  const levels = globalLevels ?? levelsOf(parts.tensors[levelsName], `${file}: tensor "${levelsName}"`, bits, kept);
  for (let j = 0; j < kept; j++) {
    const c = unpackCode(codes, j, width);
    if (c >= levels.length)
      throw new CompeftError(
        `${file}: tensor "${name}${CODE}": code ${c} of kept entry ${j} points past the ${levels.length} levels of "${levelsName}"`,
      );
  }
  return { bits, codes, levels };
}

/**
 * Bytes of one tensor's payload for n entries of which `kept` are kept: the bitmap, one sign bit
 * per kept entry and, at b ≥ 2, b − 1 code bits per kept entry (codebooks not included).
 */
export function payloadBytes(n: number, kept: number, bits: CompeftBits = 1): number {
  return bitsBytes(n) + bitsBytes(kept) + (bits === 1 ? 0 : bitsBytes(kept * (bits - 1)));
}
