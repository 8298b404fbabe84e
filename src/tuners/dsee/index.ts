/**
 * DSEE (Chen et al., "DSEE: Dually Sparsity-embedded Efficient Tuning of Pre-trained Language
 * Models", arXiv 2111.00160; code VITA-Group/DSEE, non-GPT-2/src/transformers/models/bert/
 * modeling_bert.py `BertSelfAttention`), peft_type "DSEE". Each targeted linear layer (LoRA's
 * default targets: q and v) gains LoRA's low-rank update and a sparse update S on N entries
 * chosen once from the pretrained weight (selection.ts):
 *
 *   y = x·(W + s·(B·A + S))ᵀ + b,   s = lora_alpha / r
 *
 * (with sparse_scaling false, S enters unscaled: W + s·B·A + S). The low-rank part is LoRA's own
 * code (tuners/lora: targets, init, forward, merge); S is the shared sparse machinery
 * (src/sparse: N trained values at fixed i32 positions, gradients and AdamW state for those N only).
 *
 * Saved format (adapter_model.safetensors):
 *   <m>.lora_A.weight          [r, in]   trained, PEFT LoRA's key and init
 *   <m>.lora_B.weight          [out, r]  trained
 *   <m>.dsee_delta.indices     [N] I32   fixed: flat row-major positions in W's stored layout, increasing
 *   <m>.dsee_delta.values      [N] F32   trained: S at those positions, NOT pre-scaled (the update is s·values
 *                                        when sparse_scaling is true, as the config file says)
 */
import type { HostTensor } from "../../engine/ir/host.js";
import type { ForwardContext } from "../../nn/context.js";
import {
  SparseDeltaContext,
  type SparseKeys,
  type SparseTarget,
  sparseDeltaOf,
  sparseTargets,
  sparseTensors,
} from "../../sparse/adapter.js";
import { applyDelta } from "../../sparse/delta.js";
import { fillNormal, Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { LORA } from "../lora/index.js";
import { type LoraLayer, logicalWeight, loraLayers } from "../lora/layers.js";
import type { CreateData, CreatedAdapter, ModelInfo, Tuner, WrapOptions } from "../tuner.js";
import { type DseeConfig, dseeConfigJson, parseDseeConfig } from "./config.js";
import { selectSupport } from "./selection.js";

const WHERE = "DSEE config";
const INDICES = ".dsee_delta.indices";
const VALUES = ".dsee_delta.values";
/** Spread of S when init_lora_weights is false (tests: a non-trivial start). */
const RANDOM_STD = 0.1;

export const dseeKeys = (t: { key: string }): SparseKeys => ({ indices: `${t.key}${INDICES}`, values: `${t.key}${VALUES}` });

export interface DseeLayer {
  lora: LoraLayer;
  sparse: SparseTarget;
  /** The factor S is multiplied by: LoRA's s of the layer, or 1. */
  sparseScale: number;
}

/** LoRA's layers for this config, each with its sparse target of N entries. */
export function dseeLayers(info: ModelInfo, c: DseeConfig): DseeLayer[] {
  const layers = loraLayers(info, c);
  for (const l of layers)
    if (l.kind !== "linear")
      throw new PeftConfigError(`${WHERE}: "${l.key}" is an embedding table; DSEE's sparse part trains linear layers only`);
  const sparse = sparseTargets(info, layers, (l, numel) => {
    if (c.numSparse > numel)
      throw new PeftConfigError(`${WHERE}: field "num_sparse" = ${c.numSparse} exceeds the ${numel} entries of "${l.key}"`);
    return c.numSparse;
  });
  return layers.map((l, i) => ({ lora: l, sparse: sparse[i], sparseScale: c.sparseScaling ? l.scaling : 1 }));
}

/** Logical [out, in] positions → the weight's stored layout ([in, out] for GPT-2's Conv1D), increasing. */
function storedPositions(info: ModelInfo, l: LoraLayer, logical: Int32Array): Int32Array {
  if (!info.fanInFanOut) return logical;
  return Int32Array.from(logical, (p) => (p % l.inFeatures) * l.outFeatures + Math.floor(p / l.inFeatures)).sort();
}

function create(info: ModelInfo, c: DseeConfig, rng: Rng, data?: CreateData): CreatedAdapter {
  const layers = dseeLayers(info, c);
  // LoRA's creation resolves nothing into its config: the DSEE config stays as given.
  const { tensors, baseEdits } = LORA.create(info, c, rng, data);
  const seeds = new Rng(c.sparseSeed);
  for (const { lora, sparse } of layers) {
    const draw = seeds.fork();
    const logical = selectSupport(logicalWeight(info, lora), {
      method: c.sparseMethod,
      n: sparse.k,
      rng: draw,
      grebsmo: {
        rankStep: c.grebsmoRankStep,
        outerIters: c.grebsmoOuterIters,
        innerIters: c.grebsmoInnerIters,
        threshold: c.grebsmoThreshold,
      },
    });
    const values = c.initLoraWeights === false ? fillNormal(sparse.k, RANDOM_STD, rng) : new Float32Array(sparse.k);
    for (const [k, v] of sparseTensors(dseeKeys(sparse), storedPositions(info, lora, logical), values)) tensors.set(k, v);
  }
  return { tensors, baseEdits };
}

function expectedTensors(info: ModelInfo, c: DseeConfig): Map<string, number[]> {
  const out = LORA.expectedTensors(info, c);
  for (const { sparse } of dseeLayers(info, c)) {
    const k = dseeKeys(sparse);
    out.set(k.indices, [sparse.k]);
    out.set(k.values, [sparse.k]);
  }
  return out;
}

/**
 * S innermost (x·(W + s·S)ᵀ + b through sparseLinear, whose backward keeps no dense W + S), LoRA's
 * context around it adding s·B·A·x. The sparse context reads the values already multiplied by s.
 */
function wrap(base: ForwardContext, info: ModelInfo, c: DseeConfig, opts: WrapOptions): ForwardContext {
  const layers = dseeLayers(info, c);
  const scale = new Map(layers.map((l) => [dseeKeys(l.sparse).values, l.sparseScale]));
  const scaled: WrapOptions = {
    ...opts,
    tensor: (key) => {
      const t = opts.tensor(key);
      const s = scale.get(key);
      return s === undefined || s === 1 ? t : t.mul(s);
    },
  };
  const sparse = new SparseDeltaContext(
    base,
    layers.map((l) => l.sparse),
    dseeKeys,
    scaled,
  );
  return LORA.wrap(sparse, info, c, opts);
}

/** W + s·B·A (LoRA's merge) + s·S at the N positions. */
function merge(
  info: ModelInfo,
  c: DseeConfig,
  tensors: ReadonlyMap<string, HostTensor>,
  unmerged?: (name: string) => HostTensor,
): Map<string, HostTensor> {
  const out = LORA.merge?.(info, c, tensors, unmerged) ?? new Map<string, HostTensor>();
  for (const l of dseeLayers(info, c)) {
    const t = l.sparse;
    const w = out.get(t.weight) ?? info.weight(t.weight);
    out.set(t.weight, applyDelta(w, sparseDeltaOf(t, dseeKeys(t), tensors, "DSEE merge"), l.sparseScale, "DSEE merge"));
  }
  return out;
}

export const DSEE: Tuner<DseeConfig> = {
  peftType: "DSEE",
  parseConfig: parseDseeConfig,
  toJson: dseeConfigJson,
  create,
  calibration: (info, c) => LORA.calibration?.(info, c) ?? null,
  expectedTensors,
  trainable: (key) => !key.endsWith(INDICES),
  wrap,
  merge,
  supportsMixedBatch: true,
};
