/**
 * LOWBIT: LoRA-form adapters trained with quantisation-aware training (see config.ts and
 * quant.ts). Per targeted linear layer, A [r, in] and B [out, r] (keys lora_A.weight,
 * lora_B.weight: the latent f32 weights) enter the forward quantised,
 * y = W·x + s·x·A_qᵀ·B_qᵀ. Saved: per matrix `<key>.lora_X.qcodes` (U8, packed LSB first),
 * `.qmu` and `.qsigma` (F32 [1]); loaded, the adapter holds those and runs with the dequantised
 * weights level[code]·σ + μ (docs/formats/lowbit.md).
 */
import { join } from "node:path";
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import type { RawTensor } from "../../io/safetensors.js";
import type { ForwardContext } from "../../nn/context.js";
import type { Rng } from "../../util/rng.js";
import { PeftConfigError, type RawPeftConfig } from "../config.js";
import { type TargetedLinear, targetedLinears } from "../targets.js";
import { type CreatedAdapter, LinearDeltaContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { codebookLevels } from "./codebook.js";
import { type LowbitConfig, lowbitConfigJson, parseLowbitConfig } from "./config.js";
import { dequantize, packCodes, packedLength, quantize, unpackCodes } from "./pack.js";
import { fakeQuantize } from "./quant.js";

const PREFIX = "base_model.model.";

export interface LowbitMatrix {
  /** The matrix's name: `<module>.lora_A` or `<module>.lora_B`. */
  readonly name: string;
  readonly shape: [number, number];
}

export interface LowbitLayer extends TargetedLinear {
  readonly a: LowbitMatrix;
  readonly b: LowbitMatrix;
}

export const latentKey = (m: LowbitMatrix): string => `${m.name}.weight`;
export const codesKey = (m: LowbitMatrix): string => `${m.name}.qcodes`;
export const muKey = (m: LowbitMatrix): string => `${m.name}.qmu`;
export const sigmaKey = (m: LowbitMatrix): string => `${m.name}.qsigma`;

export function lowbitLayers(info: ModelInfo, c: LowbitConfig): LowbitLayer[] {
  return targetedLinears(info, c, "LOWBIT config").map((l) => ({
    ...l,
    a: { name: `${l.key}.lora_A`, shape: [c.r, l.inFeatures] },
    b: { name: `${l.key}.lora_B`, shape: [l.outFeatures, c.r] },
  }));
}

/** The levels the config quantises to: its codebook_values, or its kind's codebook. */
export function levelsOf(c: LowbitConfig): number[] {
  return c.codebookValues ?? codebookLevels(c.codebook, c.bits);
}

const numel = (m: LowbitMatrix) => m.shape[0] * m.shape[1];

/** A trunc_normal_(std, a = −2·std, b = 2·std) draw (timm's, redrawn outside the bounds). */
function truncNormal(n: number, std: number, rng: Rng): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let v = rng.normal();
    while (Math.abs(v) > 2) v = rng.normal();
    out[i] = v * std;
  }
  return out;
}

/**
 * The authors' init (lora.py Adapter.__init__ with bit < 32): down (A) nn.Linear's default,
 * Kaiming-uniform a = √5, i.e. U(±1/√in); up (B) trunc_normal(std 1e-3, ±2e-3), not zero, so σ_B
 * is not 0 and the first gradient reaches A.
 */
function create(info: ModelInfo, c: LowbitConfig, rng: Rng): CreatedAdapter<LowbitConfig> {
  if (c.packed) throw new PeftConfigError('LOWBIT config: "packed" describes a loaded folder; a new adapter trains latent weights');
  const tensors = new Map<string, HostTensor>();
  for (const l of lowbitLayers(info, c)) {
    const bound = 1 / Math.sqrt(l.inFeatures);
    const a = new Float32Array(numel(l.a));
    for (let i = 0; i < a.length; i++) a[i] = rng.uniform(-bound, bound);
    tensors.set(latentKey(l.a), hostTensor("f32", [...l.a.shape], a));
    tensors.set(latentKey(l.b), hostTensor("f32", [...l.b.shape], truncNormal(numel(l.b), 1e-3, rng)));
  }
  return { tensors, config: { ...c, codebookValues: levelsOf(c) } };
}

function expectedTensors(info: ModelInfo, c: LowbitConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of lowbitLayers(info, c)) {
    for (const m of [l.a, l.b]) {
      if (c.saveLatent) out.set(latentKey(m), [...m.shape]);
      else {
        out.set(codesKey(m), [packedLength(numel(m), c.bits)]);
        out.set(muKey(m), [1]);
        out.set(sigmaKey(m), [1]);
      }
    }
  }
  return out;
}

/** The weights a matrix runs with, on the host: dequantised codes, or the latent quantised now. */
export function hostWeight(c: LowbitConfig, m: LowbitMatrix, tensors: ReadonlyMap<string, HostTensor>): Float32Array {
  const levels = levelsOf(c);
  if (c.packed) {
    const get = (k: string) => {
      const t = tensors.get(k);
      if (!t) throw new PeftConfigError(`LOWBIT: the adapter has no tensor "${k}"`);
      return t.data as ArrayLike<number>;
    };
    const codes = unpackCodes(get(codesKey(m)), numel(m), c.bits, `tensor "${codesKey(m)}"`);
    return dequantize({ codes, mu: get(muKey(m))[0], sigma: get(sigmaKey(m))[0] }, levels);
  }
  const w = tensors.get(latentKey(m));
  if (!w) throw new PeftConfigError(`LOWBIT: the adapter has no tensor "${latentKey(m)}"`);
  return dequantize(quantize(w.data as Float32Array, levels), levels);
}

/** A short tag of the levels, for prepared-input keys. */
function levelsTag(levels: readonly number[]): string {
  let h = 2166136261;
  for (const ch of levels.join(",")) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
  return h.toString(16);
}

/**
 * A matrix as the forward uses it. Inference: the weights quantised (or dequantised) on the host,
 * exactly what a saved folder reloads. Gradient steps: the quantisation-aware graph.
 */
function matrixTensor(c: LowbitConfig, m: LowbitMatrix, opts: WrapOptions, quantizer: Quantizer): Tensor {
  const levels = levelsOf(c);
  if (opts.prepared) {
    const sources = c.packed ? [codesKey(m), muKey(m), sigmaKey(m)] : [latentKey(m)];
    const map = (src: HostTensor[]) => new Map(sources.map((k, i) => [k, src[i]]));
    const t = opts.prepared(`lowbit:${c.packed ? "p" : "l"}${c.bits}:${levelsTag(levels)}:${m.name}`, sources, (...src) =>
      hostTensor("f32", [...m.shape], hostWeight(c, m, map(src))),
    );
    if (t) return t;
  }
  if (c.packed)
    throw new PeftConfigError(
      "LOWBIT: a packed adapter (a loaded folder) runs and merges with its dequantised weights but does not train; train from a folder saved with save_latent",
    );
  return quantizer(m, opts.tensor(latentKey(m)), levels);
}

/** What a latent matrix becomes in a gradient step (tests: the straight-through map linearised). */
export type Quantizer = (m: LowbitMatrix, w: Tensor, levels: readonly number[]) => Tensor;

/** y = W·x + s·x·A_qᵀ·B_qᵀ on the targeted layers. */
export function lowbitContext(
  base: ForwardContext,
  info: ModelInfo,
  c: LowbitConfig,
  opts: WrapOptions,
  quantizer: Quantizer = (_m, w, levels) => fakeQuantize(w, levels),
): ForwardContext {
  return new LinearDeltaContext(base, lowbitLayers(info, c), opts.rowMask, (l, x) => {
    const a = matrixTensor(c, l.a, opts, quantizer).cast(x.dtype);
    const b = matrixTensor(c, l.b, opts, quantizer).cast(x.dtype);
    return x.matmul(a.transpose()).matmul(b.transpose()).mul(c.scale);
  });
}

function wrap(base: ForwardContext, info: ModelInfo, c: LowbitConfig, opts: WrapOptions): ForwardContext {
  return lowbitContext(base, info, c, opts);
}

/** W ← W + s·B_q·A_q in the stored layout. */
function merge(info: ModelInfo, c: LowbitConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of lowbitLayers(info, c)) {
    const name = `${l.path}.weight`;
    const w = info.weight(name);
    const a = hostWeight(c, l.a, tensors);
    const b = hostWeight(c, l.b, tensors);
    const data = Float32Array.from(w.data as Float32Array);
    const [r, inF] = l.a.shape;
    const outF = l.b.shape[0];
    for (let o = 0; o < outF; o++) {
      for (let i = 0; i < inF; i++) {
        let s = 0;
        for (let k = 0; k < r; k++) s += b[o * r + k] * a[k * inF + i];
        data[info.fanInFanOut ? i * outF + o : o * inF + i] += c.scale * s;
      }
    }
    out.set(name, { dtype: w.dtype, shape: [...w.shape], data });
  }
  return out;
}

/** Codes (U8), μ and σ per matrix; or, with save_latent, the latent weights. */
function tensorsToSave(info: ModelInfo, c: LowbitConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor | RawTensor> {
  if (c.saveLatent) return new Map(tensors);
  const levels = levelsOf(c);
  const out = new Map<string, HostTensor | RawTensor>();
  for (const l of lowbitLayers(info, c)) {
    for (const m of [l.a, l.b]) {
      let bytes: Uint8Array;
      let mu: number;
      let sigma: number;
      if (c.packed) {
        // A loaded folder saves again as it was read.
        const data = (k: string) => (tensors.get(k) as HostTensor).data as ArrayLike<number>;
        bytes = Uint8Array.from(data(codesKey(m)));
        mu = data(muKey(m))[0];
        sigma = data(sigmaKey(m))[0];
      } else {
        const q = quantize(tensors.get(latentKey(m))?.data as Float32Array, levels);
        bytes = packCodes(q.codes, c.bits);
        mu = q.mu;
        sigma = q.sigma;
      }
      out.set(codesKey(m), { dtype: "U8", shape: [bytes.length], data: bytes });
      out.set(muKey(m), hostTensor("f32", [1], Float32Array.of(mu)));
      out.set(sigmaKey(m), hostTensor("f32", [1], Float32Array.of(sigma)));
    }
  }
  return out;
}

/**
 * A packed folder's U8 codes (read as i32 byte values) held as f32, like every other adapter
 * tensor: a training step then reaches wrap() and its one-line refusal, not a dtype mismatch.
 */
function tensorsFromSaved(_info: ModelInfo, _c: LowbitConfig, saved: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  return new Map(
    [...saved].map(([k, t]) => [
      k,
      k.endsWith(".qcodes") && t.dtype !== "f32" ? hostTensor("f32", [...t.shape], Float32Array.from(t.data as ArrayLike<number>)) : t,
    ]),
  );
}

/**
 * One-line errors for a packed folder whose codes do not fit the model (a truncated or corrupt
 * file), before the generic shape check lists every mismatch.
 */
function checkFolder(raw: RawPeftConfig, shapes: ReadonlyMap<string, readonly number[]>, where: string, info?: ModelInfo): undefined {
  if (!info) return undefined;
  const c = parseLowbitConfig(raw, join(where, "adapter_config.json"));
  if (c.saveLatent) return undefined;
  const file = join(where, "adapter_model.safetensors");
  for (const l of lowbitLayers(info, c)) {
    for (const m of [l.a, l.b]) {
      const got = shapes.get(codesKey(m));
      const want = packedLength(numel(m), c.bits);
      if (got && (got.length !== 1 || got[0] !== want))
        throw new PeftConfigError(
          `${file}: tensor "${PREFIX}${codesKey(m)}" holds [${got.join(", ")}] bytes, expected ⌈${numel(m)}·${c.bits}/8⌉ = ${want} (truncated or corrupt)`,
        );
    }
  }
  return undefined;
}

export const LOWBIT: Tuner<LowbitConfig> = {
  peftType: "LOWBIT",
  parseConfig: parseLowbitConfig,
  toJson: lowbitConfigJson,
  create,
  expectedTensors,
  wrap,
  merge,
  tensorsToSave,
  tensorsFromSaved,
  checkFolder,
  supportsMixedBatch: true,
};
