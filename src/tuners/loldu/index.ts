/**
 * LoLDU (Shi et al. 2024, "LoLDU: Low-Rank Adaptation via Lower-Diag-Upper Decomposition for Parameter-Efficient
 * Fine-Tuning"; catalog §1.2, seed #16), after the authors' minloldu/loldu.py (SKDDJ/LoLDU):
 * LU with partial pivoting W = P·L·D·U (D = diag of the LU's upper factor, U unit upper), the first
 * r columns of L and rows of U (in pivot order, not by magnitude), z₀ = D[:r] and s₀ = α/r;
 *   W_eff = W_res + s·P·L_r·diag(z)·U_r,   W_res = W − s₀·P·L_r·diag(z₀)·U_r,
 * with only z (r values) and the scalar s trained: r + 1 parameters per layer.
 *
 * Stored self-contained as a delta on the original W: ΔW = P·L_r·diag(s·z − s₀·z₀)·U_r, with
 *   <m>.loldu_L.weight [out, r]  P·L_r: L's first r columns with its rows back in W's row order
 *                                (so no separate pivot tensor is needed; frozen)
 *   <m>.loldu_U.weight [r, in]   U_r, unit upper triangular rows (frozen)
 *   <m>.loldu_z0 [r], <m>.loldu_s0 [1]   the values at creation (frozen)
 *   <m>.loldu_z  [r], <m>.loldu_s  [1]   trained; they start at z₀, s₀, so the model starts at W exactly.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { lu, type Matrix } from "../../util/linalg.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { addInto, logicalWeight, storedWeight } from "../lora/layers.js";
import { checkRank, type FamilyLayer, f32, familyLayers, lowRankApply, lowRankDelta, need } from "../svfit/family.js";
import { type CreatedAdapter, LinearDeltaContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { type LolduConfig, lolduConfigJson, parseLolduConfig } from "./config.js";

export interface LolduKeys {
  l: string;
  u: string;
  z0: string;
  s0: string;
  z: string;
  s: string;
}

export function lolduKeys(key: string): LolduKeys {
  return {
    l: `${key}.loldu_L.weight`,
    u: `${key}.loldu_U.weight`,
    z0: `${key}.loldu_z0`,
    s0: `${key}.loldu_s0`,
    z: `${key}.loldu_z`,
    s: `${key}.loldu_s`,
  };
}

const FIXED = [".loldu_L.weight", ".loldu_U.weight", ".loldu_z0", ".loldu_s0"];

/** Spread of the relative change of z with init_weights: false. */
const RANDOM_STD = 0.2;

export function lolduLayers(info: ModelInfo, c: LolduConfig): FamilyLayer[] {
  return familyLayers(info, c, "LoLDU").map((l) => {
    checkRank("LoLDU", l, c.r);
    return { ...l, r: c.r, scaling: c.loraAlpha / c.r };
  });
}

/** P·L_r [out, r], U_r [r, in] (unit upper) and z₀ = D[:r] of W's LDU with partial pivoting. */
export function ldu(w: Matrix, r: number, where: string): { l: Float32Array; u: Float32Array; z0: Float32Array } {
  const f = lu(w);
  const k = f.l.cols;
  const out = new Float32Array(w.rows * r);
  // Row i of L belongs to row perm[i] of W (P·W = L·U).
  for (let i = 0; i < w.rows; i++) for (let j = 0; j < r; j++) out[f.perm[i] * r + j] = f.l.data[i * k + j];
  const z0 = new Float32Array(r);
  const u = new Float32Array(r * w.cols);
  for (let j = 0; j < r; j++) {
    const d = f.u.data[j * w.cols + j];
    if (d === 0) throw new PeftConfigError(`LoLDU: ${where} has a zero pivot at position ${j} of its LU (rank below r = ${r}); lower r`);
    z0[j] = d;
    for (let i = j; i < w.cols; i++) u[j * w.cols + i] = f.u.data[j * w.cols + i] / d;
  }
  return { l: out, u, z0 };
}

function create(info: ModelInfo, c: LolduConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const l of lolduLayers(info, c)) {
    const k = lolduKeys(l.key);
    const f = ldu(logicalWeight(info, l), l.r, `"${l.key}"`);
    const noise = c.initWeights ? null : fillNormal(l.r, RANDOM_STD, rng);
    tensors.set(k.l, hostTensor("f32", [l.outFeatures, l.r], f.l));
    tensors.set(k.u, hostTensor("f32", [l.r, l.inFeatures], f.u));
    tensors.set(k.z0, hostTensor("f32", [l.r], f.z0));
    tensors.set(k.s0, hostTensor("f32", [1], [l.scaling]));
    tensors.set(
      k.z,
      hostTensor(
        "f32",
        [l.r],
        f.z0.map((z, j) => (noise ? z * (1 + noise[j]) : z)),
      ),
    );
    tensors.set(k.s, hostTensor("f32", [1], [l.scaling]));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: LolduConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of lolduLayers(info, c)) {
    const k = lolduKeys(l.key);
    out.set(k.l, [l.outFeatures, l.r]);
    out.set(k.u, [l.r, l.inFeatures]);
    out.set(k.z0, [l.r]);
    out.set(k.s0, [1]);
    out.set(k.z, [l.r]);
    out.set(k.s, [1]);
  }
  return out;
}

/** The change this method adds to a targeted layer's output (see LinearDeltaContext). */
function lolduDelta(opts: WrapOptions, l: FamilyLayer, x: Tensor): Tensor {
  const k = lolduKeys(l.key);
  const t = (key: string) => opts.tensor(key);
  const coef = t(k.z)
    .mul(t(k.s))
    .sub(t(k.z0).mul(t(k.s0)));
  return lowRankApply(x, t(k.u), coef, t(k.l));
}

function merge(info: ModelInfo, c: LolduConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of lolduLayers(info, c)) {
    const k = lolduKeys(l.key);
    const g = (key: string) => f32(need("LoLDU", tensors, key));
    const [s, s0, z0] = [g(k.s)[0], g(k.s0)[0], g(k.z0)];
    // In f64 from the same f32 products the forward forms, so a fresh adapter adds exactly 0.
    const coef = Float64Array.from(g(k.z), (z, j) => Math.fround(z * s) - Math.fround(z0[j] * s0));
    const delta = lowRankDelta(need("LoLDU", tensors, k.l), coef, need("LoLDU", tensors, k.u));
    out.set(`${l.path}.weight`, storedWeight(info, l, addInto(logicalWeight(info, l), delta)));
  }
  return out;
}

export const LOLDU: Tuner<LolduConfig> = {
  peftType: "LOLDU",
  parseConfig: parseLolduConfig,
  toJson: lolduConfigJson,
  create,
  // Only LoLDU's own factors are fixed; anything else (modules_to_save copies) trains.
  trainable: (key) => !FIXED.some((s) => key.endsWith(s)),
  expectedTensors,
  wrap: (base, info, c, opts) => new LinearDeltaContext(base, lolduLayers(info, c), opts.rowMask, (l, x) => lolduDelta(opts, l, x)),
  merge,
  supportsMixedBatch: true,
};
