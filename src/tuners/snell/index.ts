/**
 * SNELL (Shen et al., NeurIPS 2024, "Expanding Sparse Tuning for Low Memory Usage") and SNELLA
 * (Shen et al. 2025, "Kernelized Sparse Fine-Tuning with Bi-level Parameter Competition for
 * Vision Models"; catalog §1.9, seeds #11 and #10), after the authors' code ssfgunner/SNELL
 * (model/vision_transformer_timm.py: KLoRA, SNELL, SNELLA; sparse_allocator.py: Allocator).
 *
 * Each targeted linear gets a parallel branch y = W·x + ΔW·x with ΔWᵀ the sparsified kernel
 * matrix of kernel.ts. SNELL sparsifies every layer at one ratio; SNELLA adds learnable α, γ, β
 * and a controller (controller.ts) that moves each layer's ratio with the allocator's budget.
 *
 * Stored, per module <m> (PEFT-style keys, f32):
 *   SNELL:  <m>.snell_P [H, in, r/H], <m>.snell_Q [H, out, r/H]
 *   SNELLA: <m>.snella_P, <m>.snella_Q (same shapes), <m>.snella_alpha [1], <m>.snella_gamma [1],
 *           <m>.snella_beta [1], <m>.snella_ratio [1] (the layer's sparsity ratio; never trained)
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import * as F from "../../engine/trace/composites.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { matrix } from "../../util/linalg.js";
import { fillUniform, type Rng } from "../../util/rng.js";
import { layerSeed } from "../layer-seed.js";
import { addInto, logicalWeight, storedWeight } from "../lora/layers.js";
import { type FamilyLayer, f32, need } from "../svfit/family.js";
import { type CreatedAdapter, LinearDeltaContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { parseSnellaConfig, parseSnellConfig, type SnellaConfig, type SnellConfig, snellaConfigJson, snellConfigJson } from "./config.js";
import { snellaController } from "./controller.js";
import {
  coefficients,
  kernelMatrix,
  kernelMatrixHost,
  snellaTransform,
  snellaTransformHost,
  sparsifyDynamic,
  sparsifyHost,
  sparsifyStatic,
} from "./kernel.js";
import { snellKeys, snellLayers } from "./layers.js";

type Shared = SnellConfig | SnellaConfig;

const isSnella = (c: Shared): c is SnellaConfig => c.peftType === "SNELLA";
const typeOf = (c: Shared) => (isSnella(c) ? "SNELLA" : "SNELL");

/** P and Q: kaiming_uniform_(a=√5) of a 3-D tensor, i.e. U(±1/√fan_in) with fan_in = dim1·dim2. */
function create(info: ModelInfo, c: Shared, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  const k = c.r / c.numHeads;
  for (const l of snellLayers(info, c)) {
    const keys = snellKeys(l.key, typeOf(c));
    const bp = 1 / Math.sqrt(l.inFeatures * k);
    const bq = 1 / Math.sqrt(l.outFeatures * k);
    tensors.set(keys.p, hostTensor("f32", [c.numHeads, l.inFeatures, k], fillUniform(c.numHeads * l.inFeatures * k, -bp, bp, rng)));
    tensors.set(keys.q, hostTensor("f32", [c.numHeads, l.outFeatures, k], fillUniform(c.numHeads * l.outFeatures * k, -bq, bq, rng)));
    if (isSnella(c)) {
      tensors.set(keys.alpha, hostTensor("f32", [1], [1]));
      tensors.set(keys.gamma, hostTensor("f32", [1], [1]));
      tensors.set(keys.beta, hostTensor("f32", [1], [0]));
      tensors.set(keys.ratio, hostTensor("f32", [1], [c.initRatio]));
    }
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: Shared): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const k = c.r / c.numHeads;
  for (const l of snellLayers(info, c)) {
    const keys = snellKeys(l.key, typeOf(c));
    out.set(keys.p, [c.numHeads, l.inFeatures, k]);
    out.set(keys.q, [c.numHeads, l.outFeatures, k]);
    if (isSnella(c)) for (const key of [keys.alpha, keys.gamma, keys.beta, keys.ratio]) out.set(key, [1]);
  }
  return out;
}

/** The sparsified D [in, out] of one layer in the graph. */
export function sparseKernel(c: Shared, l: FamilyLayer, tensor: (key: string) => Tensor): Tensor {
  const keys = snellKeys(l.key, typeOf(c));
  const d = kernelMatrix(tensor(keys.p), tensor(keys.q), coefficients(c.numHeads, c.coefficient));
  if (isSnella(c)) {
    const t = snellaTransform(d, tensor(keys.alpha), tensor(keys.gamma), tensor(keys.beta));
    return sparsifyDynamic(t, tensor(keys.ratio), c.sparsifyMode);
  }
  // Ratio 0 is the authors' KLoRA: D as it is, no threshold and no magnitude factor.
  return c.sparsityRatio === 0 ? d : sparsifyStatic(d, c.sparsityRatio, c.sparsifyMode);
}

/**
 * At inference the sparsified D is computed once on the host (float64, rounded to f32) and fed as
 * an input, so a forward or a decoding step runs no kernel and no threshold search; in training, in the graph.
 */
function inferenceKernel(c: Shared, l: FamilyLayer, opts: WrapOptions): Tensor | null {
  if (!opts.prepared) return null;
  const keys = snellKeys(l.key, typeOf(c));
  const sources = isSnella(c) ? [keys.p, keys.q, keys.alpha, keys.gamma, keys.beta, keys.ratio] : [keys.p, keys.q];
  const ratio = isSnella(c) ? "fed" : c.sparsityRatio;
  const id = `${typeOf(c)}:${l.key}:${c.numHeads}:${c.coefficient}:${c.sparsifyMode}:${ratio}`;
  return opts.prepared(id, sources, (...src) => {
    if (src.some((t) => t.dtype !== "f32")) return null;
    const d = sparseKernelHost(c, l, new Map(sources.map((k, i) => [k, src[i]])));
    return hostTensor("f32", [l.inFeatures, l.outFeatures], Float32Array.from(d));
  });
}

function delta(c: Shared, opts: WrapOptions, l: FamilyLayer, x: Tensor): Tensor {
  const seed = opts.training && c.snellDropout > 0 ? opts.seed : null;
  const xin = seed ? F.dropout(x, c.snellDropout, layerSeed(seed, l.path)) : x;
  const d = inferenceKernel(c, l, opts) ?? sparseKernel(c, l, opts.tensor);
  return xin.matmul(d.cast(x.dtype));
}

/** The sparsified D [in, out] of one layer on the host, in float64. */
export function sparseKernelHost(c: Shared, l: FamilyLayer, tensors: ReadonlyMap<string, HostTensor>): Float64Array {
  const keys = snellKeys(l.key, typeOf(c));
  const g = (key: string) => need(typeOf(c), tensors, key);
  const d = kernelMatrixHost(g(keys.p), g(keys.q), coefficients(c.numHeads, c.coefficient));
  if (isSnella(c)) {
    const v = (key: string) => f32(g(key))[0];
    const t = snellaTransformHost(d, l.outFeatures, v(keys.alpha), v(keys.gamma), v(keys.beta));
    return sparsifyHost(t, v(keys.ratio), c.sparsifyMode);
  }
  return sparsifyHost(d, c.sparsityRatio === 0 ? null : c.sparsityRatio, c.sparsifyMode);
}

function merge(info: ModelInfo, c: Shared, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of snellLayers(info, c)) {
    const d = sparseKernelHost(c, l, tensors);
    const dw = matrix(l.outFeatures, l.inFeatures);
    for (let i = 0; i < l.inFeatures; i++) for (let o = 0; o < l.outFeatures; o++) dw.data[o * l.inFeatures + i] = d[i * l.outFeatures + o];
    out.set(`${l.path}.weight`, storedWeight(info, l, addInto(logicalWeight(info, l), dw)));
  }
  return out;
}

const wrap: Tuner<Shared>["wrap"] = (base, info, c, opts) =>
  new LinearDeltaContext(base, snellLayers(info, c), opts.rowMask, (l, x) => delta(c, opts, l, x));

export const SNELL: Tuner<SnellConfig> = {
  peftType: "SNELL",
  parseConfig: parseSnellConfig,
  toJson: snellConfigJson,
  create,
  expectedTensors,
  wrap,
  merge,
  supportsMixedBatch: true,
};

export const SNELLA: Tuner<SnellaConfig> = {
  peftType: "SNELLA",
  parseConfig: parseSnellaConfig,
  toJson: snellaConfigJson,
  create,
  trainable: (key) => !key.endsWith(".snella_ratio"),
  controller: (info, c, run) => snellaController(info, c, run),
  expectedTensors,
  wrap,
  merge,
  supportsMixedBatch: true,
};
