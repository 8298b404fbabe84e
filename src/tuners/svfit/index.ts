/**
 * SVFit (Sun et al. 2024, "SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models
 * Using Singular Values", arXiv 2409.05926; catalog §1.4, seed #21): W = U·Σ·Vᵀ; the top-r
 * singular values σ are trained, the singular vectors U_r, V_r and the residual stay frozen:
 * W_eff = W_res + U_r·diag(σ)·V_rᵀ with W_res = W − U_r·diag(σ₀)·V_rᵀ.
 *
 * Stored self-contained as a delta on the original W: ΔW = U_r·diag(σ − σ₀)·V_rᵀ, with
 *   <m>.svfit_U.weight [out, r]  U_r (frozen)
 *   <m>.svfit_V.weight [r, in]   V_rᵀ (frozen)
 *   <m>.svfit_sigma0   [r]       σ₀, the singular values at creation (frozen)
 *   <m>.svfit_sigma    [r]       σ (trained; starts at σ₀, so the model starts exactly at W)
 * r trainable parameters per layer.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { svd } from "../../util/linalg.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import { addInto, logicalWeight, storedWeight } from "../lora/layers.js";
import { type CreatedAdapter, LinearDeltaContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { parseSvfitConfig, type SvfitConfig, svfitConfigJson } from "./config.js";
import { checkRank, columns, columnsT, type FamilyLayer, f32, familyLayers, lowRankApply, lowRankDelta, need, vector } from "./family.js";

export interface SvfitKeys {
  u: string;
  v: string;
  sigma0: string;
  sigma: string;
}

export function svfitKeys(key: string): SvfitKeys {
  return { u: `${key}.svfit_U.weight`, v: `${key}.svfit_V.weight`, sigma0: `${key}.svfit_sigma0`, sigma: `${key}.svfit_sigma` };
}

const FIXED = [".svfit_U.weight", ".svfit_V.weight", ".svfit_sigma0"];

/** Singular values by weight array: the energy criterion needs them again when an adapter is loaded. */
const spectra = new WeakMap<object, Float64Array>();

function spectrum(info: ModelInfo, l: FamilyLayer): Float64Array {
  const w = info.weight(`${l.path}.weight`);
  let s = spectra.get(w.data);
  if (!s) {
    s = svd(logicalWeight(info, l)).s;
    spectra.set(w.data, s);
  }
  return s;
}

/** The smallest r whose top singular values hold `threshold` of Σσ² (at least 1). */
export function energyRank(s: ArrayLike<number>, threshold: number): number {
  let total = 0;
  for (let i = 0; i < s.length; i++) total += s[i] * s[i];
  let acc = 0;
  for (let i = 0; i < s.length; i++) {
    acc += s[i] * s[i];
    // A relative slack absorbs rounding at thresholds met exactly (e.g. 1.0 on a full-rank layer).
    if (acc >= threshold * total * (1 - 1e-12)) return i + 1;
  }
  return Math.max(s.length, 1);
}

/** The targeted layers with their rank. */
export function svfitLayers(info: ModelInfo, c: SvfitConfig): FamilyLayer[] {
  return familyLayers(info, c, "SVFit").map((l) => {
    const r = c.energyThreshold !== null ? energyRank(spectrum(info, l), c.energyThreshold) : (c.r as number);
    checkRank("SVFit", l, r);
    return { ...l, r };
  });
}

/** Spread of the relative change of σ with init_weights: false. */
const RANDOM_STD = 0.2;

function create(info: ModelInfo, c: SvfitConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const l of svfitLayers(info, c)) {
    const { u, s, v } = svd(logicalWeight(info, l));
    spectra.set(info.weight(`${l.path}.weight`).data, s);
    const k = svfitKeys(l.key);
    const sigma0 = vector(s.subarray(0, l.r));
    const noise = c.initWeights ? null : fillNormal(l.r, RANDOM_STD, rng);
    tensors.set(k.u, columns(u, 0, l.r));
    tensors.set(k.v, columnsT(v, 0, l.r));
    tensors.set(k.sigma0, sigma0);
    tensors.set(
      k.sigma,
      hostTensor(
        "f32",
        sigma0.shape,
        f32(sigma0).map((x, j) => (noise ? x * (1 + noise[j]) : x)),
      ),
    );
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: SvfitConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of svfitLayers(info, c)) {
    const k = svfitKeys(l.key);
    out.set(k.u, [l.outFeatures, l.r]);
    out.set(k.v, [l.r, l.inFeatures]);
    out.set(k.sigma0, [l.r]);
    out.set(k.sigma, [l.r]);
  }
  return out;
}

/** The change this method adds to a targeted layer's output (see LinearDeltaContext). */
function svfitDelta(opts: WrapOptions, l: FamilyLayer, x: Tensor): Tensor {
  const k = svfitKeys(l.key);
  const t = (key: string) => opts.tensor(key);
  const delta = lowRankApply(x, t(k.v), t(k.sigma).sub(t(k.sigma0)), t(k.u));
  return delta;
}

function merge(info: ModelInfo, c: SvfitConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of familyLayers(info, c, "SVFit")) {
    const k = svfitKeys(l.key);
    const sigma = f32(need("SVFit", tensors, k.sigma));
    const sigma0 = f32(need("SVFit", tensors, k.sigma0));
    const coef = Float64Array.from(sigma, (v, j) => v - sigma0[j]);
    const delta = lowRankDelta(need("SVFit", tensors, k.u), coef, need("SVFit", tensors, k.v));
    out.set(`${l.path}.weight`, storedWeight(info, l, addInto(logicalWeight(info, l), delta)));
  }
  return out;
}

export const SVFIT: Tuner<SvfitConfig> = {
  peftType: "SVFIT",
  parseConfig: parseSvfitConfig,
  toJson: svfitConfigJson,
  create,
  // Only SVFit's own factors are fixed; anything else (modules_to_save copies) trains.
  trainable: (key) => !FIXED.some((s) => key.endsWith(s)),
  expectedTensors,
  wrap: (base, info, c, opts) =>
    new LinearDeltaContext(base, familyLayers(info, c, "SVFit"), opts.rowMask, (l, x) => svfitDelta(opts, l, x)),
  merge,
  supportsMixedBatch: true,
};
