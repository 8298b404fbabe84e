/**
 * Which layers a VeRA config adapts, the keys PEFT saves, the shared projections' sizes and the
 * host-side (float64) ΔW of PEFT's vera.Linear.get_delta_weight.
 */
import { type HostTensor, hostTensor } from "../../engine/ir/host.js";
import { kaimingUniformVera, TorchGenerator } from "../../util/torch-rng.js";
import { LORA_DEFAULT_TARGETS } from "../defaults.js";
import { selectTargets } from "../targets.js";
import type { ModelInfo } from "../tuner.js";
import type { VeraConfig } from "./config.js";

/**
 * The shared projections are model-level buffers (VeraModel.vera_A / vera_B, a BufferDict by
 * adapter name), saved as "base_model.vera_A" / "base_model.vera_B": outside "base_model.model.",
 * so these are their keys as written (format.ts writes keys starting with "base_model." as they are).
 */
export const VERA_A = "base_model.vera_A";
export const VERA_B = "base_model.vera_B";

/** PEFT's TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING (LoRA's, with phi → q_proj, v_proj). */
const VERA_DEFAULT_TARGETS: Readonly<Record<string, readonly string[]>> = { ...LORA_DEFAULT_TARGETS, phi: ["q_proj", "v_proj"] };

export interface VeraLayer {
  path: string;
  /** PEFT module name. */
  name: string;
  inFeatures: number;
  outFeatures: number;
}

export interface VeraLayout {
  layers: VeraLayer[];
  /** The largest in/out features over the adapted layers: vera_A is [r, maxIn], vera_B [maxOut, r]. */
  maxIn: number;
  maxOut: number;
}

export const lambdaB = (l: VeraLayer) => `${l.name}.vera_lambda_b`;
export const lambdaD = (l: VeraLayer) => `${l.name}.vera_lambda_d`;

export function veraLayout(info: ModelInfo, c: VeraConfig): VeraLayout {
  const byPeft = new Map(info.linearLayers.map((p) => [info.peftName(p), p]));
  const chosen = selectTargets(c, [...byPeft.keys()], {
    allLinear: info.allLinear.map((p) => info.peftName(p)),
    defaults: VERA_DEFAULT_TARGETS[info.modelType] ?? null,
    where: "VeRA config",
  });
  const layers = chosen.map((name) => {
    const path = byPeft.get(name) as string;
    const [d0, d1] = info.weight(`${path}.weight`).shape;
    // Conv1D layers store [in, out]; PEFT switches fan_in_fan_out to match the layer (with a warning).
    return { path, name, inFeatures: info.fanInFanOut ? d0 : d1, outFeatures: info.fanInFanOut ? d1 : d0 };
  });
  return {
    layers,
    maxIn: Math.max(...layers.map((l) => l.inFeatures)),
    maxOut: Math.max(...layers.map((l) => l.outFeatures)),
  };
}

/**
 * VeraModel._init_vera_A_vera_B: torch.Generator("cpu").manual_seed(projection_prng_key), then
 * Kaiming-uniform vera_A [r, maxIn] and vera_B [maxOut, r] from it, in that order. Bit-identical
 * to torch's (src/util/torch-rng.ts).
 */
export function veraProjections(c: VeraConfig, layout: VeraLayout): { a: HostTensor; b: HostTensor } {
  const g = new TorchGenerator(c.projectionPrngKey);
  const a = kaimingUniformVera(g, c.r, layout.maxIn);
  const b = kaimingUniformVera(g, layout.maxOut, c.r);
  return { a: hostTensor("f32", [c.r, layout.maxIn], a), b: hostTensor("f32", [layout.maxOut, c.r], b) };
}

/**
 * ΔW = (λ_b ⊙ B[:out, :]) · (λ_d ⊙ A[:, :in]) as a float64 [out, in] matrix (row-major): the
 * first in_features columns of A and the first out_features rows of B.
 */
export function veraDelta(l: VeraLayer, r: number, a: HostTensor, b: HostTensor, lb: HostTensor, ld: HostTensor): Float64Array {
  const ad = a.data as Float32Array;
  const bd = b.data as Float32Array;
  const lbd = lb.data as Float32Array;
  const ldd = ld.data as Float32Array;
  const maxIn = a.shape[1];
  const d = new Float64Array(l.outFeatures * l.inFeatures);
  for (let o = 0; o < l.outFeatures; o++) {
    for (let k = 0; k < r; k++) {
      const s = lbd[o] * bd[o * r + k] * ldd[k];
      if (s === 0) continue;
      for (let i = 0; i < l.inFeatures; i++) d[o * l.inFeatures + i] += s * ad[k * maxIn + i];
    }
  }
  return d;
}
