/**
 * Which modules a LoRA config attaches to (linear and embedding layers), the adapter tensor keys
 * PEFT uses for them, and host-side (float64) views of base weights used by init and merging.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { type Matrix, matrix } from "../../util/linalg.js";
import { PeftConfigError } from "../config.js";
import { LORA_DEFAULT_TARGETS } from "../defaults.js";
import { modulesToSaveKeys } from "../modules-to-save.js";
import { patternValue, selectTargets } from "../targets.js";
import type { ModelInfo } from "../tuner.js";
import type { LoraConfig } from "./config.js";

export interface LoraLayer {
  /** Canonical path of the layer (its weight is `${path}.weight`). */
  path: string;
  /** PEFT module name: the key prefix of its adapter tensors. */
  key: string;
  kind: "linear" | "embedding";
  /** Linear: in_features. Embedding: num_embeddings (PEFT's in_features for nn.Embedding). */
  inFeatures: number;
  /** Linear: out_features. Embedding: embedding_dim. */
  outFeatures: number;
  r: number;
  scaling: number;
}

export interface LoraKeys {
  a: string;
  b: string;
  /** DoRA's magnitude vector (PEFT saves it without ".weight"). */
  m: string;
}

export function loraKeys(l: LoraLayer): LoraKeys {
  return l.kind === "linear"
    ? { a: `${l.key}.lora_A.weight`, b: `${l.key}.lora_B.weight`, m: `${l.key}.lora_magnitude_vector` }
    : { a: `${l.key}.lora_embedding_A`, b: `${l.key}.lora_embedding_B`, m: `${l.key}.lora_magnitude_vector` };
}

/** Embedding tables: 2-D `<path>.weight` tensors whose path is not a linear layer. */
export function embeddingLayers(info: ModelInfo): string[] {
  const linear = new Set(info.linearLayers);
  const out: string[] = [];
  for (const name of info.weightNames()) {
    if (!name.endsWith(".weight")) continue;
    const path = name.slice(0, -".weight".length);
    if (linear.has(path) || info.weight(name).shape.length !== 2) continue;
    out.push(path);
  }
  return out;
}

/** The layers a config targets, with their per-layer rank and scaling. */
export function loraLayers(info: ModelInfo, c: LoraConfig): LoraLayer[] {
  const byPeft = new Map<string, { path: string; kind: LoraLayer["kind"] }>();
  for (const p of info.linearLayers) byPeft.set(info.peftName(p), { path: p, kind: "linear" });
  for (const p of embeddingLayers(info)) byPeft.set(info.peftName(p), { path: p, kind: "embedding" });
  const chosen = selectTargets(c, [...byPeft.keys()], {
    allLinear: info.allLinear.map((p) => info.peftName(p)),
    defaults: LORA_DEFAULT_TARGETS[info.modelType] ?? null,
    where: "LoRA config",
  });
  return chosen.map((name) => {
    const { path, kind } = byPeft.get(name) as { path: string; kind: LoraLayer["kind"] };
    const [d0, d1] = info.weight(`${path}.weight`).shape;
    // Embedding tables are [num_embeddings, dim] whatever fan_in_fan_out says.
    const fif = kind === "linear" && info.fanInFanOut;
    const r = patternValue(c.rankPattern, name, c.r);
    const alpha = patternValue(c.alphaPattern, name, c.loraAlpha);
    return {
      path,
      key: name,
      kind,
      inFeatures: kind === "embedding" ? d0 : fif ? d0 : d1,
      outFeatures: kind === "embedding" ? d1 : fif ? d1 : d0,
      r,
      scaling: c.useRslora ? alpha / Math.sqrt(r) : alpha / r,
    };
  });
}

export interface BiasTarget {
  /** Canonical weight name of the bias, e.g. "model.layers.0.self_attn.q_proj.bias". */
  name: string;
  /** Its module path. */
  path: string;
  /** Adapter key: "<module>.base_layer.bias" for LoRA-wrapped modules, "<module>.bias" otherwise (PEFT's state-dict names). */
  key: string;
}

/**
 * The biases a config trains: none; every bias of the model ("all"); or the biases of the
 * LoRA-targeted layers ("lora_only"). Biases of modules_to_save modules are left to their copies.
 */
export function biasTargets(info: ModelInfo, c: LoraConfig, layers: readonly LoraLayer[]): BiasTarget[] {
  if (c.bias === "none") return [];
  const wrapped = new Map(layers.map((l) => [l.path, l.key]));
  const saved = modulesToSaveKeys(info, c.modulesToSave);
  const out: BiasTarget[] = [];
  const candidates = c.bias === "all" ? info.weightNames().filter((n) => n.endsWith(".bias")) : layers.map((l) => `${l.path}.bias`);
  for (const name of candidates) {
    if (!info.hasWeight(name) || saved.has(name)) continue;
    const path = name.slice(0, -".bias".length);
    const peftKey = wrapped.get(path);
    out.push({ name, path, key: peftKey !== undefined ? `${peftKey}.base_layer.bias` : `${info.peftName(path)}.bias` });
  }
  return out;
}

/**
 * The layer's base weight (or `w`, a tensor of its shape) as a float64 [out, in] matrix
 * (transposed from GPT-2's [in, out]; embeddings give [dim, num]).
 */
export function logicalWeight(info: ModelInfo, l: LoraLayer, w: HostTensor = info.weight(`${l.path}.weight`)): Matrix {
  const src = w.data as Float32Array;
  const m = matrix(l.outFeatures, l.inFeatures);
  const stored = l.kind === "embedding" || info.fanInFanOut ? "transposed" : "same";
  for (let o = 0; o < l.outFeatures; o++) {
    for (let i = 0; i < l.inFeatures; i++) {
      m.data[o * l.inFeatures + i] = stored === "same" ? src[o * l.inFeatures + i] : src[i * l.outFeatures + o];
    }
  }
  return m;
}

/** Writes a float64 [out, in] matrix back in the layer's stored layout, as f32. */
export function storedWeight(info: ModelInfo, l: LoraLayer, m: Matrix): HostTensor {
  const w = info.weight(`${l.path}.weight`);
  const out = new Float32Array(m.data.length);
  const transposed = l.kind === "embedding" || info.fanInFanOut;
  for (let o = 0; o < l.outFeatures; o++) {
    for (let i = 0; i < l.inFeatures; i++) {
      out[transposed ? i * l.outFeatures + o : o * l.inFeatures + i] = m.data[o * l.inFeatures + i];
    }
  }
  return hostTensor("f32", w.shape, out);
}

/** s·B·A as a float64 [out, in] matrix, from f32 adapter tensors A [r, in] and B [out, r]. */
export function scaledDelta(l: LoraLayer, a: HostTensor, b: HostTensor): Matrix {
  const r = a.shape[0];
  if (b.shape[1] !== r) throw new PeftConfigError(`${l.key}: lora B [${b.shape}] does not fit lora A [${a.shape}]`);
  const ad = a.data as Float32Array;
  const bd = b.data as Float32Array;
  const d = matrix(l.outFeatures, l.inFeatures);
  for (let o = 0; o < l.outFeatures; o++) {
    for (let k = 0; k < r; k++) {
      const v = bd[o * r + k] * l.scaling;
      if (v === 0) continue;
      const row = o * l.inFeatures;
      const arow = k * l.inFeatures;
      for (let i = 0; i < l.inFeatures; i++) d.data[row + i] += v * ad[arow + i];
    }
  }
  return d;
}

/** Euclidean norm of each row of an [out, in] matrix (DoRA's ‖W + s·B·A‖ per output feature). */
export function rowNorms(m: Matrix): Float64Array {
  const out = new Float64Array(m.rows);
  for (let o = 0; o < m.rows; o++) {
    let s = 0;
    for (let i = 0; i < m.cols; i++) s += m.data[o * m.cols + i] ** 2;
    out[o] = Math.sqrt(s);
  }
  return out;
}

export function addInto(a: Matrix, b: Matrix): Matrix {
  const out = matrix(a.rows, a.cols, a.data);
  for (let i = 0; i < out.data.length; i++) out.data[i] += b.data[i];
  return out;
}
