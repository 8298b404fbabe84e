/**
 * KaSA (Wang et al. 2024, "KaSA: Knowledge-Aware Singular-Value Adaptation of Large Language
 * Models"; catalog §1.1, seed #37), after the authors' code (juyongjiang/KaSA, patched
 * peft/tuners/lora/layer.py and main.py): the base W = U·Σ·Vᵀ loses its r smallest singular
 * triplets, and a LoRA branch with trainable "knowledge-aware singular values" δ is added:
 *   W_eff = W − U_t·Σ_t·V_tᵀ + s·B·diag(δ)·A,   s = α/r,
 * trained with the regulariser (β·Σ‖δ‖² + γ·Σ(‖BᵀB − I_r‖_F + ‖A·Aᵀ − I_r‖_F)) / #layers.
 *
 * Two deliberate departures from the released code (catalog §1.1, §16.7):
 * - the tail is the r smallest of min(out, in) triplets (the code keeps in_features − r, which
 *   drops nothing on a layer with out < in − r);
 * - the orthogonality terms use the r×r Gram matrices BᵀB and A·Aᵀ (the code's AᵀA and B·Bᵀ are
 *   in×in and out×out, which cannot reach the identity when r < d).
 *
 * Stored self-contained as a delta on the original W (no base edit):
 *   <m>.kasa_A.weight [r, in]  trained (Kaiming-uniform)
 *   <m>.kasa_B.weight [out, r] trained (zeros)
 *   <m>.kasa_diag     [r]      δ, trained (standard normal)
 *   <m>.kasa_tail_U.weight [out, r], <m>.kasa_tail_S [r], <m>.kasa_tail_V.weight [r, in]:
 *       the removed triplets U_t, Σ_t, V_tᵀ (frozen)
 * r·(in + out + 1) trainable parameters per layer.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import * as F from "../../engine/trace/composites.js";
import { constant, type Tensor } from "../../engine/trace/tensor.js";
import { svd } from "../../util/linalg.js";
import { fillNormal, fillUniform, type Rng } from "../../util/rng.js";
import { layerSeed } from "../layer-seed.js";
import { addInto, logicalWeight, storedWeight } from "../lora/layers.js";
import {
  checkRank,
  columns,
  columnsT,
  type FamilyLayer,
  f32,
  familyLayers,
  lowRankApply,
  lowRankDelta,
  need,
  vector,
} from "../svfit/family.js";
import { type CreatedAdapter, LinearDeltaContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { type KasaConfig, kasaConfigJson, parseKasaConfig } from "./config.js";

export interface KasaKeys {
  a: string;
  b: string;
  diag: string;
  tailU: string;
  tailS: string;
  tailV: string;
}

export function kasaKeys(key: string): KasaKeys {
  return {
    a: `${key}.kasa_A.weight`,
    b: `${key}.kasa_B.weight`,
    diag: `${key}.kasa_diag`,
    tailU: `${key}.kasa_tail_U.weight`,
    tailS: `${key}.kasa_tail_S`,
    tailV: `${key}.kasa_tail_V.weight`,
  };
}

const FIXED = [".kasa_tail_U.weight", ".kasa_tail_S", ".kasa_tail_V.weight"];

export function kasaLayers(info: ModelInfo, c: KasaConfig): FamilyLayer[] {
  return familyLayers(info, c, "KaSA").map((l) => {
    checkRank("KaSA", l, c.r);
    return { ...l, r: c.r, scaling: c.loraAlpha / c.r };
  });
}

function create(info: ModelInfo, c: KasaConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const l of kasaLayers(info, c)) {
    const k = kasaKeys(l.key);
    const { u, s, v } = svd(logicalWeight(info, l));
    const from = s.length - l.r;
    // Kaiming-uniform (a = √5) like nn.Linear and PEFT: bound 1/√in.
    const bound = 1 / Math.sqrt(l.inFeatures);
    tensors.set(k.a, hostTensor("f32", [l.r, l.inFeatures], fillUniform(l.r * l.inFeatures, -bound, bound, rng)));
    const b = c.initWeights
      ? new Float32Array(l.outFeatures * l.r)
      : fillUniform(l.outFeatures * l.r, -1 / Math.sqrt(l.r), 1 / Math.sqrt(l.r), rng);
    tensors.set(k.b, hostTensor("f32", [l.outFeatures, l.r], b));
    tensors.set(k.diag, hostTensor("f32", [l.r], fillNormal(l.r, 1, rng)));
    tensors.set(k.tailU, columns(u, from, l.r));
    tensors.set(k.tailS, vector(s.subarray(from)));
    tensors.set(k.tailV, columnsT(v, from, l.r));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: KasaConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of kasaLayers(info, c)) {
    const k = kasaKeys(l.key);
    out.set(k.a, [l.r, l.inFeatures]);
    out.set(k.b, [l.outFeatures, l.r]);
    out.set(k.diag, [l.r]);
    out.set(k.tailU, [l.outFeatures, l.r]);
    out.set(k.tailS, [l.r]);
    out.set(k.tailV, [l.r, l.inFeatures]);
  }
  return out;
}

/** The change this method adds to a targeted layer's output (see LinearDeltaContext). */
function kasaDelta(c: KasaConfig, opts: WrapOptions, l: FamilyLayer, x: Tensor): Tensor {
  const k = kasaKeys(l.key);
  const t = (key: string) => opts.tensor(key);
  const seed = opts.training && c.loraDropout > 0 ? opts.seed : null;
  const xin = seed ? F.dropout(x, c.loraDropout, layerSeed(seed, l.path)) : x;
  // The scale goes on δ (r values), the smallest tensor on the path; the tail sees the undropped x
  // because it is part of the base.
  const lora = lowRankApply(xin, t(k.a), t(k.diag).mul(l.scaling), t(k.b));
  const tail = lowRankApply(x, t(k.tailV), t(k.tailS), t(k.tailU));
  return lora.sub(tail);
}

/** ‖M − I‖_F of a square r×r tensor. */
function distanceToIdentity(m: Tensor): Tensor {
  const r = m.shape[0] as number;
  const eye = new Float64Array(r * r);
  for (let i = 0; i < r; i++) eye[i * r + i] = 1;
  return m
    .sub(constant(hostTensor(m.dtype, [r, r], m.dtype === "f64" ? eye : Float32Array.from(eye))))
    .square()
    .sum()
    .sqrt();
}

/** (β·Σ‖δ‖² + γ·Σ(‖BᵀB − I‖_F + ‖A·Aᵀ − I‖_F)) / #layers, over this adapter's layers. */
function loss(info: ModelInfo, c: KasaConfig, opts: WrapOptions): Tensor | null {
  if (c.beta === 0 && c.gamma === 0) return null;
  const layers = kasaLayers(info, c);
  if (!layers.length) return null;
  let diag: Tensor | null = null;
  let orth: Tensor | null = null;
  for (const l of layers) {
    const k = kasaKeys(l.key);
    const a = opts.tensor(k.a);
    const b = opts.tensor(k.b);
    const d = opts.tensor(k.diag).square().sum();
    const o = distanceToIdentity(b.transpose().matmul(b)).add(distanceToIdentity(a.matmul(a.transpose())));
    diag = diag ? diag.add(d) : d;
    orth = orth ? orth.add(o) : o;
  }
  return (diag as Tensor)
    .mul(c.beta)
    .add((orth as Tensor).mul(c.gamma))
    .mul(1 / layers.length);
}

function merge(info: ModelInfo, c: KasaConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of kasaLayers(info, c)) {
    const k = kasaKeys(l.key);
    const g = (key: string) => need("KaSA", tensors, key);
    const lora = lowRankDelta(
      g(k.b),
      Float64Array.from(f32(g(k.diag)), (d) => d * l.scaling),
      g(k.a),
    );
    const tail = lowRankDelta(
      g(k.tailU),
      Float64Array.from(f32(g(k.tailS)), (s) => -s),
      g(k.tailV),
    );
    out.set(`${l.path}.weight`, storedWeight(info, l, addInto(addInto(logicalWeight(info, l), tail), lora)));
  }
  return out;
}

export const KASA: Tuner<KasaConfig> = {
  peftType: "KASA",
  parseConfig: parseKasaConfig,
  toJson: kasaConfigJson,
  create,
  // Only the removed tail is fixed; anything else (modules_to_save copies) trains.
  trainable: (key) => !FIXED.some((s) => key.endsWith(s)),
  loss,
  expectedTensors,
  wrap: (base, info, c, opts) => new LinearDeltaContext(base, kasaLayers(info, c), opts.rowMask, (l, x) => kasaDelta(c, opts, l, x)),
  merge,
  supportsMixedBatch: true,
};
