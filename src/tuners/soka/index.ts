/**
 * SoKA (Chong & Qu 2025, "Singular Value Decomposition on Kronecker Adaptation for Large Language
 * Model", arXiv 2506.15251; catalog #35). Each targeted weight W (out×in, out = m·p, in = n·q) is
 * split by the Kronecker-product SVD into its r principal Kronecker terms and a residual:
 * W = W_res + Σ_k U⁰_k ⊗ V⁰_k with U⁰_k = √σ_k·U_k (m×n), V⁰_k = √σ_k·V_k (p×q). The factors
 * U_k, V_k are trained (they start at U⁰, V⁰), so the layer computes W_res + Σ_k U_k ⊗ V_k.
 *
 * To keep the adapter self-contained (it applies to the original base, which is not edited),
 * the change is stored as a delta on W: ΔW = Σ_k U_k ⊗ V_k − Σ_k U⁰_k ⊗ V⁰_k, with U⁰, V⁰ saved as
 * frozen adapter tensors. At the start ΔW = 0 exactly. Kronecker products are applied to x
 * without forming them: (U ⊗ V)·x = vec(U·X·Vᵀ) with X = x reshaped n×q (row-major).
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { type Matrix, matrix } from "../../util/linalg.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { targetedLinears } from "../targets.js";
import { type CreatedAdapter, LinearDeltaContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { parseSokaConfig, type SokaConfig, sokaConfigJson } from "./config.js";
import { balancedFactor, type Kpsvd, type KronShape, kpsvd, kronSum, selectRank } from "./kron.js";

export interface SokaLayer extends KronShape {
  path: string;
  key: string;
  inFeatures: number;
  outFeatures: number;
  /** Kronecker terms of this layer. */
  r: number;
}

export const sokaKeys = (l: { key: string }) => ({
  u: `${l.key}.soka_U`,
  v: `${l.key}.soka_V`,
  u0: `${l.key}.soka_U0`,
  v0: `${l.key}.soka_V0`,
});

/** W as a float64 [out, in] matrix (transposed from GPT-2's stored [in, out]). */
function logicalWeight(info: ModelInfo, path: string, out: number, inF: number): Matrix {
  const w = info.weight(`${path}.weight`).data as Float32Array;
  const m = matrix(out, inF);
  for (let o = 0; o < out; o++) for (let i = 0; i < inF; i++) m.data[o * inF + i] = w[info.fanInFanOut ? i * out + o : o * inF + i];
  return m;
}

// One decomposition per base weight and shape: create() and expectedTensors() (rank selection) share it.
const decompositions = new WeakMap<HostTensor, Map<string, Kpsvd>>();
function decomposition(info: ModelInfo, l: Omit<SokaLayer, "r">): Kpsvd {
  const w = info.weight(`${l.path}.weight`);
  const id = `${l.m},${l.n},${l.p},${l.q},${info.fanInFanOut}`;
  let byShape = decompositions.get(w);
  if (!byShape) {
    byShape = new Map();
    decompositions.set(w, byShape);
  }
  let d = byShape.get(id);
  if (!d) {
    d = kpsvd(logicalWeight(info, l.path, l.outFeatures, l.inFeatures), l);
    byShape.set(id, d);
  }
  return d;
}

function factor(given: number | null, d: number, field: string, key: string, what: string): number {
  if (given === null) return balancedFactor(d);
  if (d % given !== 0) throw new PeftConfigError(`SoKA config: ${field} = ${given} does not divide ${what} = ${d} of "${key}"`);
  return given;
}

/**
 * The targeted layers with their Kronecker shapes and ranks. `rankOf` gives a layer's rank from
 * existing tensors (forward, merge): with energy_threshold the rank comes from W's spectrum, which
 * merging other adapters into W would change.
 */
export function sokaLayers(info: ModelInfo, c: SokaConfig, rankOf?: (key: string) => number): SokaLayer[] {
  return targetedLinears(info, c, "SoKA config").map(({ path, key, inFeatures, outFeatures }) => {
    const m = factor(c.factorOut, outFeatures, "factor_out", key, "out_features");
    const n = factor(c.factorIn, inFeatures, "factor_in", key, "in_features");
    const shape = { path, key, inFeatures, outFeatures, m, n, p: outFeatures / m, q: inFeatures / n };
    const most = Math.min(m * n, shape.p * shape.q);
    if (rankOf) return { ...shape, r: rankOf(key) };
    if (c.energyThreshold === null) {
      if (c.r > most)
        throw new PeftConfigError(
          `SoKA config: r = ${c.r} exceeds the ${most} Kronecker terms of "${key}" (min(${m}·${n}, ${shape.p}·${shape.q}) for factors ${m}×${n} and ${shape.p}×${shape.q})`,
        );
      return { ...shape, r: c.r };
    }
    return { ...shape, r: selectRank(decomposition(info, shape).s, c.energyThreshold, Math.min(c.r, most)) };
  });
}

function create(info: ModelInfo, c: SokaConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const l of sokaLayers(info, c)) {
    const d = decomposition(info, l);
    const u0 = new Float32Array(l.r * l.m * l.n);
    const v0 = new Float32Array(l.r * l.p * l.q);
    for (let k = 0; k < l.r; k++) {
      const g = Math.sqrt(d.s[k]);
      d.u[k].forEach((x, i) => {
        u0[k * l.m * l.n + i] = g * x;
      });
      d.v[k].forEach((x, i) => {
        v0[k * l.p * l.q + i] = g * x;
      });
    }
    const k = sokaKeys(l);
    // init_soka_weights: false moves the trained factors off U⁰, V⁰ (tests: a non-zero ΔW).
    const jitter = (a: Float32Array) => {
      const rms = Math.sqrt(a.reduce((s, x) => s + x * x, 0) / a.length) || 1;
      const noise = fillNormal(a.length, 0.5 * rms, rng);
      return a.map((x, i) => x + noise[i]);
    };
    tensors.set(k.u, hostTensor("f32", [l.r, l.m, l.n], c.initSokaWeights ? u0.slice() : jitter(u0)));
    tensors.set(k.v, hostTensor("f32", [l.r, l.p, l.q], c.initSokaWeights ? v0.slice() : jitter(v0)));
    tensors.set(k.u0, hostTensor("f32", [l.r, l.m, l.n], u0));
    tensors.set(k.v0, hostTensor("f32", [l.r, l.p, l.q], v0));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: SokaConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of sokaLayers(info, c)) {
    const k = sokaKeys(l);
    out.set(k.u, [l.r, l.m, l.n]);
    out.set(k.v, [l.r, l.p, l.q]);
    out.set(k.u0, [l.r, l.m, l.n]);
    out.set(k.v0, [l.r, l.p, l.q]);
  }
  return out;
}

/** Σ_k (U_k ⊗ V_k)·x for x [..., n·q]: Σ_k U_k·X·V_kᵀ with X = x as [..., n, q]; gives [..., m, p]. */
function kronApply(u: Tensor, v: Tensor, x: Tensor): Tensor {
  return u.matmul(x).matmul(v.transpose()).sum(-3);
}

/** The change this method adds to a targeted layer's output (see LinearDeltaContext). */
function sokaDelta(opts: WrapOptions, l: SokaLayer, x: Tensor): Tensor {
  const k = sokaKeys(l);
  const lead = x.shape.slice(0, -1);
  const xs = x.reshape([...lead, l.n, l.q]).unsqueeze(-3);
  // The two sums separately, so identical factors cancel exactly (ΔW = 0 at the start).
  const t = opts.tensor;
  const delta = kronApply(t(k.u), t(k.v), xs).sub(kronApply(t(k.u0), t(k.v0), xs));
  return delta.reshape([...lead, l.outFeatures]);
}

/** W + Σ U_k ⊗ V_k − Σ U⁰_k ⊗ V⁰_k, in W's stored layout. */
function merge(info: ModelInfo, c: SokaConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  const split = (t: HostTensor | undefined, n: number, size: number) => {
    if (!t) throw new PeftConfigError("SoKA merge: a factor tensor is missing");
    return Array.from({ length: n }, (_, k) => (t.data as Float32Array).subarray(k * size, (k + 1) * size));
  };
  for (const l of sokaLayers(info, c, (key) => tensors.get(sokaKeys({ key }).u)?.shape[0] ?? 0)) {
    const k = sokaKeys(l);
    const now = kronSum(split(tensors.get(k.u), l.r, l.m * l.n), split(tensors.get(k.v), l.r, l.p * l.q), l);
    const start = kronSum(split(tensors.get(k.u0), l.r, l.m * l.n), split(tensors.get(k.v0), l.r, l.p * l.q), l);
    const name = `${l.path}.weight`;
    const w = info.weight(name);
    const wd = w.data as Float32Array;
    const next = new Float32Array(wd.length);
    for (let o = 0; o < l.outFeatures; o++)
      for (let i = 0; i < l.inFeatures; i++) {
        const at = info.fanInFanOut ? i * l.outFeatures + o : o * l.inFeatures + i;
        next[at] = wd[at] + (now.data[o * l.inFeatures + i] - start.data[o * l.inFeatures + i]);
      }
    out.set(name, hostTensor("f32", w.shape, next));
  }
  return out;
}

export const SOKA: Tuner<SokaConfig> = {
  peftType: "SOKA",
  parseConfig: parseSokaConfig,
  toJson: sokaConfigJson,
  create,
  expectedTensors,
  // The starting factors are saved with the adapter (they define ΔW) but never trained.
  trainable: (key) => !key.endsWith(".soka_U0") && !key.endsWith(".soka_V0"),
  wrap: (base, info, c, opts) =>
    new LinearDeltaContext(
      base,
      sokaLayers(info, c, (key) => opts.tensor(sokaKeys({ key }).u).shape[0] as number),
      opts.rowMask,
      (l, x) => sokaDelta(opts, l, x),
    ),
  merge,
  supportsMixedBatch: true,
};
