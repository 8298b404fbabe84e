/**
 * LoCA (Du et al., ICLR 2025, "LoCA: Location-Aware Cosine Adaptation for Parameter-Efficient
 * Fine-Tuning"; catalog §1.8, seed #29), after the authors' code (TL-UESTC/LoCA,
 * peft/src/peft/tuners/loca/layer.py and dct_utils.py): each targeted linear layer gets
 *   ΔW = α·iDCT2(S),  S[u_i, v_i] = a_i,  (u_i, v_i) = round(clip(ℓ_i, 0, 0.999)·(d − 1)),
 *   y = W·x + ΔW·x,
 * with B coefficients a (zero init) at B continuous locations ℓ ∈ [0, 1)² (uniform init). The
 * coefficients get their exact gradient, the locations the authors' finite-difference estimate
 * on the spectrum (graph.ts); a controller alternates which of the two trains (controller.ts).
 *
 * Stored (peft_type "LOCA"), per module <m>:
 *   <m>.loca_coefficients [B]    f32, a
 *   <m>.loca_locations    [2, B] f32, ℓ (row 0: output axis, row 1: input axis), continuous
 * The positions are derived from ℓ exactly as the forward does, so a loaded adapter computes
 * the same ΔW.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import * as F from "../../engine/trace/composites.js";
import type { Tensor } from "../../engine/trace/tensor.js";
import { fillNormal, fillUniform, type Rng } from "../../util/rng.js";
import { PeftConfigError } from "../config.js";
import { layerSeed } from "../layer-seed.js";
import { addInto, logicalWeight, storedWeight } from "../lora/layers.js";
import { type FamilyLayer, familyLayers, need } from "../svfit/family.js";
import { type CreatedAdapter, LinearDeltaContext, type ModelInfo, type Tuner, type WrapOptions } from "../tuner.js";
import { type LocaConfig, locaConfigJson, parseLocaConfig } from "./config.js";
import { locaController } from "./controller.js";
import { locaDelta } from "./dct.js";
import { locaDeltaWeight } from "./graph.js";

export const COEFFICIENTS_SUFFIX = ".loca_coefficients";
export const LOCATIONS_SUFFIX = ".loca_locations";

export interface LocaKeys {
  coefficients: string;
  locations: string;
}

export const locaKeys = (key: string): LocaKeys => ({
  coefficients: `${key}${COEFFICIENTS_SUFFIX}`,
  locations: `${key}${LOCATIONS_SUFFIX}`,
});

/** The targeted layers; B must fit each (n_frequency ≤ out·in). */
export function locaLayers(info: ModelInfo, c: LocaConfig): FamilyLayer[] {
  const layers = familyLayers(info, c, "LoCA");
  for (const l of layers)
    if (c.nFrequency > l.outFeatures * l.inFeatures)
      throw new PeftConfigError(
        `LoCA: n_frequency = ${c.nFrequency} exceeds the ${l.outFeatures * l.inFeatures} entries of "${l.key}" [${l.outFeatures}x${l.inFeatures}]`,
      );
  return layers;
}

/** The authors' init: locations uniform in [0, 1), coefficients zero. */
function create(info: ModelInfo, c: LocaConfig, rng: Rng): CreatedAdapter {
  const tensors = new Map<string, HostTensor>();
  const b = c.nFrequency;
  for (const l of locaLayers(info, c)) {
    const k = locaKeys(l.key);
    tensors.set(k.locations, hostTensor("f32", [2, b], fillUniform(2 * b, 0, 1, rng)));
    tensors.set(k.coefficients, hostTensor("f32", [b], c.initWeights ? new Float32Array(b) : fillNormal(b, 1, rng)));
  }
  return { tensors };
}

function expectedTensors(info: ModelInfo, c: LocaConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const l of locaLayers(info, c)) {
    const k = locaKeys(l.key);
    out.set(k.coefficients, [c.nFrequency]);
    out.set(k.locations, [2, c.nFrequency]);
  }
  return out;
}

/** α·ΔWᵀ [in, out] in f32 from the host float64 transform (inference input). */
function preparedDeltaT(l: FamilyLayer, c: LocaConfig, coef: HostTensor, loc: HostTensor): HostTensor | null {
  if (coef.dtype !== "f32" || loc.dtype !== "f32") return null;
  const d = locaDelta(coef, loc, l.outFeatures, l.inFeatures, c.scale);
  const t = new Float32Array(l.inFeatures * l.outFeatures);
  for (let o = 0; o < l.outFeatures; o++) for (let i = 0; i < l.inFeatures; i++) t[i * l.outFeatures + o] = d.data[o * l.inFeatures + i];
  return hostTensor("f32", [l.inFeatures, l.outFeatures], t);
}

function delta(c: LocaConfig, opts: WrapOptions, l: FamilyLayer, x: Tensor): Tensor {
  const k = locaKeys(l.key);
  const seed = opts.training && c.locaDropout > 0 ? opts.seed : null;
  const xin = seed ? F.dropout(x, c.locaDropout, layerSeed(seed, l.path)) : x;
  const prepared = opts.prepared?.(`loca:${l.key}:dWT*${c.scale}`, [k.coefficients, k.locations], (a, loc) => preparedDeltaT(l, c, a, loc));
  if (prepared) return xin.matmul(prepared.cast(xin.dtype));
  const dw = locaDeltaWeight(opts.tensor(k.coefficients), opts.tensor(k.locations), l.outFeatures, l.inFeatures).mul(c.scale);
  return xin.matmul(dw.transpose().cast(xin.dtype));
}

function merge(info: ModelInfo, c: LocaConfig, tensors: ReadonlyMap<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const l of locaLayers(info, c)) {
    const k = locaKeys(l.key);
    const d = locaDelta(need("LoCA", tensors, k.coefficients), need("LoCA", tensors, k.locations), l.outFeatures, l.inFeatures, c.scale);
    out.set(`${l.path}.weight`, storedWeight(info, l, addInto(logicalWeight(info, l), d)));
  }
  return out;
}

export const LOCA: Tuner<LocaConfig> = {
  peftType: "LOCA",
  parseConfig: parseLocaConfig,
  toJson: locaConfigJson,
  create,
  // learn_location_iter 0: the locations never train (fixed inputs, not counted as trained).
  trainable: (key, c) => !(key.endsWith(LOCATIONS_SUFFIX) && c.learnLocationIter === 0),
  controller: (info, c, run) => {
    const layers = locaLayers(info, c);
    return locaController(
      c,
      {
        coefficients: layers.map((l) => locaKeys(l.key).coefficients),
        locations: layers.map((l) => locaKeys(l.key).locations),
      },
      run,
    );
  },
  expectedTensors,
  wrap: (base, info, c, opts) => new LinearDeltaContext(base, locaLayers(info, c), opts.rowMask, (l, x) => delta(c, opts, l, x)),
  merge,
  supportsMixedBatch: true,
};
