/**
 * IncreLoRA (Zhang et al. 2023, "IncreLoRA: Incremental Parameter Allocation Method for
 * Parameter-Efficient Fine-tuning"; catalog §1.10, seed #59), after the authors' code
 * (FeiyuZhang98/IncreLoRA: loralib/loralib/increlora.py, NLU/src/transformers/trainer.py).
 *
 * Each module is a sum of rank-1 triplets, ΔW = (Σ_i b_i·e_i·a_i) · α / (ranknum + 1e-5), that
 * starts at rank r and grows: every `incre_interval` steps after `init_warmup` the `top_h` most
 * important modules gain `incre_rank_num` ranks until the total reaches the budget (controller.ts).
 * A module's importance is AdaLoRA's smoothing of Σ|ΔW ⊙ ∂L/∂ΔW| / √numel(ΔW), which the training
 * forward asks of the step with a probe on the materialised ΔW (as the authors' backward hook
 * on the same product). The loss adds orth_reg_weight · mean over modules of ‖AAᵀ − I‖_F and
 * ‖BᵀB − I‖_F over each module's existing (active and reserved) triplets.
 *
 * Stored (peft_type "INCRELORA"), per module, the existing triplets in slot order:
 *   <m>.increlora_A.weight [n, in], <m>.increlora_E [n, 1], <m>.increlora_B.weight [out, n],
 *   <m>.increlora_ranknum [1]
 * with `rank_pattern` (ranknum per module) and `triplet_pattern` (n per module) in the config.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import * as F from "../../engine/trace/composites.js";
import { constant, type Tensor } from "../../engine/trace/tensor.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import { layerSeed } from "../layer-seed.js";
import { addInto, logicalWeight, storedWeight } from "../lora/layers.js";
import { f32, lowRankDelta, need } from "../svfit/family.js";
import { type CreatedAdapter, LinearDeltaContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { type IncreloraConfig, increloraConfigJson, parseIncreloraConfig } from "./config.js";
import { increloraController, scoreName } from "./controller.js";
import { EXISTS_SUFFIX, FIXED_SUFFIXES, type IncreloraLayer, increloraKeys, increloraLayers, slotsOf } from "./layers.js";

/** The authors' init: A and B ~ N(0, 0.02²), E = 0; slots beyond r are unused (E = 0, frozen). */
function create(info: ModelInfo, c: IncreloraConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const l of increloraLayers(info, c)) {
    const k = increloraKeys(l.key);
    const n = slotsOf(c, l);
    tensors.set(k.a, hostTensor("f32", [n, l.inFeatures], fillNormal(n * l.inFeatures, 0.02, rng)));
    const e = new Float32Array(n);
    if (!c.initWeights) e.set(fillNormal(Math.min(c.initR, n), 1, rng));
    tensors.set(k.e, hostTensor("f32", [n, 1], e));
    tensors.set(k.b, hostTensor("f32", [l.outFeatures, n], fillNormal(l.outFeatures * n, 0.02, rng)));
    tensors.set(k.ranknum, hostTensor("f32", [1], [c.rankPattern?.[l.key] ?? c.initR]));
    tensors.set(
      k.exists,
      hostTensor(
        "f32",
        [n],
        Float32Array.from({ length: n }, (_, i) => (i < c.initR || c.tripletPattern ? 1 : 0)),
      ),
    );
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: IncreloraConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of increloraLayers(info, c)) {
    const k = increloraKeys(l.key);
    const n = slotsOf(c, l);
    out.set(k.a, [n, l.inFeatures]);
    out.set(k.e, [n, 1]);
    out.set(k.b, [l.outFeatures, n]);
    out.set(k.ranknum, [1]);
  }
  return out;
}

/** α / (ranknum + 1e-5), the authors' scaling (ranknum counts active ranks, not reserved ones). */
function scaleOf(l: IncreloraLayer, ranknum: Tensor): Tensor {
  return ranknum.add(1e-5).reciprocal().mul(l.scaling);
}

function delta(c: IncreloraConfig, opts: WrapOptions, l: IncreloraLayer, x: Tensor): Tensor {
  const k = increloraKeys(l.key);
  const a = opts.tensor(k.a);
  const b = opts.tensor(k.b);
  const e = opts.tensor(k.e).mul(scaleOf(l, opts.tensor(k.ranknum)));
  const seed = opts.training && c.loraDropout > 0 ? opts.seed : null;
  const xin = seed ? F.dropout(x, c.loraDropout, layerSeed(seed, l.path)) : x;
  if (opts.probe) {
    // Training: ΔW is formed, as the authors' forward does, so the step can score it against
    // ∂L/∂ΔW, which the backward pass computes on the way to A, E and B.
    const dw = b.mul(e.transpose()).matmul(a);
    const numel = l.outFeatures * l.inFeatures;
    opts.probe(scoreName(l.key), dw, (v, g) => v.abs().mul(g).abs().sum().div(Math.sqrt(numel)));
    return xin.matmul(dw.transpose());
  }
  return xin
    .matmul(a.transpose())
    .mul(e.reshape([-1]))
    .matmul(b.transpose());
}

/** ‖M·Mᵀ − diag(m)‖_F over the existing rows (m = 1) of M [n, d]: the authors' Gram of the concatenated triplets. */
function gramDistance(rows: Tensor, exists: Tensor): Tensor {
  const masked = rows.mul(exists.unsqueeze(-1));
  const n = exists.shape[0] as number;
  const eye = hostTensor(
    "f32",
    [n, n],
    Float32Array.from({ length: n * n }, (_, i) => (i % (n + 1) === 0 ? 1 : 0)),
  );
  const target = constant(eye).mul(exists.unsqueeze(-1));
  return masked.matmul(masked.transpose()).sub(target).square().sum().sqrt();
}

function loss(info: ModelInfo, c: IncreloraConfig, opts: WrapOptions): Tensor | null {
  if (c.orthRegWeight === 0) return null;
  const layers = increloraLayers(info, c);
  let sum: Tensor | null = null;
  for (const l of layers) {
    const k = increloraKeys(l.key);
    const exists = opts.tensor(k.exists);
    const term = gramDistance(opts.tensor(k.a), exists).add(gramDistance(opts.tensor(k.b).transpose(), exists));
    sum = sum ? sum.add(term) : term;
  }
  return sum ? sum.mul(c.orthRegWeight / (2 * layers.length)) : null;
}

function merge(info: ModelInfo, c: IncreloraConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of increloraLayers(info, c)) {
    const k = increloraKeys(l.key);
    const g = (key: string) => need("IncreLoRA", tensors, key);
    const scale = l.scaling / (f32(g(k.ranknum))[0] + 1e-5);
    const d = lowRankDelta(
      g(k.b),
      Float64Array.from(f32(g(k.e)), (e) => e * scale),
      g(k.a),
    );
    out.set(`${l.path}.weight`, storedWeight(info, l, addInto(logicalWeight(info, l), d)));
  }
  return out;
}

/** Only the existing triplets are written (the capacity beyond them is training room). */
function tensorsToSave(info: ModelInfo, c: IncreloraConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const [key, t] of tensors) if (!key.endsWith(EXISTS_SUFFIX)) out.set(key, t);
  for (const l of increloraLayers(info, c)) {
    const k = increloraKeys(l.key);
    const n = slotsOf(c, l);
    const a = need("IncreLoRA", tensors, k.a);
    const cap = a.shape[0];
    if (n === cap) continue;
    out.set(k.a, hostTensor("f32", [n, l.inFeatures], f32(a).slice(0, n * l.inFeatures)));
    out.set(k.e, hostTensor("f32", [n, 1], f32(need("IncreLoRA", tensors, k.e)).slice(0, n)));
    const b = f32(need("IncreLoRA", tensors, k.b));
    const nb = new Float32Array(l.outFeatures * n);
    for (let o = 0; o < l.outFeatures; o++) nb.set(b.subarray(o * cap, o * cap + n), o * n);
    out.set(k.b, hostTensor("f32", [l.outFeatures, n], nb));
  }
  return out;
}

/** A saved folder holds existing triplets only: they all exist. */
function tensorsFromSaved(info: ModelInfo, c: IncreloraConfig, saved: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map(saved);
  for (const l of increloraLayers(info, c)) {
    const n = slotsOf(c, l);
    out.set(
      increloraKeys(l.key).exists,
      hostTensor(
        "f32",
        [n],
        Float32Array.from({ length: n }, (_, i) => (i < c.initR || c.tripletPattern ? 1 : 0)),
      ),
    );
  }
  return out;
}

export const INCRELORA: Tuner<IncreloraConfig> = {
  peftType: "INCRELORA",
  parseConfig: parseIncreloraConfig,
  toJson: increloraConfigJson,
  create,
  trainable: (key) => !FIXED_SUFFIXES.some((s) => key.endsWith(s)),
  loss,
  controller: (info, c) => increloraController(info, c),
  expectedTensors,
  wrap: (base, info, c, opts) => new LinearDeltaContext(base, increloraLayers(info, c), opts.rowMask, (l, x) => delta(c, opts, l, x)),
  merge,
  tensorsToSave,
  tensorsFromSaved,
  supportsMixedBatch: true,
};
