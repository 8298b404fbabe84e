/**
 * TriAdaptLoRA (Liang, Wang & Zeng 2025, "TriAdaptLoRA: Brain-Inspired Triangular Adaptive
 * Low-Rank Adaptation for Parameter-Efficient Fine-Tuning", arXiv:2501.08008; catalog §1.11,
 * seed #46), after the TriAdaptLoraModel of a PEFT fork found in the code index (the paper's
 * method section could not be read; docs/methods/triadaptlora.md, "Sources").
 *
 *   ΔW = B · (L + U) · A · α / (R + 1e-5)
 *
 * with A [R, in], B [out, R] and the core split into a block-lower-triangular L and a
 * block-upper-triangular U (schedule.ts); R grows in blocks of incre_rank_num from init_rank.
 * A round (controller.ts) scores each module by the change of ‖L + U‖_F / blocks since the last
 * round, sets the threshold at the n(t)-th largest score, n(t) from the linear or exponential
 * schedule, and grows every module at or above it. The loss adds orth_reg_weight · mean over
 * modules of ‖AAᵀ − I‖_F and ‖BᵀB − I‖_F over the existing ranks (IncreLoRA's regulariser).
 *
 * Stored (peft_type "TRIADAPTLORA"), per module, its R existing ranks:
 *   <m>.triadaptlora_A.weight [R, in], <m>.triadaptlora_B.weight [out, R],
 *   <m>.triadaptlora_C_lower [R, R], <m>.triadaptlora_C_upper [R, R], <m>.triadaptlora_ranknum [1]
 * with `rank_pattern` (R per module) in the config.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import * as F from "../../engine/trace/composites.js";
import { constant, type Tensor } from "../../engine/trace/tensor.js";
import { matrix } from "../../util/linalg.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import { gramDistance } from "../increlora/index.js";
import { layerSeed } from "../layer-seed.js";
import { addInto, logicalWeight, storedWeight } from "../lora/layers.js";
import { f32, need } from "../svfit/family.js";
import { type CreatedAdapter, LinearDeltaContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { increRankNum, parseTriadaptloraConfig, type TriadaptloraConfig, triadaptloraConfigJson } from "./config.js";
import { triadaptloraController } from "./controller.js";
import { FIXED_SUFFIX, slotsOf, type TriadaptloraLayer, triadaptloraKeys, triadaptloraLayers } from "./layers.js";
import { coreMatrix, triangularMasks } from "./schedule.js";

/**
 * A and B ~ N(0, 0.02²) on every slot, the core 0: ΔW starts at 0 and the core's gradient Bᵀ·G·Aᵀ
 * is not. (The stored code draws only the first A block and leaves B and the core at 0, where
 * every factor's gradient is 0; this is IncreLoRA's init, whose allocator the code copies.)
 */
function create(info: ModelInfo, c: TriadaptloraConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  for (const l of triadaptloraLayers(info, c)) {
    const k = triadaptloraKeys(l.key);
    const n = slotsOf(c, l);
    tensors.set(k.a, hostTensor("f32", [n, l.inFeatures], fillNormal(n * l.inFeatures, 0.02, rng)));
    tensors.set(k.b, hostTensor("f32", [l.outFeatures, n], fillNormal(l.outFeatures * n, 0.02, rng)));
    const lower = new Float32Array(n * n);
    const upper = new Float32Array(n * n);
    if (!c.initWeights) {
      const r0 = Math.min(c.initRank, n);
      const l0 = fillNormal(r0 * r0, 1, rng);
      const u0 = fillNormal(r0 * r0, 1, rng);
      for (let i = 0; i < r0; i++)
        for (let j = 0; j < r0; j++) {
          lower[i * n + j] = l0[i * r0 + j];
          upper[i * n + j] = u0[i * r0 + j];
        }
    }
    tensors.set(k.lower, hostTensor("f32", [n, n], lower));
    tensors.set(k.upper, hostTensor("f32", [n, n], upper));
    tensors.set(k.ranknum, hostTensor("f32", [1], [c.rankPattern?.[l.key] ?? c.initRank]));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: TriadaptloraConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of triadaptloraLayers(info, c)) {
    const k = triadaptloraKeys(l.key);
    const n = slotsOf(c, l);
    out.set(k.a, [n, l.inFeatures]);
    out.set(k.b, [l.outFeatures, n]);
    out.set(k.lower, [n, n]);
    out.set(k.upper, [n, n]);
    out.set(k.ranknum, [1]);
  }
  return out;
}

/**
 * (L⊙M_L + U⊙M_U) restricted to the existing slots: entries outside the triangular patterns or
 * beyond R never count, whatever the tensors hold (training keeps them 0 anyway).
 */
function core(c: TriadaptloraConfig, opts: WrapOptions, l: TriadaptloraLayer): Tensor {
  const k = triadaptloraKeys(l.key);
  const lower = opts.tensor(k.lower);
  const n = lower.shape[0] as number;
  const m = triangularMasks(n, c.initRank, increRankNum(c));
  const e = existing(opts, l.key, n);
  return lower
    .mul(constant(hostTensor("f32", [n, n], m.lower)))
    .add(opts.tensor(k.upper).mul(constant(hostTensor("f32", [n, n], m.upper))))
    .mul(e.unsqueeze(-1).mul(e.unsqueeze(0)));
}

function delta(c: TriadaptloraConfig, opts: WrapOptions, l: TriadaptloraLayer, x: Tensor): Tensor {
  const k = triadaptloraKeys(l.key);
  const scale = opts.tensor(k.ranknum).add(1e-5).reciprocal().mul(l.scaling);
  const seed = opts.training && c.loraDropout > 0 ? opts.seed : null;
  const xin = seed ? F.dropout(x, c.loraDropout, layerSeed(seed, l.path)) : x;
  return xin
    .matmul(opts.tensor(k.a).transpose())
    .matmul(core(c, opts, l).transpose())
    .matmul(opts.tensor(k.b).transpose())
    .mul(scale);
}

/** 1 for the slots below ranknum (the existing ranks), 0 for room not yet used. */
function existing(opts: WrapOptions, key: string, n: number): Tensor {
  const iota = constant(
    hostTensor(
      "f32",
      [n],
      Float32Array.from({ length: n }, (_, i) => i),
    ),
  );
  return iota.lt(opts.tensor(triadaptloraKeys(key).ranknum)).cast("f32");
}

function loss(info: ModelInfo, c: TriadaptloraConfig, opts: WrapOptions): Tensor | null {
  if (c.orthRegWeight === 0) return null;
  const layers = triadaptloraLayers(info, c);
  let sum: Tensor | null = null;
  for (const l of layers) {
    const k = triadaptloraKeys(l.key);
    const a = opts.tensor(k.a);
    const exists = existing(opts, l.key, a.shape[0] as number);
    const term = gramDistance(a, exists).add(gramDistance(opts.tensor(k.b).transpose(), exists));
    sum = sum ? sum.add(term) : term;
  }
  return sum ? sum.mul(c.orthRegWeight / (2 * layers.length)) : null;
}

/** ΔW = α / (R + 1e-5) · B·C·A in float64, over the module's R existing ranks. */
export function deltaWeight(c: TriadaptloraConfig, l: TriadaptloraLayer, tensors: ReadonlyMap<string, HostTensor>) {
  const k = triadaptloraKeys(l.key);
  const g = (key: string) => need("TriAdaptLoRA", tensors, key);
  const rank = f32(g(k.ranknum))[0];
  const n = g(k.a).shape[0];
  const C = coreMatrix(f32(g(k.lower)), f32(g(k.upper)), n, rank, c.initRank, increRankNum(c));
  const A = f32(g(k.a));
  const B = f32(g(k.b));
  const scale = l.scaling / (rank + 1e-5);
  // BC [out, R] first, then (BC)·A.
  const bc = new Float64Array(l.outFeatures * rank);
  for (let o = 0; o < l.outFeatures; o++)
    for (let i = 0; i < rank; i++) {
      let s = 0;
      for (let j = 0; j < rank; j++) s += B[o * n + j] * C[j * rank + i];
      bc[o * rank + i] = s * scale;
    }
  const d = matrix(l.outFeatures, l.inFeatures);
  for (let o = 0; o < l.outFeatures; o++)
    for (let i = 0; i < rank; i++) {
      const v = bc[o * rank + i];
      if (v === 0) continue;
      for (let j = 0; j < l.inFeatures; j++) d.data[o * l.inFeatures + j] += v * A[i * l.inFeatures + j];
    }
  return d;
}

function merge(info: ModelInfo, c: TriadaptloraConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of triadaptloraLayers(info, c))
    out.set(`${l.path}.weight`, storedWeight(info, l, addInto(logicalWeight(info, l), deltaWeight(c, l, tensors))));
  return out;
}

/** Only the existing ranks are written (the capacity beyond them is training room). */
function tensorsToSave(info: ModelInfo, c: TriadaptloraConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map(tensors);
  for (const l of triadaptloraLayers(info, c)) {
    const k = triadaptloraKeys(l.key);
    const n = slotsOf(c, l);
    const cap = need("TriAdaptLoRA", tensors, k.a).shape[0];
    if (n === cap) continue;
    out.set(k.a, hostTensor("f32", [n, l.inFeatures], f32(need("TriAdaptLoRA", tensors, k.a)).slice(0, n * l.inFeatures)));
    const b = f32(need("TriAdaptLoRA", tensors, k.b));
    const nb = new Float32Array(l.outFeatures * n);
    for (let o = 0; o < l.outFeatures; o++) nb.set(b.subarray(o * cap, o * cap + n), o * n);
    out.set(k.b, hostTensor("f32", [l.outFeatures, n], nb));
    for (const key of [k.lower, k.upper]) {
      const t = f32(need("TriAdaptLoRA", tensors, key));
      const s = new Float32Array(n * n);
      for (let i = 0; i < n; i++) s.set(t.subarray(i * cap, i * cap + n), i * n);
      out.set(key, hostTensor("f32", [n, n], s));
    }
  }
  return out;
}

export const TRIADAPTLORA: Tuner<TriadaptloraConfig> = {
  peftType: "TRIADAPTLORA",
  parseConfig: parseTriadaptloraConfig,
  toJson: triadaptloraConfigJson,
  create,
  trainable: (key) => !key.endsWith(FIXED_SUFFIX),
  loss,
  controller: (info, c, run) => triadaptloraController(info, c, run),
  expectedTensors,
  wrap: (base, info, c, opts) => new LinearDeltaContext(base, triadaptloraLayers(info, c), opts.rowMask, (l, x) => delta(c, opts, l, x)),
  merge,
  tensorsToSave,
  supportsMixedBatch: true,
};
