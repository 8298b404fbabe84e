/**
 * AdaLoRA (Zhang et al. 2023, "Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning"),
 * HF PEFT's peft_type ADALORA in PEFT 0.20's format (tuners/adalora/{config,layer,model}.py):
 * per targeted linear layer an SVD-shaped update P·Λ·Q,
 *   y += (dropout(x) · (A ⊙ E)ᵀ · Bᵀ) · lora_alpha / (init_r + 1e-5),
 * with A [r, in] (Q), E [r, 1] (Λ), B [out, r] (P), trained with PEFT's orthogonal regulariser
 * (`loss`) and a rank allocator between steps (`controller`, controller.ts) that zeroes the
 * singular values of the least important triplets along a cubic budget schedule.
 *
 * The divisor is init_r even after pruning: PEFT never saves `ranknum`, and when it loads a
 * folder with a rank_pattern (resize_modules_by_rank_pattern) it keeps the init_r one.
 *
 * In memory every layer keeps init_r triplets (one compiled shape for the whole run); a folder
 * holds PEFT's pruned tensors (resize_state_dict_by_rank_pattern), which loading puts back among
 * init_r rows with zeros for the dropped triplets, computing the same outputs.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import * as F from "../../engine/trace/composites.js";
import { constant, type Tensor } from "../../engine/trace/tensor.js";
import { fillNormal, type Rng } from "../../util/rng.js";
import { PeftConfigError, type RawPeftConfig } from "../config.js";
import { layerSeed } from "../layer-seed.js";
import { addInto, type LoraLayer, logicalWeight, storedWeight } from "../lora/layers.js";
import { f32, lowRankApply, lowRankDelta, need } from "../svfit/family.js";
import { type CreatedAdapter, LinearDeltaContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { type AdaLoraConfig, adaLoraConfigJson, parseAdaLoraConfig, rankPatternModule } from "./config.js";
import { AdaLoraController } from "./controller.js";
import { type AdaLoraLayer, adaLoraKeys, adaLoraLayers, expandRank, savedRank, selectRank } from "./layers.js";

/** scaling / (ranknum + 1e-5) with ranknum = init_r (see above). */
export function adaLoraScale(c: AdaLoraConfig): number {
  return c.loraAlpha / (c.initR + 1e-5);
}

function create(info: ModelInfo, c: AdaLoraConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  const r = c.initR;
  // reset_lora_parameters: E = 0, A and B ~ N(0, 0.02); without init_lora_weights, torch.randn's N(0, 1).
  const init = c.initLoraWeights !== false;
  const std = init ? 0.02 : 1;
  for (const l of adaLoraLayers(info, c)) {
    const k = adaLoraKeys(l.key);
    tensors.set(k.a, hostTensor("f32", [r, l.inFeatures], fillNormal(r * l.inFeatures, std, rng)));
    tensors.set(k.e, hostTensor("f32", [r, 1], init ? new Float32Array(r) : fillNormal(r, 1, rng)));
    tensors.set(k.b, hostTensor("f32", [l.outFeatures, r], fillNormal(l.outFeatures * r, std, rng)));
  }
  return { tensors };
}

/** What a folder holds: PEFT's tensors resized by the rank pattern. */
function expectedTensors(info: ModelInfo, c: AdaLoraConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of adaLoraLayers(info, c)) {
    const k = adaLoraKeys(l.key);
    const r = savedRank(l, c.initR);
    out.set(k.a, [r, l.inFeatures]);
    out.set(k.e, [r, 1]);
    out.set(k.b, [l.outFeatures, r]);
  }
  return out;
}

/** resize_state_dict_by_rank_pattern: only the pattern's triplets are written. */
function tensorsToSave(info: ModelInfo, c: AdaLoraConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map(tensors);
  for (const l of adaLoraLayers(info, c)) {
    if (!l.keep) continue;
    const k = adaLoraKeys(l.key);
    out.set(k.a, selectRank(need("ADALORA", tensors, k.a), l.keep, 0));
    out.set(k.e, selectRank(need("ADALORA", tensors, k.e), l.keep, 0));
    out.set(k.b, selectRank(need("ADALORA", tensors, k.b), l.keep, 1));
  }
  return out;
}

/** A pruned folder's triplets back at their init_r positions, zeros (E = 0: no effect) elsewhere. */
function tensorsFromSaved(info: ModelInfo, c: AdaLoraConfig, saved: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map(saved);
  for (const l of adaLoraLayers(info, c)) {
    if (!l.keep) continue;
    const k = adaLoraKeys(l.key);
    out.set(k.a, expandRank(need("ADALORA", saved, k.a), l.keep, 0));
    out.set(k.e, expandRank(need("ADALORA", saved, k.e), l.keep, 0));
    out.set(k.b, expandRank(need("ADALORA", saved, k.b), l.keep, 1));
  }
  return out;
}

/**
 * One line for a folder whose ranks do not fit its config: a layer saved with fewer than init_r
 * triplets needs its rank_pattern entry (PEFT writes one for every layer), and A, E, B must agree.
 */
function checkFolder(raw: RawPeftConfig, shapes: ReadonlyMap<string, readonly number[]>, where: string): undefined {
  const initR = typeof raw.init_r === "number" ? raw.init_r : 12;
  const pattern = new Map<string, number>();
  if (raw.rank_pattern && typeof raw.rank_pattern === "object")
    for (const [k, v] of Object.entries(raw.rank_pattern as Record<string, unknown>)) {
      const m = rankPatternModule(k);
      if (m && Array.isArray(v)) pattern.set(m, v.filter((b) => b === true).length);
    }
  const modules = new Set<string>();
  for (const key of shapes.keys()) {
    const m = /^(.+)\.lora_[AEB]$/.exec(key);
    if (m) modules.add(m[1]);
  }
  for (const m of modules) {
    const k = adaLoraKeys(m);
    const want = pattern.get(m) ?? initR;
    const why = pattern.has(m) ? `its rank_pattern entry keeps ${want}` : `init_r is ${initR} and rank_pattern has no entry "${m}.lora_E"`;
    for (const [key, dims, axis] of [
      [k.a, 2, 0],
      [k.e, 2, 0],
      [k.b, 2, 1],
    ] as const) {
      const s = shapes.get(key);
      if (!s) continue;
      if (s.length !== dims || (key === k.e && s[1] !== 1))
        throw new PeftConfigError(
          `${where}: tensor base_model.model.${key} has shape [${s.join(", ")}], expected ${key === k.e ? "[r, 1]" : "2-D"}`,
        );
      if (s[axis] !== want)
        throw new PeftConfigError(`${where}: tensor base_model.model.${key} [${s.join(", ")}] has rank ${s[axis]}, but ${why}`);
    }
  }
  return undefined;
}

/** The change AdaLoRA adds to a targeted layer's output (see LinearDeltaContext). */
function adaLoraDelta(c: AdaLoraConfig, opts: WrapOptions, l: AdaLoraLayer, x: Tensor): Tensor {
  const k = adaLoraKeys(l.key);
  const seed = opts.training && c.loraDropout > 0 ? opts.seed : null;
  const xin = seed ? F.dropout(x, c.loraDropout, layerSeed(seed, l.path)) : x;
  // x·(A ⊙ E)ᵀ·Bᵀ = x·Aᵀ·diag(E)·Bᵀ; the scale goes on E (init_r values).
  return lowRankApply(xin, opts.tensor(k.a), opts.tensor(k.e).squeeze(1).mul(adaLoraScale(c)), opts.tensor(k.b));
}

/** ‖M − I‖_F of a square r×r tensor (torch.norm(p="fro")). */
function distanceToIdentity(m: Tensor): Tensor {
  const r = m.shape[0] as number;
  const eye = new Float32Array(r * r);
  for (let i = 0; i < r; i++) eye[i * r + i] = 1;
  const id = constant(hostTensor(m.dtype, [r, r], m.dtype === "f64" ? Float64Array.from(eye) : eye));
  return m.sub(id).square().sum().sqrt();
}

/**
 * AdaLoraModel.forward's regulariser: orth_reg_weight × the mean over every A and B matrix of the
 * adapter of ‖A·Aᵀ − I‖_F and ‖Bᵀ·B − I‖_F.
 */
function loss(info: ModelInfo, c: AdaLoraConfig, opts: WrapOptions): Tensor | null {
  if (c.orthRegWeight === 0) return null;
  const layers = adaLoraLayers(info, c);
  if (!layers.length) return null;
  let sum: Tensor | null = null;
  for (const l of layers) {
    const k = adaLoraKeys(l.key);
    const a = opts.tensor(k.a);
    const b = opts.tensor(k.b);
    const term = distanceToIdentity(a.matmul(a.transpose())).add(distanceToIdentity(b.transpose().matmul(b)));
    sum = sum ? sum.add(term) : term;
  }
  return (sum as Tensor).mul(c.orthRegWeight / (2 * layers.length));
}

/** get_delta_weight: W + transpose(B·(A ⊙ E), fan_in_fan_out)·lora_alpha/(init_r + 1e-5). */
function merge(info: ModelInfo, c: AdaLoraConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  const s = adaLoraScale(c);
  for (const l of adaLoraLayers(info, c)) {
    const k = adaLoraKeys(l.key);
    const g = (key: string) => need("ADALORA", tensors, key);
    const delta = lowRankDelta(
      g(k.b),
      Float64Array.from(f32(g(k.e)), (e) => e * s),
      g(k.a),
    );
    const layer: LoraLayer = { ...l, kind: "linear", r: c.initR, scaling: s };
    out.set(`${l.path}.weight`, storedWeight(info, layer, addInto(logicalWeight(info, layer), delta)));
  }
  return out;
}

export const ADALORA: Tuner<AdaLoraConfig> = {
  peftType: "ADALORA",
  parseConfig: parseAdaLoraConfig,
  toJson: adaLoraConfigJson,
  create,
  loss,
  controller: (info, c, run) => new AdaLoraController(info, c, run),
  expectedTensors,
  tensorsToSave,
  tensorsFromSaved,
  checkFolder,
  wrap: (base, info, c, opts) => new LinearDeltaContext(base, adaLoraLayers(info, c), opts.rowMask, (l, x) => adaLoraDelta(c, opts, l, x)),
  merge,
  supportsMixedBatch: true,
};

export type { AdaLoraConfig } from "./config.js";
export { AdaLoraController } from "./controller.js";
