/**
 * PEGO (Hu et al., ECCV 2024, "Learn to Preserve and Diversify: Parameter-Efficient Group with
 * Orthogonal Regularization for Domain Generalization"; catalog §1.13, seed #47), after the
 * authors' code (JudgingH/PEGO: domainbed/networks/lora.py LoRA_ViT_timm and the PEGO algorithm in
 * domainbed/algorithms/algorithms.py). Each targeted linear layer gains a group of N LoRA modules,
 *   y = W·x + s·Σ_n B_n·A_n·dropout(x),   s = lora_alpha / r,
 * trained with the orthogonality regulariser (ΔW_n = s·B_n·A_n, ‖M‖₁ = Σ|M_ij|, W the layer's
 * pretrained weight in [out, in] layout)
 *   λ · Σ_layers Σ_n ( ‖W·ΔW_nᵀ‖₁ + Σ_{m>n} ‖ΔW_n·ΔW_mᵀ‖₁ ),
 * the first term keeping each module orthogonal to the pretrained weight (preserve), the second
 * keeping the modules mutually orthogonal (diversify). Merging folds s·Σ B_n·A_n into W.
 *
 * Saved format (peft_type "PEGO", PEFT-style keys):
 *   <m>.pego_A.<n>.weight [r, in]   trained (Kaiming-uniform, bound 1/√in, as nn.Linear)
 *   <m>.pego_B.<n>.weight [out, r]  trained (zeros)
 * for n = 0 … lora_nums − 1: N·r·(in + out) trainable parameters per layer.
 */
import type { HostTensor } from "../../engine/ir/host.js";
import { hostTensor } from "../../engine/ir/host.js";
import * as F from "../../engine/trace/composites.js";
import { concat, constant, type Tensor } from "../../engine/trace/tensor.js";
import { fillUniform, type Rng } from "../../util/rng.js";
import { layerSeed } from "../layer-seed.js";
import { addInto, logicalWeight, scaledDelta, storedWeight } from "../lora/layers.js";
import { checkRank, type FamilyLayer, familyLayers, need } from "../svfit/family.js";
import { type CreatedAdapter, LinearDeltaContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { type PegoConfig, parsePegoConfig, pegoConfigJson } from "./config.js";

export interface PegoKeys {
  a: string[];
  b: string[];
}

export function pegoKeys(key: string, n: number): PegoKeys {
  return {
    a: Array.from({ length: n }, (_, i) => `${key}.pego_A.${i}.weight`),
    b: Array.from({ length: n }, (_, i) => `${key}.pego_B.${i}.weight`),
  };
}

export function pegoLayers(info: ModelInfo, c: PegoConfig): FamilyLayer[] {
  return familyLayers(info, c, "PEGO").map((l) => {
    checkRank("PEGO", l, c.r);
    return { ...l, r: c.r, scaling: c.loraAlpha / c.r };
  });
}

function create(info: ModelInfo, c: PegoConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const l of pegoLayers(info, c)) {
    const k = pegoKeys(l.key, c.loraNums);
    for (let n = 0; n < c.loraNums; n++) {
      // nn.init.kaiming_uniform_(a=√5) on an [r, in] weight: bound 1/√in (the authors' reset_parameters).
      const bound = 1 / Math.sqrt(l.inFeatures);
      tensors.set(k.a[n], hostTensor("f32", [c.r, l.inFeatures], fillUniform(c.r * l.inFeatures, -bound, bound, rng)));
      const b = c.initWeights
        ? new Float32Array(l.outFeatures * c.r)
        : fillUniform(l.outFeatures * c.r, -1 / Math.sqrt(c.r), 1 / Math.sqrt(c.r), rng);
      tensors.set(k.b[n], hostTensor("f32", [l.outFeatures, c.r], b));
    }
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: PegoConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of pegoLayers(info, c)) {
    const k = pegoKeys(l.key, c.loraNums);
    for (let n = 0; n < c.loraNums; n++) {
      out.set(k.a[n], [c.r, l.inFeatures]);
      out.set(k.b[n], [l.outFeatures, c.r]);
    }
  }
  return out;
}

/** s·Σ_n B_n·A_n·x as one product: the group's A's stacked [N·r, in] and B's side by side [out, N·r]. */
function pegoDelta(c: PegoConfig, opts: WrapOptions, l: FamilyLayer, x: Tensor): Tensor {
  const k = pegoKeys(l.key, c.loraNums);
  const a = c.loraNums === 1 ? opts.tensor(k.a[0]) : concat(k.a.map(opts.tensor), 0);
  const b = c.loraNums === 1 ? opts.tensor(k.b[0]) : concat(k.b.map(opts.tensor), 1);
  const seed = opts.training && c.loraDropout > 0 ? opts.seed : null;
  const xin = seed ? F.dropout(x, c.loraDropout, layerSeed(seed, l.path)) : x;
  return xin.matmul(a.transpose()).matmul(b.transpose()).mul(l.scaling);
}

/** The pretrained weight in [out, in] layout, as a graph tensor of dtype `dtype`. */
function baseWeight(info: ModelInfo, l: FamilyLayer, opts: WrapOptions, dtype: Tensor["dtype"]): Tensor {
  const name = `${l.path}.weight`;
  // Outside a training step (a test calling loss() directly) the weight enters as a constant.
  const w = opts.baseWeight ? opts.baseWeight(name) : constant(info.weight(name));
  const logical = info.fanInFanOut ? w.transpose() : w;
  return logical.dtype === dtype ? logical : logical.cast(dtype);
}

/** λ · Σ_layers Σ_n (‖W·ΔW_nᵀ‖₁ + Σ_{m>n} ‖ΔW_n·ΔW_mᵀ‖₁), ΔW_n = s·B_n·A_n. */
function loss(info: ModelInfo, c: PegoConfig, opts: WrapOptions): Tensor | null {
  if (c.orthLambda === 0) return null;
  const layers = pegoLayers(info, c);
  if (!layers.length) return null;
  let total: Tensor | null = null;
  const add = (t: Tensor) => {
    total = total ? total.add(t) : t;
  };
  for (const l of layers) {
    const k = pegoKeys(l.key, c.loraNums);
    const a = k.a.map(opts.tensor);
    const b = k.b.map(opts.tensor);
    const s = l.scaling;
    const w = baseWeight(info, l, opts, a[0].dtype);
    for (let n = 0; n < c.loraNums; n++) {
      // W·ΔW_nᵀ = s·(W·A_nᵀ)·B_nᵀ: [out, r]·[r, out], never forming the [out, in] ΔW_n.
      add(w.matmul(a[n].transpose()).matmul(b[n].transpose()).mul(s).abs().sum());
      // ΔW_n·ΔW_mᵀ = s²·B_n·(A_n·A_mᵀ)·B_mᵀ.
      for (let m = n + 1; m < c.loraNums; m++)
        add(
          b[n]
            .matmul(a[n].matmul(a[m].transpose()))
            .matmul(b[m].transpose())
            .mul(s * s)
            .abs()
            .sum(),
        );
    }
  }
  return (total as unknown as Tensor).mul(c.orthLambda);
}

function merge(info: ModelInfo, c: PegoConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of pegoLayers(info, c)) {
    const k = pegoKeys(l.key, c.loraNums);
    let w = logicalWeight(info, l);
    for (let n = 0; n < c.loraNums; n++) w = addInto(w, scaledDelta(l, need("PEGO", tensors, k.a[n]), need("PEGO", tensors, k.b[n])));
    out.set(`${l.path}.weight`, storedWeight(info, l, w));
  }
  return out;
}

export const PEGO: Tuner<PegoConfig> = {
  peftType: "PEGO",
  parseConfig: parsePegoConfig,
  toJson: pegoConfigJson,
  create,
  loss,
  expectedTensors,
  wrap: (base, info, c, opts) => new LinearDeltaContext(base, pegoLayers(info, c), opts.rowMask, (l, x) => pegoDelta(c, opts, l, x)),
  merge,
  supportsMixedBatch: true,
};
