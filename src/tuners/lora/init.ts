/**
 * Fresh LoRA tensors, following PEFT's LoraLayer.update_layer: the A/B init chosen by
 * init_lora_weights (Kaiming/zero, gaussian, PiSSA, OLoRA; embeddings always A = 0, B ~ N(0, 1)),
 * then DoRA's magnitude from the (possibly residual) base weight, then trainable bias copies.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { type Matrix, matmul, matrix, qr, svd } from "../../util/linalg.js";
import { fillNormal, fillUniform, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import type { CreateData, CreatedAdapter, ModelInfo } from "../tuner.js";
import type { LoraConfig } from "./config.js";
import { cordaFactors, layerCovariance } from "./corda.js";
import {
  addInto,
  biasTargets,
  type LoraLayer,
  logicalWeight,
  loraKeys,
  loraLayers,
  rowNorms,
  scaledDelta,
  storedWeight,
} from "./layers.js";

interface Factors {
  a: Float32Array;
  b: Float32Array;
  /** The base weight with s·B·A removed ([out, in], float64), for PiSSA/OLoRA. */
  residual?: Matrix;
}

function kaiming(l: LoraLayer, rng: Rng): Float32Array {
  // Kaiming-uniform with a = √5, as nn.Linear and PEFT: bound 1/√fan_in.
  const bound = 1 / Math.sqrt(l.inFeatures);
  return fillUniform(l.r * l.inFeatures, -bound, bound, rng);
}

function checkRank(l: LoraLayer, what: string): void {
  const k = Math.min(l.inFeatures, l.outFeatures);
  if (l.r > k) throw new PeftConfigError(`${what}: r = ${l.r} exceeds min(in, out) = ${k} of "${l.key}"`);
}

/**
 * PiSSA: W = U·S·Vᵀ; with S_r' = S_r / s, A = diag(√S_r')·V_rᵀ and B = U_r·diag(√S_r'), so
 * s·B·A is W's best rank-r part and the base keeps the rest. pissa_niter_N uses PEFT's randomized
 * low-rank SVD; here the exact SVD stands in for it (the limit of more iterations).
 */
function pissa(info: ModelInfo, l: LoraLayer): Factors {
  checkRank(l, "PiSSA");
  const w = logicalWeight(info, l);
  const { u, s, v } = svd(w);
  const k = s.length;
  const a = new Float32Array(l.r * l.inFeatures);
  const b = new Float32Array(l.outFeatures * l.r);
  const ad = matrix(l.r, l.inFeatures);
  const bd = matrix(l.outFeatures, l.r);
  for (let j = 0; j < l.r; j++) {
    const root = Math.sqrt(s[j] / l.scaling);
    for (let i = 0; i < l.inFeatures; i++) ad.data[j * l.inFeatures + i] = root * v.data[i * k + j];
    for (let o = 0; o < l.outFeatures; o++) bd.data[o * l.r + j] = root * u.data[o * k + j];
  }
  a.set(ad.data);
  b.set(bd.data);
  return { a, b, residual: residualOf(w, l, a, b) };
}

/**
 * OLoRA: thin QR of the weight as stored, A = R[:r] and B = Q[:, :r] (not rescaled), and the base
 * keeps W − s·B·A. PEFT decomposes the stored [in, out] tensor of a Conv1D too, which yields
 * factors of the wrong shapes, so fan_in_fan_out layers are refused here.
 */
function olora(info: ModelInfo, l: LoraLayer): Factors {
  if (info.fanInFanOut)
    throw new PeftConfigError(`OLoRA: "${l.key}" stores its weight [in, out] (fan_in_fan_out); PEFT's OLoRA does not support such layers`);
  checkRank(l, "OLoRA");
  const w = logicalWeight(info, l);
  const { q, r } = qr(w);
  const k = q.cols;
  const a = new Float32Array(l.r * l.inFeatures);
  const b = new Float32Array(l.outFeatures * l.r);
  for (let j = 0; j < l.r; j++) {
    for (let i = 0; i < l.inFeatures; i++) a[j * l.inFeatures + i] = r.data[j * l.inFeatures + i];
    for (let o = 0; o < l.outFeatures; o++) b[o * l.r + j] = q.data[o * k + j];
  }
  return { a, b, residual: residualOf(w, l, a, b) };
}

/** W − s·B·A with the f32 factors actually stored, so W_res + s·B·A reproduces W. */
function residualOf(w: Matrix, l: LoraLayer, a: Float32Array, b: Float32Array): Matrix {
  const bm = matrix(l.outFeatures, l.r, b);
  const am = matrix(l.r, l.inFeatures, a);
  const ba = matmul(bm, am);
  const out = matrix(w.rows, w.cols, w.data);
  for (let i = 0; i < out.data.length; i++) out.data[i] -= l.scaling * ba.data[i];
  return out;
}

/** CorDA (corda.ts): the covariance-oriented SVD's r largest (IPM) or smallest (KPM) components; the base keeps the rest. */
function corda(info: ModelInfo, c: LoraConfig, l: LoraLayer, data: CreateData | undefined): Factors {
  const w = logicalWeight(info, l);
  const { a, b } = cordaFactors(w, layerCovariance(l, data?.calibration), l, c.cordaConfig?.cordaMethod ?? "ipm");
  return { a, b, residual: residualOf(w, l, a, b) };
}

function factors(info: ModelInfo, c: LoraConfig, l: LoraLayer, rng: Rng, data?: CreateData): Factors {
  const init = c.initLoraWeights;
  if (l.kind === "embedding") {
    // PEFT's Embedding: A ~ N(0,1), B ~ N(0,1) (torch.randn) and, unless init is False,
    // reset to A = 0, B ~ N(0,1). PiSSA/OLoRA/gaussian do not apply to embeddings.
    const a = fillNormal(l.r * l.inFeatures, 1, rng);
    const b = fillNormal(l.outFeatures * l.r, 1, rng);
    if (init !== false) a.fill(0);
    return { a, b };
  }
  if (init === "olora") return olora(info, l);
  if (init === "corda") return corda(info, c, l, data);
  if (init === "pissa" || (typeof init === "string" && init.startsWith("pissa_niter_"))) return pissa(info, l);
  if (init === "gaussian") return { a: fillNormal(l.r * l.inFeatures, 1 / l.r, rng), b: new Float32Array(l.outFeatures * l.r) };
  const a = kaiming(l, rng);
  // init_lora_weights=False keeps nn.Linear's default for B too: bound 1/√r.
  const b =
    init === false ? fillUniform(l.outFeatures * l.r, -1 / Math.sqrt(l.r), 1 / Math.sqrt(l.r), rng) : new Float32Array(l.outFeatures * l.r);
  return { a, b };
}

/** DoRA's magnitude: ‖W + s·B·A‖ per output feature (per embedding dim for embeddings). */
export function doraMagnitude(w: Matrix, l: LoraLayer, a: HostTensor, b: HostTensor): HostTensor {
  return hostTensor("f32", [l.outFeatures], Float32Array.from(rowNorms(addInto(w, scaledDelta(l, a, b)))));
}

export function createLora(info: ModelInfo, c: LoraConfig, rng: Rng, data?: CreateData): CreatedAdapter {
  const layers = loraLayers(info, c);
  const tensors = new Map<string, HostTensor>();
  const magnitudes = new Map<string, HostTensor>();
  const baseEdits = new Map<string, HostTensor>();
  for (const l of layers) {
    const k = loraKeys(l);
    const f = factors(info, c, l, rng, data);
    const a = hostTensor("f32", [l.r, l.inFeatures], f.a);
    const b = hostTensor("f32", [l.outFeatures, l.r], f.b);
    tensors.set(k.a, a);
    tensors.set(k.b, b);
    if (f.residual) baseEdits.set(`${l.path}.weight`, storedWeight(info, l, f.residual));
    if (c.useDora) magnitudes.set(k.m, doraMagnitude(f.residual ?? logicalWeight(info, l), l, a, b));
  }
  for (const t of biasTargets(info, c, layers)) {
    const w = info.weight(t.name);
    tensors.set(t.key, hostTensor(w.dtype, w.shape, (w.data as Float32Array).slice()));
  }
  // Magnitudes first: their gradient is exact, while A and B see a detached norm (DoRA §4.3),
  // which finite differences of the whole function cannot reproduce.
  return { tensors: new Map([...magnitudes, ...tensors]), baseEdits: baseEdits.size ? baseEdits : undefined };
}

export function expectedLoraTensors(info: ModelInfo, c: LoraConfig): Map<string, number[]> {
  const layers = loraLayers(info, c);
  const out = new Map<string, number[]>();
  for (const l of layers) {
    const k = loraKeys(l);
    out.set(k.a, [l.r, l.inFeatures]);
    out.set(k.b, [l.outFeatures, l.r]);
    if (c.useDora) out.set(k.m, [l.outFeatures]);
  }
  for (const t of biasTargets(info, c, layers)) out.set(t.key, [...info.weight(t.name).shape]);
  return out;
}
